"""`tether ui token` and `tether settings allow-as` as a user meets them: the token once as the
last line, listings without secrets, revocation, the audit naming a forged row, and chosen
names refused until the store allows them."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tether.cli.app import app
from tether.core.identity import hash_secret, well_formed
from tether.identity import authenticate, os_user
from tether.store.sqlite import SQLiteStore

runner = CliRunner()


def cli(db: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    res = runner.invoke(app, ["--store", str(db), *args], env=env)
    return res.exit_code, res.output


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "t.db"


def test_create_prints_the_token_once_as_its_last_line(db: Path) -> None:
    exe = Path(sys.executable).with_name("tether")
    done = subprocess.run([str(exe), "--store", str(db), "ui", "token", "create", "--name", "ada",
                           "--role", "operator"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    secret = lines[-1]
    assert well_formed(secret) and done.stdout.count(secret) == 1, done.stdout
    assert "created token ada (operator)" in lines[0] and f"human:{os_user()}" in lines[0]
    store = SQLiteStore(db)
    p = authenticate(store, secret)
    assert p is not None and (p.name, p.role.label) == ("ada", "operator")
    # A listing never shows the secret nor its hash.
    for args in (["ui", "token", "list"], ["ui", "token", "list", "--json"]):
        code, out = cli(db, *args)
        assert (code == 0 and "ada" in out and "operator" in out and "valid" in out) or \
            '"revoked":null' in out, out
        assert secret not in out and secret[4:] not in out and hash_secret(secret) not in out
    (row,) = [json.loads(line) for line in cli(db, "ui", "token", "list", "--json")[1]
              .splitlines()]
    assert set(row) == {"id", "name", "role", "created", "created_by", "revoked", "revoked_by"}
    assert cli(db, "ui", "token", "create", "--name", "bo", "--role", "viewer")[0] == 0
    code, out = cli(db, "ui", "token", "revoke", "ada")
    assert code == 0 and "revoked token ada" in out and "no valid token" not in out, out
    assert authenticate(store, secret) is None
    code, out = cli(db, "ui", "token", "revoke", "bo")  # the last one: the door it opens
    assert code == 0 and "no valid token is left" in " ".join(out.split()), out
    code, out = cli(db, "ui", "token", "list")
    assert code == 0 and "revoked " in out and f"by human:{os_user()}" in out, out
    code, out = cli(db, "ui", "token", "revoke", "ada")
    assert code == 2 and out.count("\n") == 1 and "no valid token named 'ada'" in out, out


@pytest.mark.parametrize(("args", "said"), [
    (["--name", "ada", "--role", "root"], "role 'root': use one of viewer, operator, admin"),
    (["--name", "a b", "--role", "viewer"], "token name 'a b'"),
    (["--role", "viewer"], "missing option '--name'"),
])
def test_bad_create_input_is_one_error_line_and_writes_nothing(db: Path, args: list[str],
                                                               said: str) -> None:
    SQLiteStore(db).close()
    code, out = cli(db, "ui", "token", "create", *args)
    assert code == 2 and said in out and out.strip().count("\n") == 0, out
    assert SQLiteStore(db).store_events() == []


def test_audit_verify_names_a_token_row_changed_outside_the_chain(db: Path) -> None:
    code, out = cli(db, "ui", "token", "create", "--name", "ada", "--role", "viewer")
    assert code == 0, out
    assert cli(db, "audit", "verify")[0] == 0
    with sqlite3.connect(db) as c:
        c.execute("UPDATE tokens SET role = 'admin' WHERE name = 'ada'")
    code, out = cli(db, "audit", "verify")
    text = " ".join(out.split())
    assert code != 0 and "token 'ada'" in text and "role: stored admin" in text, out
    assert "Traceback" not in out


def test_chosen_names_are_refused_until_the_store_allows_them(db: Path) -> None:
    code, out = cli(db, "ui", "token", "create", "--name", "ada", "--role", "admin")
    assert code == 0
    code, out = cli(db, "ui", "token", "revoke", "ada", env={"TETHER_USER": "mallory"})
    assert code == 2 and out.count("\n") == 1, out
    assert "'mallory' (TETHER_USER) is refused" in out and "tether settings allow-as on" in out
    code, out = cli(db, "settings", "allow-as")
    assert code == 0 and "allow-as: off (never set: the default)" in out, out
    code, out = cli(db, "settings", "allow-as", "on", env={"TETHER_USER": "mallory"})
    assert code == 0 and f"set by human:{os_user()}" in out, out  # never by the claimed name
    code, out = cli(db, "ui", "token", "revoke", "ada", env={"TETHER_USER": "mallory"})
    assert code == 0, out
    assert SQLiteStore(db).tokens()[0].revoked_by == "human:mallory"
    code, out = cli(db, "settings", "allow-as", "maybe")
    assert code == 2 and "say on or off" in out
    code, out = cli(db, "settings", "allow-as", "OFF")
    assert code == 0 and "allow-as: off (set by" in out
    kinds = [(e.kind, e.payload) for e in SQLiteStore(db).store_events()]
    assert kinds[1:] == [("store.allow_as", {"allow": True}), ("token.revoked", kinds[2][1]),
                         ("store.allow_as", {"allow": False})]


@pytest.mark.parametrize("command", [
    ["run", "tests.sample_agents:ticker", "--goal", "tick", "--detach"],
    ["policy", "apply", "POLICY"],
    ["worker", "--until-idle", "--policy", "POLICY", "--apply"],
])
def test_a_refused_name_creates_no_store(db: Path, tmp_path: Path, command: list[str]) -> None:
    pol = tmp_path / "p.toml"
    pol.write_text('[[rule]]\nid = "all"\ntool = "*"\ndecide = "allow"\n')
    args = [str(pol) if a == "POLICY" else a for a in command]
    code, out = cli(db, *args, "--as", "mallory")
    assert code == 2 and "'mallory' (--as) is refused" in out, out
    assert not db.exists()
    code, out = cli(db, *args, env={"TETHER_USER": "mallory"})
    assert code == 2 and "'mallory' (TETHER_USER) is refused" in out, out
    assert not db.exists()
    # The same command as the OS user goes ahead; on that store, the name is refused again
    # and nothing more is written.
    code, out = cli(db, *args)
    assert code == 0, out
    before = [e.n for e in SQLiteStore(db).store_events()], len(SQLiteStore(db).list_runs())
    code, out = cli(db, *args, "--as", "mallory")
    assert code == 2 and "is refused" in out, out
    assert ([e.n for e in SQLiteStore(db).store_events()],
            len(SQLiteStore(db).list_runs())) == before


def test_a_claimed_name_is_recorded_where_the_store_allows_it(db: Path) -> None:
    assert cli(db, "settings", "allow-as", "on")[0] == 0
    code, out = cli(db, "run", "tests.sample_agents:ticker", "--goal", "tick", "--detach",
                    "--as", "ada")
    assert code == 0, out
    (row,) = SQLiteStore(db).list_runs()
    (started,) = [e for e in SQLiteStore(db).events(row.id) if e.kind == "run.started"]
    assert started.actor == "human:ada"
    # Allowed or not, a claimed name follows a token name's rules (found by review: --as
    # 'ada evil' was journaled as human:ada evil, and --as '' fell back to the OS user).
    (run,) = [r.id for r in SQLiteStore(db).list_runs()]
    for bad in ("ada evil", "human:ada", "-x", "a" * 65):
        code, out = cli(db, "pause", run, "--as", bad)
        assert code == 2 and "cannot be recorded as a name" in out, (bad, out)
    code, out = cli(db, "pause", run, "--as", "")
    assert code == 2 and "--as needs a name" in out
    assert not [e for e in SQLiteStore(db).events(run) if e.kind in ("command", "run.paused")]


POLICY_WITH_GROUPS = """
[groups]
oncall = ["ada", "bob"]
leads = ["cy"]

