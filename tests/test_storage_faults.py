"""Storage faults: a full disk is a clear tether error, never a raw sqlite3 one, and never
loses or half-applies a write. The disk is real: a small tmpfs filled to the last block."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fullfs import fill, free, small_fs
from tether.errors import StorageFull, StoreError
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
