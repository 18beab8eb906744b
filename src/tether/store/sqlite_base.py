"""The SQLite store's connections, transactions and schema migrations.

Discipline (after datasette and sqlite-utils): WAL so readers never block the
writer; ``BEGIN IMMEDIATE`` so a writer takes the lock up front instead of
failing half-way on upgrade; a busy timeout; one connection per thread.
``synchronous=FULL`` by default so a commit survives power loss, ``NORMAL`` as
an option (survives a process crash, may lose the last commits on power loss).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tether.errors import SchemaTooNew, StoreCorrupt, StoreError, StoreLocked, UsageError
from tether.store import schema


class SQLiteBase:
    """Connections, transactions and migrations shared by the SQLite store.

    Args:
        path: the database file.
        create: create the file if it is missing (otherwise StoreError).
        synchronous: ``FULL`` (default, durable on power loss) or ``NORMAL``.
        busy_timeout: seconds to wait for another writer before StoreLocked.
    """

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True,
                 synchronous: str = "FULL", busy_timeout: float = 10.0) -> None:
        self.path = Path(path)
        self.url = f"sqlite:///{self.path}"
        if synchronous.upper() not in ("FULL", "NORMAL"):
            raise UsageError(f"synchronous must be FULL or NORMAL, not {synchronous!r}")
        self._sync = synchronous.upper()
        self._busy = busy_timeout
        if self.path.is_dir():
            raise StoreError(f"{self.path} is a folder; --store names a SQLite file, "
                             "e.g. ./tether.db")
        if not self.path.exists() and not create:
            raise StoreError(f"no tether store at {self.path}; start a run first "
                             "(tether run / tether demo) or pass --store / TETHER_STORE")
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._keys: dict[str, int] = {}
        self._ids: dict[int, str] = {}
        try:
            self._migrate()
        except BaseException:
            self.close()
            raise

    # -- connections -----------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        c: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if c is None:
            try:
                c = sqlite3.connect(self.path, isolation_level=None, timeout=self._busy,
                                    check_same_thread=False)
                c.execute("PRAGMA journal_mode=WAL")
                c.execute(f"PRAGMA synchronous={self._sync}")
                c.execute("PRAGMA foreign_keys=OFF")
                # Damaged text must not make a whole read fail: decode leniently, so the
                # audit sees the changed bytes as a hash mismatch and names the event.
                c.text_factory = lambda b: b.decode("utf-8", "surrogateescape")
            except sqlite3.DatabaseError as exc:
                raise self._translate(exc) from exc
            self._local.conn = c
            with self._conns_lock:
                self._conns.append(c)
        return c

    def _translate(self, exc: sqlite3.Error) -> StoreError:
        msg = str(exc)
        if "locked" in msg or "busy" in msg:
            return StoreLocked(f"store {self.path} is locked by another process for more than "
                               f"{self._busy:g}s; retry, or find the stuck process")
        if isinstance(exc, sqlite3.DatabaseError) and ("not a database" in msg or "malformed" in msg):
            return StoreCorrupt(f"{self.path} is not a tether store or is damaged ({msg}); "
                                "restore it from a backup (tether store backup)")
        return StoreError(f"store {self.path}: {msg}")

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        c = self._conn()
        try:
            c.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self._translate(exc) from exc
        try:
            yield c
        except BaseException:
            c.execute("ROLLBACK")
            raise
        try:
            c.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                c.execute("ROLLBACK")
            raise self._translate(exc) from exc

    @contextlib.contextmanager
    def _strict_text(self) -> Iterator[None]:
        """Decode text in C for a bulk listing of ids and names (several times faster than
        the lenient decoder, which is for reading damaged events, not these)."""
        c = self._conn()
        lenient = c.text_factory
        c.text_factory = str
        try:
            yield
        finally:
            c.text_factory = lenient

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._conn().execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise self._translate(exc) from exc

    def _rk(self, run: str, c: sqlite3.Connection | None = None, *,
            create: bool = False) -> int | None:
        """The run's small integer key (cached: a run's key never changes)."""
        rk = self._keys.get(run)
        if rk is not None:
            return rk
        conn = c or self._conn()
        row = conn.execute("SELECT rk FROM run_keys WHERE id = ?", (run,)).fetchone()
        if row is None and create:
            # Not cached yet: the transaction creating it may still roll back.
            cur = conn.execute("INSERT INTO run_keys(id) VALUES(?)", (run,))
            return int(cur.lastrowid or 0)
        if row is None:
            return None
        self._keys[run] = int(row[0])
        self._ids[int(row[0])] = run
        return int(row[0])

    def _run_id(self, rk: int) -> str:
        run = self._ids.get(rk)
        if run is None:
            row = self._read("SELECT id FROM run_keys WHERE rk = ?", (rk,))
            run = str(row[0][0]) if row else f"(unknown run key {rk})"
            if row:
                self._ids[rk] = run
        return run

    def _migrate(self) -> None:
        c = self._conn()
        try:
            tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except sqlite3.DatabaseError as exc:
            raise self._translate(exc) from exc
        if tables and "meta" not in tables:
            raise StoreCorrupt(f"{self.path} is an SQLite file but not a tether store "
                               "(no meta table); pass the right --store")
        if "meta" in tables:
            # Read first: a store that is up to date needs no write lock to be opened.
            row = c.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if row and int(row[0]) == schema.VERSION:
                return
        with self._tx() as c:
            version = 0
            if "meta" in tables:
                row = c.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
                version = int(row[0]) if row else 0
            if version > schema.VERSION:
                raise SchemaTooNew(f"store {self.path} has schema version {version}, this tether "
                                   f"knows up to {schema.VERSION}; upgrade tether")
            for i in range(version, schema.VERSION):
                for stmt in schema.MIGRATIONS[i].split(";"):
                    if stmt.strip():
                        c.execute(stmt)
                c.execute("INSERT OR REPLACE INTO meta VALUES('schema_version', ?)", (str(i + 1),))

    def close(self) -> None:
        with self._conns_lock:
            for c in self._conns:
                with contextlib.suppress(sqlite3.Error):
                    c.close()
            self._conns.clear()
        self._local = threading.local()
