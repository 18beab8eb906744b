"""Storage faults: a full disk is a clear tether error, never a raw sqlite3 one, and never
loses or half-applies a write. The disk is real: a small tmpfs filled to the last block."""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fullfs import fill, free, small_fs
from tether.errors import StorageError, StorageFull, StoreError
from tether.runtime.storage_health import STORAGE_BACKOFF
from tether.store.records import Notification
from tether.store.sqlite import SQLiteStore


@pytest.fixture
def fs(tmp_path: Path) -> Iterator[Path]:
    with small_fs(tmp_path / "fs") as mnt:
        yield mnt


def test_a_full_disk_is_storage_full_naming_the_store_and_the_fix(fs: Path) -> None:
    store = SQLiteStore(fs / "tether.db")
    try:
        store.set_meta("before", "kept")
        filler = fill(fs)
        with pytest.raises(StorageFull) as err:
            store.set_meta("big", "x" * 200_000)
        msg = str(err.value)
        assert str(fs / "tether.db") in msg and "free space" in msg, msg
        assert isinstance(err.value.__cause__, sqlite3.Error)  # the original, not a ROLLBACK's
        assert "full" in str(err.value.__cause__)
        free(filler)
        store.set_meta("big", "x" * 200_000)  # the same store works again once space is back
        assert store.get_meta("before") == "kept"
        assert store.get_meta("big") == "x" * 200_000
    finally:
        store.close()


def _write_then(store: SQLiteStore, key: str, then: Callable[[sqlite3.Connection], None]) -> None:
    """A write transaction that inserts ``key`` and then does ``then``."""
    with store._tx() as c:
        c.execute("INSERT INTO meta VALUES(?, 'v')", ("x." + key,))
        then(c)


def _ended_by_sqlite(c: sqlite3.Connection) -> None:
    # SQLite ends a transaction on its own after some errors (a full disk, an I/O error);
    # a bare ROLLBACK then fails with "no transaction is active" and hides the cause.
    c.execute("ROLLBACK")
    raise ValueError("the cause")


def test_rollback_never_masks_the_error_that_ended_the_transaction(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "tether.db")
    try:
        with pytest.raises(ValueError, match="the cause"):
            _write_then(store, "k", _ended_by_sqlite)
        assert store.get_meta("k") is None
        store.set_meta("k", "after")  # the connection is usable again
        assert store.get_meta("k") == "after"
    finally:
        store.close()


def test_an_error_inside_a_transaction_is_translated_and_rolled_back(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "tether.db")
    try:
        with pytest.raises(StoreError, match=str(tmp_path / "tether.db")) as err:
            _write_then(store, "k", lambda c: c.execute("INSERT INTO no_such_table VALUES(1)"))
        assert isinstance(err.value.__cause__, sqlite3.OperationalError)
        assert store.get_meta("k") is None
    finally:
        store.close()


def _raise_key_error(c: sqlite3.Connection) -> None:
    raise KeyError("inner")


def _inner_fails(store: SQLiteStore) -> Callable[[sqlite3.Connection], None]:
    def then(c: sqlite3.Connection) -> None:
        with pytest.raises(KeyError):
            _write_then(store, "inner", _raise_key_error)
    return then


def test_nested_transactions_use_savepoints(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "tether.db")
    try:
        _write_then(store, "outer", _inner_fails(store))
        assert store.get_meta("outer") == "v"
        assert store.get_meta("inner") is None
    finally:
        store.close()


def _noop(ctx: object, state: dict[str, object]) -> None:
    return None


def test_a_commit_on_a_full_disk_applies_nothing_and_the_chains_still_verify(fs: Path) -> None:
    from tether import StepAgent, start_run, verify_store
    store = SQLiteStore(fs / "tether.db")
    agent = StepAgent(_noop, name="noop")
    try:
        first = start_run(store, agent, agent_ref="x:noop", goal="small", name="first")
        filler = fill(fs)
        with pytest.raises(StorageFull):
            start_run(store, agent, agent_ref="x:noop", goal="big", name="second",
                      state={"blob": "x" * 300_000})
        assert [r.id for r in store.list_runs()] == [first]
        assert verify_store(store).ok
        free(filler)
        start_run(store, agent, agent_ref="x:noop", goal="big", name="second",
                  state={"blob": "x" * 300_000})
        assert sorted(r.name for r in store.list_runs()) == ["first", "second"]
        assert verify_store(store).ok
    finally:
        store.close()