[[rule]]
id = "big-pay"
tool = "send"
decide = "approve"
approvers = ["group:oncall"]
"""


def test_policy_show_and_explain_list_the_groups(db: Path, tmp_path: Path) -> None:
    pol = tmp_path / "p.toml"
    pol.write_text(POLICY_WITH_GROUPS)
    assert cli(db, "policy", "apply", str(pol))[0] == 0
    code, out = cli(db, "policy", "show")
    assert code == 0, out
    assert "group:leads = cy" in out and "group:oncall = ada, bob" in out, out
    code, out = cli(db, "policy", "show", "--json")
    assert json.loads(out)["groups"] == {"oncall": ["ada", "bob"], "leads": ["cy"]}
    code, out = cli(db, "policy", "explain", "--agent", "a", "--tool", "send",
                    "--policy", str(pol))
    assert code == 0 and "group:oncall = ada, bob" in out and "approvers: ada, bob" in out, out
    code, out = cli(db, "policy", "explain", "--agent", "a", "--tool", "send", "--json")
    assert json.loads(out)["groups"]["oncall"] == ["ada", "bob"]
    # A policy without groups shows none.
    pol.write_text('[[rule]]\nid = "all"\ntool = "*"\ndecide = "allow"\n')
    assert cli(db, "policy", "apply", str(pol))[0] == 0
    code, out = cli(db, "policy", "show")
    assert code == 0 and "group:" not in out, out
