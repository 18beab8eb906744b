"""The real ``tether`` CLI (a subprocess each time) on a PostgreSQL store.

A PostgreSQL URL is taken wherever a SQLite path is (``--store``, ``$TETHER_STORE``), from
any folder; a bad one (unreachable server, wrong database, bad schema name, no driver)
stops the command with one ``error:`` line naming the URL, never its password, and what to
do: no traceback. The audit, the report and the dashboard work over it as over SQLite.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests import pgkit
from tests.pgkit import SECRET, one_error, with_password
from tests.pgworkers import ROOT, cli, tether_cmd
from tether.store.urls import without_password

ALLOW = '[[rule]]\nid = "allow-all"\ndecide = "allow"\n'



def test_store_help_names_the_postgresql_url() -> None:
    res = cli("--help")
    assert res.returncode == 0, res.stderr
    text = " ".join(res.stdout.split())
    assert "postgresql://" in text and "schema=NAME" in text and "tether[postgres]" in text


@pytest.mark.workers
def test_a_run_made_in_one_folder_is_driven_from_another(pg_url: str, tmp_path: Path) -> None:
    here, there = tmp_path / "here", tmp_path / "there"
    here.mkdir()
    there.mkdir()
    policy = tmp_path / "allow.toml"
    policy.write_text(ALLOW)
    # A tether.toml in the folder a command runs in is not "beside" a PostgreSQL store: it
    # must not be applied (it would hold every irreversible call for approval... or not).
    (here / "tether.toml").write_text('[[rule]]\nid = "deny-all"\ndecide = "deny"\n')
    made = cli("--store", with_password(pg_url), "run", "tests.pg_agents:dwelling",
               "--goal", "steps=2", "--name", "far", "--detach", "--policy", str(policy),
               cwd=here)
    assert made.returncode == 0, made.stderr
    assert "deny-all" not in made.stdout + made.stderr
    rid = re.search(r"started run (\S+)", made.stdout)
    assert rid is not None, made.stdout
    env = {"TETHER_STORE": with_password(pg_url), "CRASH_SIDE": str(tmp_path / "side.log")}
    drove = cli("worker", "--until-idle", cwd=there, env=env)
    assert drove.returncode == 0, drove.stderr
    assert SECRET not in drove.stdout + drove.stderr
    assert without_password(with_password(pg_url)) in drove.stdout  # "worker ... on URL"
    shown = cli("show", rid.group(1), "--json", cwd=there, env=env)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["status"] == "done"
    listed = cli("--store", pg_url, "runs", cwd=here)
    assert "far" in listed.stdout
    # Neither folder got a SQLite store: the URL named the store, whatever the folder.
    assert not list(tmp_path.rglob("*.db"))


BAD = [
    pytest.param("postgresql://postgres:{pw}@127.0.0.1:1/test?schema=x",
                 ["postgresql://postgres@127.0.0.1:1/test?schema=x", "cannot reach the database",
                  "Connection refused", "check that the server runs"], id="unreachable"),
    pytest.param("postgresql://postgres:{pw}@127.0.0.1:5432/nosuchdb_pgops",
                 ["postgresql://postgres@127.0.0.1:5432/nosuchdb_pgops",
                  'database "nosuchdb_pgops" does not exist', "database name"], id="no-database"),
    pytest.param("postgresql://postgres@127.0.0.1:5432/test?password={pw}&schema=Bad-Name",
                 ["postgresql://postgres@127.0.0.1:5432/test?schema=Bad-Name",
                  "'Bad-Name' is not a plain identifier", "?schema=tether"], id="bad-schema"),
    pytest.param("postgres://postgres:{pw}@127.0.0.1:5432/test?schema=1abc",
                 ["postgres://postgres@127.0.0.1:5432/test?schema=1abc", "not a plain identifier"],
                 id="schema-starts-with-a-digit"),
    pytest.param("postgresql://postgres:{pw}@127.0.0.1:5432/test?sslmode=bogus",
                 ["postgresql://postgres@127.0.0.1:5432/test?sslmode=bogus", "sslmode"],
                 id="bad-libpq-option"),
    pytest.param("postgresql://nosuchrole_pgops:{pw}@127.0.0.1:5432/test",
                 ['role "nosuchrole_pgops" does not exist', "credentials"], id="no-role"),
]


@pytest.mark.parametrize(("url", "said"), BAD)
def test_a_bad_postgresql_url_is_one_line_naming_it(url: str, said: list[str],
                                                    tmp_path: Path) -> None:
    pgkit.require_server()
    url = url.format(pw=SECRET)
    for res in (cli("--store", url, "runs", cwd=tmp_path),
                cli("worker", "--until-idle", cwd=tmp_path, env={"TETHER_STORE": url})):
        line = one_error(res)
        for part in said:
            assert part in line, line
    assert not list(tmp_path.iterdir())  # nothing made in the folder


def test_a_read_on_a_schema_with_no_store_says_so_and_creates_nothing(pg_url: str,
                                                                      tmp_path: Path) -> None:
    line = one_error(cli("--store", with_password(pg_url), "runs", cwd=tmp_path))
    schema = pgkit.schema_of(pg_url)
    assert f"no tether store in schema {schema}" in line and "?schema=" in line
    assert not pgkit.schema_exists(schema)


def test_an_empty_store_value_names_every_form(tmp_path: Path) -> None:
    line = one_error(cli("--store", "", "runs", cwd=tmp_path))
    assert "--store is empty" in line and "postgresql://" in line


_NO_DRIVER = """
import importlib.abc, sys
class NoDriver(importlib.abc.MetaPathFinder):
    # psycopg as a machine without the postgres extra has it: not installed
    def find_spec(self, name, path, target=None):
        if name.partition(".")[0] == "psycopg":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, NoDriver())
