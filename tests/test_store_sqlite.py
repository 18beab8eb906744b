"""SQLiteStore: the conformance suite on real files, then what only SQLite has.

The shared tests come from ``tests/store_conformance.py`` through the star
import below; this module provides the two fixtures they need.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tether.errors import SchemaTooNew, StoreCorrupt, StoreError, StoreLocked, UsageError
from tether.store import open_store, schema
from tether.store.protocol import Store
from tether.store.sqlite import SQLiteStore

pytest.register_assert_rewrite("tests.store_conformance")

# The shared tests, collected here once for this backend; __all__ there lists only tests.
from tests.store_conformance import *  # noqa: E402, F403

# The conformance tests write rows of their own making, without the events they fold from.
pytestmark = pytest.mark.raw_rows


@pytest.fixture
def store_factory(tmp_path: Path) -> Iterator[Callable[[], Store]]:
    stores: list[SQLiteStore] = []

    def make() -> Store:
        stores.append(SQLiteStore(tmp_path / f"store-{len(stores)}.db"))
        return stores[-1]

    yield make
    for s in stores:
        s.close()


@pytest.fixture
def open_backup() -> Iterator[Callable[[str], Store]]:
    opened: list[SQLiteStore] = []

    def open_(path: str) -> Store:
        opened.append(SQLiteStore(path, create=False))
        return opened[-1]

    yield open_
    for s in opened:
        s.close()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "tether.db"


def pragma(store: SQLiteStore, name: str) -> object:
    """A PRAGMA as seen by a connection the store opens now (a new thread gets a new one)."""
    out: list[object] = []
    worker = threading.Thread(target=lambda: out.append(
        store._conn().execute(f"PRAGMA {name}").fetchone()[0]))
    worker.start()
    worker.join()
    return out[0]


def test_wal_and_synchronous_full_by_default(db: Path) -> None:
    store = SQLiteStore(db)
    try:
        assert pragma(store, "journal_mode") == "wal"
        assert pragma(store, "synchronous") == 2  # FULL
        assert store._conn().execute("PRAGMA synchronous").fetchone()[0] == 2
    finally:
        store.close()
    raw = sqlite3.connect(db)
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # kept in the file
    finally:
        raw.close()


def test_synchronous_normal_by_option(db: Path) -> None:
    store = SQLiteStore(db, synchronous="normal")
    try:
        assert pragma(store, "synchronous") == 1  # NORMAL
        assert pragma(store, "journal_mode") == "wal"
    finally:
        store.close()
    with pytest.raises(UsageError, match="FULL or NORMAL"):
        SQLiteStore(db, synchronous="OFF")


def test_a_file_that_is_not_a_database_is_store_corrupt(db: Path) -> None:
    db.write_bytes(b"these are my notes, not a database\n" * 200)
    with pytest.raises(StoreCorrupt, match="not a tether store or is damaged") as info:
        SQLiteStore(db)
    assert str(db) in str(info.value)
    assert db.read_bytes().startswith(b"these are my notes")


def test_an_sqlite_file_of_another_application_is_store_corrupt(db: Path) -> None:
    raw = sqlite3.connect(db)
    raw.execute("CREATE TABLE contacts(name TEXT)")
    raw.commit()
    raw.close()
    with pytest.raises(StoreCorrupt, match="not a tether store") as info:
        SQLiteStore(db)
    assert str(db) in str(info.value)
    raw = sqlite3.connect(db)
    try:  # left as it was
        assert [r[0] for r in raw.execute("SELECT name FROM sqlite_master")] == ["contacts"]
    finally:
        raw.close()


def test_a_store_from_a_newer_tether_is_refused(db: Path) -> None:
    SQLiteStore(db).close()
    raw = sqlite3.connect(db)
    raw.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(schema.VERSION + 1),))
    raw.commit()
    raw.close()
    with pytest.raises(SchemaTooNew, match="upgrade tether") as info:
        SQLiteStore(db)
    assert f"version {schema.VERSION + 1}" in str(info.value)


def test_reopening_keeps_the_schema_and_meta_values_cannot_spoof_it(db: Path) -> None:
    store = SQLiteStore(db)
    store.set_meta("schema_version", str(schema.VERSION + 5))
    store.close()
    store = SQLiteStore(db, create=False)
    try:
        assert store.get_meta("schema_version") == str(schema.VERSION + 5)
    finally:
        store.close()
    raw = sqlite3.connect(db)
    try:
        rows = raw.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall()
        assert rows == [(str(schema.VERSION),)]
    finally:
        raw.close()


def test_create_false_on_a_missing_path_is_store_error(db: Path) -> None:
    with pytest.raises(StoreError, match="no tether store"):
        SQLiteStore(db, create=False)
    assert not db.exists()


def test_a_writer_holding_the_lock_too_long_gives_store_locked(db: Path) -> None:
    store = SQLiteStore(db, busy_timeout=0.05)
    other = sqlite3.connect(db, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        t0 = time.monotonic()
        with pytest.raises(StoreLocked, match="locked"):
            store.set_meta("k", "v")
        with pytest.raises(StoreLocked):
            store.acquire("r1", "w1", 60, time.time())
        assert time.monotonic() - t0 < 5
        assert store.get_meta("k") is None  # readers are not blocked in WAL mode
        other.execute("ROLLBACK")
        store.set_meta("k", "v")
        assert store.get_meta("k") == "v"
    finally:
        other.close()
        store.close()


def test_two_stores_on_one_file_share_leases(db: Path) -> None:
    # Two processes in miniature: separate objects, separate connections.
    one, two = SQLiteStore(db), SQLiteStore(db)
    try:
        now = time.time()
        t1 = one.acquire("r1", "w1", 60, now)
        assert t1 is not None
        assert two.acquire("r1", "w2", 60, now) is None
        assert two.lease_of("r1") == ("w1", t1, now + 60)
    finally:
        one.close()
        two.close()


# -- open_store URLs -----------------------------------------------------------

@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TETHER_STORE", raising=False)
    return tmp_path


def opened(url: str | None, **kw: bool) -> tuple[Path, str, object]:
    """(path, url, synchronous) of the store ``url`` opens; the store is closed again."""
    store = open_store(url, **kw)
    assert isinstance(store, SQLiteStore)
    try:
        return store.path, store.url, pragma(store, "synchronous")
    finally:
        store.close()


def test_open_store_plain_path(in_tmp: Path) -> None:
    path, url, sync = opened(str(in_tmp / "plain.db"))
    assert (path, url, sync) == (in_tmp / "plain.db", f"sqlite:///{in_tmp / 'plain.db'}", 2)
    assert (in_tmp / "plain.db").is_file()


def test_open_store_sqlite_urls(in_tmp: Path) -> None:
    path, _, _ = opened("sqlite:///rel.db")
    assert path == Path("rel.db")
    assert (in_tmp / "rel.db").is_file()
    path, _, _ = opened(f"sqlite:///{in_tmp / 'abs.db'}")  # sqlite:////abs
    assert path == in_tmp / "abs.db"
    assert (in_tmp / "abs.db").is_file()
    path, _, sync = opened("sqlite:///fast.db?synchronous=NORMAL")
    assert (path, sync) == (Path("fast.db"), 1)
    _, _, sync = opened(str(in_tmp / "fast2.db") + "?synchronous=NORMAL")
    assert sync == 1


def test_open_store_default_and_environment(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, _, _ = opened(None)
    assert path == Path("tether.db")
    assert (in_tmp / "tether.db").is_file()
    monkeypatch.setenv("TETHER_STORE", f"sqlite:///{in_tmp / 'env.db'}")
    path, _, _ = opened(None)
    assert path == in_tmp / "env.db"
    with pytest.raises(StoreError, match="no tether store"):
        open_store(str(in_tmp / "missing.db"), create=False)


@pytest.mark.parametrize("url", ["tether.db?journal=off", "tether.db?synchronous=OFF"])
def test_open_store_refuses_what_it_cannot_open(in_tmp: Path, url: str) -> None:
    with pytest.raises(UsageError):
        open_store(url)
    assert not (in_tmp / "tether.db").exists()