# -- the worker on a full disk ------------------------------------------------------
ROOT = Path(__file__).resolve().parent.parent
TETHER = Path(sys.executable).with_name("tether")


def tether_cli(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # The timeout only keeps a regression (a worker that never gives up) from hanging CI.
    return subprocess.run([str(TETHER), "--store", str(db), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def test_worker_backs_off_gives_up_then_finishes_once_space_is_freed(fs: Path) -> None:
    from tests import sample_agents
    from tether import start_run, verify_store
    db = fs / "tether.db"
    store = SQLiteStore(db)
    try:
        rid = start_run(store, sample_agents.hoarder, agent_ref="tests.sample_agents:hoarder",
                        goal="fill the disk")
        reserve = fs / "reserve"
        reserve.write_bytes(b"\0" * 256_000)  # > a few commits of start-up, < 10 steps of 32 KB
        filler = fill(fs)
        reserve.unlink()  # room for a few steps: the disk fills up mid-run
        out = tether_cli(db, "worker", "--until-idle", "--give-up-after", "2", "--lease-ttl", "1")
        lines = [ln for ln in (out.stdout + out.stderr).splitlines() if ln.strip()]
        assert out.returncode == 2, lines
        assert "Traceback" not in out.stderr
        gave_up = [ln for ln in lines if ln.startswith("error:")]
        assert len(gave_up) == 1 and "gave up after" in gave_up[0], lines
        assert str(db) in gave_up[0] and "free space" in gave_up[0], gave_up
        # One line when the store starts failing and one when the worker gives up, not one
        # per retry: before, 47 identical lines a second.
        assert len([ln for ln in lines if "the store is failing" in ln]) == 1, lines
        assert len([ln for ln in lines if not ln.startswith("error:") and (
            "the store is" in ln or "works again" in ln)]) == 1, lines
        # The worker's log of the run (taken, then abandoned when the store failed) and its
        # summary are one line each, whatever the retries.
        runs = [ln for ln in lines if re.match(r"\d\d:\d\d:\d\d run ", ln)]
        assert [ln.split(": ", 1)[1].split(" ")[0] for ln in runs] == ["took", "abandoned"]
        ended = [ln for ln in lines if ln.startswith("worker stopped on an error: drove 1 run")]
        assert len(ended) == 1, lines
        # And the banner (which may wrap) and its policy.
        assert len(lines) - len(runs) - len(ended) <= 6, lines
        m = re.search(r"after ([\d.]+) s of failing storage \((\d+) attempts", gave_up[0])
        assert m is not None, gave_up
        spent, attempts = float(m[1]), int(m[2])
        assert spent >= 2
        assert 2 <= attempts <= STORAGE_BACKOFF.most_attempts(spent), (attempts, spent)
        row = store.get_run(rid)
        assert row is not None and row.status == "running", row  # never failed for the disk
        assert 0 < row.step < sample_agents.HOARD_STEPS, row.step  # it did fill mid-run
        assert not [e for e in store.events(rid) if e.kind == "run.failed"]
        assert verify_store(store).ok

        free(filler)
        out = tether_cli(db, "worker", "--until-idle")
        assert out.returncode == 0, out.stderr
        row = store.get_run(rid)
        assert row is not None and row.status == "done" and row.step == sample_agents.HOARD_STEPS
        audit = tether_cli(db, "audit", "verify")
        assert audit.returncode == 0, audit.stdout + audit.stderr
    finally:
        store.close()


def test_a_worker_whose_disk_is_remounted_larger_says_it_works_again_and_finishes(
        fs: Path) -> None:
    from tests import sample_agents
    from tether import start_run
    db = fs / "tether.db"
    store = SQLiteStore(db)
    try:
        rid = start_run(store, sample_agents.hoarder, agent_ref="tests.sample_agents:hoarder",
                        goal="fill the disk")
        reserve = fs / "reserve"
        reserve.write_bytes(b"\0" * 100_000)
        fill(fs)
        reserve.unlink()
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        worker = subprocess.Popen(
            [str(TETHER), "--store", str(db), "worker", "--until-idle", "--give-up-after", "60"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert worker.stdout is not None
        lines = []
        for line in worker.stdout:  # the barrier: the worker has seen the disk full
            lines.append(line)
            if "the store is failing" in line:
                break
        subprocess.run(["mount", "-o", "remount,size=16m", str(fs)], check=True)
        rest, _ = worker.communicate(timeout=300)
        lines += rest.splitlines()
        assert worker.returncode == 0, lines
        # Before, --until-idle ended before a whole backoff cap of quiet: never said so.
        assert len([ln for ln in lines if "the store works again" in ln]) == 1, lines
        row = store.get_run(rid)
        assert row is not None and row.status == "done", row
    finally:
        store.close()


def test_the_demo_on_a_disk_that_fills_up_goes_on_once_space_is_freed(tmp_path: Path) -> None:
    # A whole night's write-ahead log grows past 2 MB before SQLite checkpoints it.
    with small_fs(tmp_path / "fs", size="8m") as fs:
        _demo_on_a_full_disk(fs, _night(tmp_path / "roomy"))


def _night(folder: Path) -> dict[str, tuple[str, int]]:
    """Run (or go on with) the demo's night; each run's status and step, by name."""
    import asyncio
    import io

    from rich.console import Console

    from tether.demo.agents import scripted
    from tether.demo.night import run_night
    quiet = Console(file=io.StringIO())
    night = asyncio.run(run_night(folder, model=scripted(), console=quiet, quiet=True))
    try:
        return {r.name: (r.status, r.step) for r in night.store.list_runs()}
    finally:
        night.store.close()


class _FreeWhenFailing(logging.Handler):
    """Frees the disk as soon as the worker says the store is failing (a barrier)."""

    def __init__(self, filler: Path) -> None:
        super().__init__()
        self.filler = filler

    def emit(self, record: logging.LogRecord) -> None:
        if "the store is failing" in record.getMessage() and self.filler.exists():
            free(self.filler)


def _demo_on_a_full_disk(fs: Path, want: dict[str, tuple[str, int]]) -> None:
    from tether import verify_store
    reserve = fs / "reserve"
    reserve.write_bytes(b"\0" * 700_000)
    filler = fill(fs)
    reserve.unlink()  # room for the set-up and part of the night
    handler = _FreeWhenFailing(filler)
    logging.getLogger("tether.worker").addHandler(handler)
    try:
        got = _night(fs / "demo")
    except StorageFull:  # the demo's own write between two worker passes hit the full disk
        free(filler)
        got = _night(fs / "demo")  # run again, as the error says
    finally:
        logging.getLogger("tether.worker").removeHandler(handler)
    assert not filler.exists(), "the disk never filled up: give the night less room"
    # The commits that failed were retried once space was freed: the night ends as it does
    # on a roomy disk, with nothing in doubt and no run failed.
    assert got == want
    store = SQLiteStore(fs / "demo" / "tether.db")
    try:
        assert not store.effects(status="in_doubt")
        assert verify_store(store).ok
    finally:
        store.close()


# -- every write of the store, on a full disk ---------------------------------------
WRITES: dict[str, Callable[[SQLiteStore, str, Path], object]] = {
    "commit": lambda s, rid, fs: _start(s, "second"),
    "acquire_many": lambda s, rid, fs: s.acquire_many([rid], "w", 30.0, 1.0),
    "renew": lambda s, rid, fs: s.renew({rid: 1}, "w", 30.0, 2.0),
    "release": lambda s, rid, fs: s.release(rid, "w", 1),
    "add_command": lambda s, rid, fs: s.add_command(rid, "pause", {}, "human:t", 1.0),
    "erase_payload": lambda s, rid, fs: s.erase_payload(s.events(rid)[0].id),
    "notify": lambda s, rid, fs: s.notify([Notification("n1", "run.paused", {}, 1.0)]),
    "set_meta": lambda s, rid, fs: s.set_meta("k", "v"),
    "swarm.budget": lambda s, rid, fs: s.append_store_event(
        "swarm.budget", "swarm:sw", {"budget": {"steps": 1}}, actor="human:t",
        time="2026-01-01T00:00:00.000000Z", id="01J0000000000000000000000A"),
    "backup": lambda s, rid, fs: s.backup(str(fs / "copy.db")),
}


def _start(store: SQLiteStore, name: str) -> str:
    from tether import StepAgent, start_run
    return start_run(store, StepAgent(_noop, name="noop"), agent_ref="x:noop", goal="g",
                     name=name)


@pytest.mark.parametrize("write", sorted(WRITES))
def test_every_write_on_a_full_disk_raises_a_storage_error_and_changes_nothing(
        fs: Path, write: str) -> None:
    from tether import verify_store
    store = SQLiteStore(fs / "tether.db")
    try:
        rid = _start(store, "first")
        store.acquire_many([rid], "w", 30.0, 0.0)
        before = (store.list_runs(), store.events(rid), store.lease_of(rid))
        # An empty write-ahead log: any write needs a block the disk no longer has.
        store._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)")
        fill(fs)
        with pytest.raises(StorageError) as err:
            WRITES[write](store, rid, fs)
        assert str(fs) in str(err.value) and "free space" in str(err.value), err.value
        assert (store.list_runs(), store.events(rid), store.lease_of(rid)) == before
        assert verify_store(store).ok
    finally:
        store.close()


def test_a_worker_waits_out_a_full_disk_and_leaves_nothing_in_doubt(
        fs: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import asyncio

    from tests import sample_agents
    from tether import Worker, start_run, verify_store
    store = SQLiteStore(fs / "tether.db")
    try:
        rid = start_run(store, sample_agents.file_hoarder, goal="fill the disk",
                        agent_ref="tests.sample_agents:file_hoarder", workspace=tmp_path / "ws")
        reserve = fs / "reserve"
        reserve.write_bytes(b"\0" * 256_000)  # > a few commits of start-up, < 10 steps of 32 KB
        filler = fill(fs)
        reserve.unlink()  # room for a few steps: the disk fills up mid-run
        handler = _FreeWhenFailing(filler)
        logging.getLogger("tether.worker").addHandler(handler)
        try:
            with caplog.at_level(logging.WARNING, "tether"):
                stats = asyncio.run(Worker(store, poll_interval=0.01).run(until_idle=True))
        finally:
            logging.getLogger("tether.worker").removeHandler(handler)
        assert not filler.exists(), "the disk never filled up"
        # Its commits were retried until space came back: the run was never abandoned, and
        # no effect was left in doubt (each ran once, and is recorded).
        assert stats.runs_driven == 1 and stats.finished == {"done": 1}
        row = store.get_run(rid)
        assert row is not None and row.status == "done" and row.step == sample_agents.HOARD_STEPS
        effects = store.effects(run=rid)
        assert [e.status for e in effects] == ["done"] * sample_agents.HOARD_STEPS
        assert len([r for r in caplog.records if "the store is failing" in r.getMessage()]) == 1
        assert verify_store(store).ok
    finally:
        store.close()


def _enter(folder: Path) -> None:
    with small_fs(folder):
        pass


def test_without_a_mount_the_full_disk_tests_skip_but_never_under_ci(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests import fullfs
    monkeypatch.setattr(fullfs, "_mount", lambda folder, size: "mount not permitted here: EPERM")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true, yet no tmpfs could be mounted"):
        _enter(tmp_path / "a")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="mount not permitted here: EPERM"):
        _enter(tmp_path / "b")