from tether.cli.app import main
main()
"""


def test_without_the_postgres_extra_the_url_says_what_to_install(tmp_path: Path) -> None:
    url = f"postgresql://ops:{SECRET}@db.example:5432/tether?schema=prod"
    res = subprocess.run([sys.executable, "-c", _NO_DRIVER, "--store", url, "runs"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120, check=False,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    line = one_error(res)
    assert "postgresql://ops@db.example:5432/tether?schema=prod" in line
    assert "pip install 'tether[postgres]'" in line


# -- the audit, the report and the dashboard over PostgreSQL --------------------------------

@pytest.fixture
def driven(pg_url: str, tmp_path: Path) -> str:
    """A PostgreSQL store with two runs driven to the end by a real worker."""
    policy = tmp_path / "allow.toml"
    policy.write_text(ALLOW)
    env = {"CRASH_SIDE": str(tmp_path / "side.log")}
    for i in range(2):
        res = cli("--store", pg_url, "run", "tests.pg_agents:dwelling", "--goal", "steps=3",
                  "--name", f"night-{i}", "--detach", "--policy", str(policy), cwd=tmp_path)
        assert res.returncode == 0, res.stderr
    res = cli("--store", pg_url, "worker", "--until-idle", "--quiet", cwd=tmp_path, env=env)
    assert res.returncode == 0, res.stderr
    return pg_url


@pytest.mark.workers
def test_audit_verify_seal_and_verify_with_the_key(driven: str, tmp_path: Path) -> None:
    url = with_password(driven)
    res = cli("--store", url, "audit", "verify", "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert json.loads(res.stdout)["ok"] is True
    assert cli("audit", "keygen", str(tmp_path / "k"), cwd=tmp_path).returncode == 0
    sealed = cli("--store", url, "audit", "seal", "--key", str(tmp_path / "k.key"), "--json",
                 cwd=tmp_path)
    assert sealed.returncode == 0, sealed.stderr
    assert json.loads(sealed.stdout)["size"] > 0
    checked = cli("--store", url, "audit", "verify", "--key", str(tmp_path / "k.pub"),
                  cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert SECRET not in sealed.stdout + checked.stdout + res.stdout


@pytest.mark.workers
def test_report_and_backup(driven: str, tmp_path: Path) -> None:
    url = with_password(driven)
    rep = cli("--store", url, "report", "--format", "md", cwd=tmp_path)
    assert rep.returncode == 0, rep.stderr
    assert "night-0" in rep.stdout and "night-1" in rep.stdout
    out = tmp_path / "store.dump"
    res = cli("--store", url, "store", "backup", str(out), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert SECRET not in res.stdout + res.stderr
    assert out.stat().st_size > 0
    # Restored into a new database as docs/postgres.md says, it is the same store.
    db = f"tt_restored_{pgkit.new_schema_name()[-8:]}"
    with pgkit.connect(autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    try:
        restored = pgkit.server_url().rsplit("/", 1)[0] + f"/{db}"
        subprocess.run(["pg_restore", "--no-owner", "--dbname", restored, str(out)],
                       capture_output=True, text=True, timeout=120, check=True)
        there = f"{restored}?schema={pgkit.schema_of(driven)}"
        checked = cli("--store", there, "audit", "verify", cwd=tmp_path)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        listed = cli("--store", there, "runs", cwd=tmp_path)
        assert "night-0" in listed.stdout and "night-1" in listed.stdout
    finally:
        with pgkit.connect(autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.workers
def test_the_dashboard_serves_the_overview_of_a_postgresql_store(driven: str,
                                                                 tmp_path: Path) -> None:
    port = _free_port()
    proc = subprocess.Popen([*tether_cmd(), "--store", with_password(driven), "ui", "serve",
                             "--port", str(port)], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env={"PATH": "/usr/bin:/bin",
                                                           "PYTHONPATH": str(ROOT)})
    try:
        page = ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
                    page = r.read().decode()
                break
            except OSError:
                if proc.poll() is not None:
                    break
                time.sleep(0.2)
        assert "night-0" in page and "night-1" in page, page[:500] or "no page"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/overview", timeout=10) as r:
            overview = r.read().decode()
        json.loads(overview)
        assert "night-0" in overview and "night-1" in overview
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0].decode(errors="replace")
    assert SECRET not in out
    assert "Traceback" not in out, out


@pytest.mark.workers
def test_libpq_options_with_spaces_reach_the_server_as_written(pg_url: str,
                                                                tmp_path: Path) -> None:
    """libpq takes ``options=-c name=value`` (a space, %20 in a URL) to set a server
    setting for the session, e.g. ``idle_in_transaction_session_timeout`` for workers
    (docs/postgres.md). The URL's query was once re-encoded with ``urlencode``'s default
    quote_plus, which turns the space into ``+``, which libpq does not decode: the server
    got ``+statement_timeout`` and refused the connection (store/urls.py now keeps it)."""
    url = f"{pg_url}&options=-c%20statement_timeout%3D60s&application_name=night%20shift"
    res = cli("--store", url, "run", "tests.pg_agents:dwelling", "--goal", "steps=1",
              "--detach", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
