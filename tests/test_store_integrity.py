"""`tether audit verify` also asks SQLite whether the file is sound: a damaged index page
leaves every hash chain readable (verify walked them fine and said ok) while SQLite calls the
file malformed."""

from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path

from typer.testing import CliRunner

from tether.cli.app import app
from tether.store import open_store

runner = CliRunner()


def _store_with_runs(tmp_path: Path) -> Path:
    db = tmp_path / "t.db"
    for _ in range(3):
        res = runner.invoke(app, ["--store", str(db), "run", "tests.sample_agents:ticker",
                                  "--goal", "g", "--detach"])
        assert res.exit_code == 0, res.output
    return db


def _garble_index_page(db: Path, index: str) -> None:
    """Overwrite the body of ``index``'s root page (its 8-byte header kept) with noise."""
    c = sqlite3.connect(db)
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything in the main file first
    page_size = c.execute("PRAGMA page_size").fetchone()[0]
    (root,) = c.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (index,)).fetchone()
    c.close()
    noise = random.Random(1).randbytes(page_size - 8)
    with db.open("r+b") as f:
        f.seek(page_size * (root - 1) + 8)
        f.write(noise)


def test_an_intact_store_passes_sqlites_check(tmp_path: Path) -> None:
    store = open_store(str(_store_with_runs(tmp_path)), readonly=True)
    try:
        assert store.check_integrity() == []
    finally:
        store.close()


def test_verify_fails_on_a_store_sqlite_calls_malformed(tmp_path: Path) -> None:
    db = _store_with_runs(tmp_path)
    _garble_index_page(db, "runs_status")
    res = runner.invoke(app, ["--store", str(db), "audit", "verify"])
    assert res.exit_code == 1, res.output
    text = " ".join(res.output.split())  # the console wraps at 80 columns
    assert text.startswith("FAILED: the store file is damaged: SQLite's check says 'On tree page")
    assert "restore it from a backup" in text
    res = runner.invoke(app, ["--store", str(db), "audit", "verify", "--json"])
    assert res.exit_code == 1, res.output
    report = json.loads(res.stdout)
    assert not report["ok"] and "On tree page" in report["problems"][0]
