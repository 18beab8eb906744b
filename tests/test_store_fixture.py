"""Stores written by earlier releases keep working.

``fixtures/store-0.1.0.db`` was made with release 0.1.0 (commit 6eb8aeb) and
never rewritten: the demo's night, the paging approval granted and the night
run again, a cascade rollback of the router, a fork of triage at step 3, the
dispatcher quarantined, and one ``model.called`` payload of triage erased. Every
later change to events, hashes or schema must still open, migrate and verify
it; a test that fails here means a change broke users' existing stores.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tether.cli.app import app
from tether.store import open_store

FIXTURE = Path(__file__).parent / "fixtures" / "store-0.1.0.db"


@pytest.fixture
def old_store(tmp_path: Path) -> Path:
    db = tmp_path / "tether.db"
    shutil.copyfile(FIXTURE, db)
    return db


def _cli(db: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["--store", str(db), *args])
    return result.exit_code, result.output


def test_old_store_opens_migrates_and_verifies(old_store: Path) -> None:
    code, out = _cli(old_store, "audit", "verify")
    assert code == 0, out
    # 399 events of its runs, and the swarm budget it held, journaled by the migration.
    assert "7 runs, 400 events" in out
    # Opening it again after the migration is a no-op that still verifies.
    code, out = _cli(old_store, "audit", "verify")
    assert code == 0, out
    assert "7 runs, 400 events" in out


def test_old_store_reads(old_store: Path) -> None:
    code, out = _cli(old_store, "runs", "--json")
    assert code == 0, out
    runs = {r["name"]: r for r in map(json.loads, out.splitlines())}
    assert {"triage", "router", "dispatcher", "triage-fork"} <= set(runs)
    assert runs["dispatcher"]["status"] == "paused"
    code, out = _cli(old_store, "state", "triage", "--step", "3")
    assert code == 0, out
    assert json.loads(out)  # restored from the old checkpoints
    store = open_store(str(old_store), create=False)
    try:
        triage = next(r for r in store.list_runs() if r.name == "triage")
        erased = [e for e in store.events(triage.id) if e.payload is None]
        assert [e.kind for e in erased] == ["model.called"]
    finally:
        store.close()


def test_old_store_can_be_sealed_and_proven(old_store: Path, tmp_path: Path) -> None:
    """Migration 10 adds the signed checkpoints' table: a 0.1.0 store seals, verifies with
    the key, and proves an event whose payload was erased (its hash is what is proven)."""
    key = str(tmp_path / "k")
    assert CliRunner().invoke(app, ["audit", "keygen", key]).exit_code == 0
    code, out = _cli(old_store, "audit", "seal", "--key", key + ".key", "--json")
    assert code == 0, out
    # Every event: the 399 of its runs and the store chain's one (migration 7 journaled the
    # swarm rows the old store held).
    assert json.loads(out)["size"] == 400
    code, out = _cli(old_store, "audit", "verify", "--key", key + ".pub", "--json")
    assert code == 0 and json.loads(out)["sealed"] == 400, out
    store = open_store(str(old_store), create=False)
    try:
        triage = next(r for r in store.list_runs() if r.name == "triage")
        erased = next(e for e in store.events(triage.id) if e.payload is None)
    finally:
        store.close()
    bundle = tmp_path / "b.json"
    code, out = _cli(old_store, "audit", "prove", erased.id, "--out", str(bundle))
    assert code == 0, out
    assert json.loads(bundle.read_text())["event"]["payload"] is None
    code, out = _cli(old_store, "audit", "check-proof", str(bundle), "--key", key + ".pub")
    assert code == 0 and "ok" in out, out
