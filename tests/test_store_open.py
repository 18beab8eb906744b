"""Opening a store: wrong --store values named for what they are, and read-only opens.

The read-only tests run tether in a subprocess that cannot write the store: as a normal
user a ``chmod``-ed file is enough; as root (CI) the subprocess drops the capabilities that
let root write anything (``setpriv --bounding-set``), so the permission bits hold for it.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tether.cli.app import app
from tether.errors import StoreError
from tether.store import open_store

runner = CliRunner()


def tether(*args: str) -> tuple[int, str, str]:
    res = runner.invoke(app, list(args))
    return res.exit_code, res.stdout, res.stderr


def one_error(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


def test_a_file_where_the_folder_should_be_is_named_as_a_file(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("hi")
    code, out, err = tether("--store", str(readme / "x.db"), "runs")
    assert code == 2, out + err
    line = one_error(err)
    assert f"{readme} is a file, not a folder" in line and "does not exist" not in line


def test_a_url_scheme_other_than_sqlite_is_named(tmp_path: Path) -> None:
    code, out, err = tether("--store", "mysql://x", "runs")
    assert code == 2, out + err
    line = one_error(err)
    assert "URL scheme mysql:// is not supported" in line and "sqlite:///path" in line
    assert "folder" not in line


def test_an_empty_store_value_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = tether("--store", "", "run", "tests.sample_agents:ticker", "--goal", "g",
                            "--detach")
    assert code == 2, out + err
    assert "--store is empty" in one_error(err)
    assert not (tmp_path / "tether.db").exists()


def test_a_read_command_does_not_turn_an_empty_file_into_a_store(tmp_path: Path) -> None:
    db = tmp_path / "empty.db"
    db.touch()
    for cmd in (["runs"], ["audit", "verify"], ["show", "x"], ["approvals"]):
        code, out, err = tether("--store", str(db), *cmd)
        assert code == 2, out + err
        assert f"{db} is empty, not a tether store" in one_error(err)
        assert db.stat().st_size == 0
    # A command that creates stores still may.
    code, out, err = tether("--store", str(db), "run", "tests.sample_agents:ticker", "--goal",
                            "g", "--detach")
    assert code == 0, out + err


def test_a_dangling_symlink_store_is_named(tmp_path: Path) -> None:
    link = tmp_path / "t.db"
    link.symlink_to(tmp_path / "gone.db")
    code, out, err = tether("--store", str(link), "runs")
    assert code == 2, out + err
    line = one_error(err)
    assert "dangling link" in line and "gone.db" in line
    assert not (tmp_path / "gone.db").exists()


# -- read-only opens ------------------------------------------------------------------

@pytest.fixture(scope="module")
def made_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with one detached run, made once for the module by ``tether run``."""
    folder = tmp_path_factory.mktemp("made")
    db = folder / "a.db"
    # In a process of its own, which closes the store on exit: no -wal/-shm are left behind.
    res = subprocess.run([sys.executable, "-c", "from tether.cli.app import main; main()",
                          "--store", str(db), "run", "tests.sample_agents:ticker", "--goal", "g",
                          "--name", "tick", "--detach"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["a.db"]
    return db


@pytest.fixture
def make_store(made_store: Path) -> Callable[[Path], Path]:
    """``folder -> its a.db``: a fresh byte copy of :func:`made_store` for each test."""
    def make(folder: Path) -> Path:
        folder.mkdir()
        db = folder / "a.db"
        shutil.copyfile(made_store, db)
        return db
    return make


def _unprivileged(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """tether run by someone who may not write what the permission bits forbid."""
    return _drop_write_rights([sys.executable, "-c", "from tether.cli.app import main; main()",
                               "--store", str(db), *args])


def _drop_write_rights(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: cannot drop the right to write")
        cmd = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", *cmd]
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60, check=False)


# Each command in turn, each a fresh invocation of the app (its own store open and close), in
# one unprivileged process: starting Python and importing tether once instead of per command.
_EACH = """
import json, sys
from typer.testing import CliRunner
from tether.cli.app import app
out = []
for argv in json.loads(sys.argv[1]):
    res = CliRunner().invoke(app, argv)
    out.append([res.exit_code, res.stdout, res.stderr, repr(res.exception)])
print(json.dumps(out))
"""


def _unprivileged_each(db: Path, commands: list[list[str]]) -> list[list[Any]]:
    """``[exit code, stdout, stderr, exception]`` of each command, as :func:`_unprivileged`."""
    argvs = [["--store", str(db), *c] for c in commands]
    proc = _drop_write_rights([sys.executable, "-c", _EACH, json.dumps(argvs)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results: list[list[Any]] = json.loads(proc.stdout)
    return results


READS = [["runs"], ["show", "tick"], ["events", "tick"], ["state", "tick"], ["audit", "verify"],
         ["messages"], ["board"], ["approvals"], ["policy", "show"], ["budget", "tick"]]


@pytest.mark.parametrize("folder_writable", [False, True])
def test_read_commands_work_on_a_store_they_cannot_write_and_leave_nothing(
        tmp_path: Path, folder_writable: bool, make_store: Callable[[Path], Path]) -> None:
    db = make_store(tmp_path / "s")
    before = db.read_bytes()
    db.chmod(0o444)
    if not folder_writable:
        db.parent.chmod(0o555)
    try:
        probe = _unprivileged(db, "run", "tests.sample_agents:ticker", "--goal", "g", "--detach")
        if probe.returncode == 0:
            pytest.skip("this process can write a file chmod 444 (capabilities not dropped)")
        # A write it may not do is refused before SQLite makes files it could not remove.
        assert "is read-only for this user" in probe.stderr, probe.stderr
        for cmd, (code, out, err, exc) in zip(READS, _unprivileged_each(db, READS), strict=True):
            assert code == 0, (cmd, out, err, exc)
            assert out.strip(), (cmd, err)  # it did read and show something
        assert sorted(p.name for p in db.parent.iterdir()) == ["a.db"]  # no -wal/-shm left
        assert db.read_bytes() == before
    finally:
        db.parent.chmod(0o755)


def test_a_read_only_open_sees_what_a_live_writer_has_not_checkpointed(
        tmp_path: Path, make_store: Callable[[Path], Path]) -> None:
    db = make_store(tmp_path / "s")
    writer = sqlite3.connect(db)
    writer.execute("PRAGMA wal_autocheckpoint=0")  # keep the write in the -wal file
    writer.execute("UPDATE runs SET name = 'renamed'")
    writer.commit()
    assert Path(f"{db}-wal").stat().st_size > 0
    store = open_store(str(db), readonly=True)
    try:
        assert [r.name for r in store.list_runs()] == ["renamed"]
    finally:
        store.close()
        writer.close()


def test_a_read_only_open_never_migrates_a_store_it_cannot_write(tmp_path: Path) -> None:
    old = tmp_path / "old.db"
    shutil.copyfile(Path(__file__).parent / "fixtures" / "store-0.1.0.db", old)
    old.chmod(0o444)
    before = old.read_bytes()
    res = _unprivileged(old, "runs")
    if os.access(old, os.W_OK) and os.geteuid() != 0:
        pytest.skip("this user can write a file chmod 444")
    assert res.returncode == 2, res.stdout + res.stderr
    assert "needs a migration" in res.stderr and res.stderr.count("\n") == 1
    assert old.read_bytes() == before


def test_a_read_only_store_refuses_writes_clearly(
        tmp_path: Path, make_store: Callable[[Path], Path]) -> None:
    db = make_store(tmp_path / "s")
    store = open_store(str(db), readonly=True)
    try:
        with pytest.raises(StoreError, match="open read-only"):
            store.set_meta("x", "y")
    finally:
        store.close()


def test_a_store_it_cannot_write_is_read_with_what_a_live_writer_logged(
        tmp_path: Path, make_store: Callable[[Path], Path]) -> None:
    db = make_store(tmp_path / "s")
    writer = sqlite3.connect(db)  # opened before the chmod: it keeps writing
    try:
        writer.execute("PRAGMA wal_autocheckpoint=0")
        writer.execute("UPDATE runs SET name = 'renamed'")
        writer.commit()
        db.chmod(0o444)
        res = _unprivileged(db, "runs", "--json")
        assert res.returncode == 0, res.stderr
        assert '"renamed"' in res.stdout  # read through the -wal (mode=ro), not the file alone
    finally:
        writer.close()
        db.chmod(0o644)
