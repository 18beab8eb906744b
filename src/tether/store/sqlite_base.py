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

from tether.core.clock import WallClock
from tether.errors import (
    SchemaTooNew,
    StorageError,
    StorageFull,
    StoreCorrupt,
    StoreError,
    StoreLocked,
    UsageError,
)
from tether.store import schema
from tether.store.run_keys import RunKeys
from tether.store.sqlite_open import check_path, connect
from tether.system_clock import SYSTEM_CLOCK

# SQLite's primary result codes (https://sqlite.org/rescode.html).
_BUSY, _LOCKED, _CORRUPT, _NOTADB, _FULL, _READONLY = 5, 6, 11, 26, 13, 8
_STORAGE = frozenset({8, 10, 14, 15})  # READONLY, IOERR, CANTOPEN, PROTOCOL


class SQLiteBase:
    """Connections, transactions and migrations shared by the SQLite store.

    Args:
        path: the database file.
        create: create the file if it is missing (otherwise StoreError); its folder must
            exist either way.
        synchronous: ``FULL`` (default, durable on power loss) or ``NORMAL``.
        busy_timeout: seconds to wait for another writer before StoreLocked.
        readonly: open for reading only (a store or backup we may not write): nothing is
            created, migrated or written; implies ``create=False``.
        clock: the wall clock that stamps applied commands and that leases expire by when
            the caller gives no time (default: the system's).
    """

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True,
                 synchronous: str = "FULL", busy_timeout: float = 10.0,
                 readonly: bool = False, clock: WallClock | None = None) -> None:
        self.path = Path(path)
        self.clock = clock or SYSTEM_CLOCK  # stamps applied commands; leases' default "now"
        self.url = f"sqlite:///{self.path}"
        if synchronous.upper() not in ("FULL", "NORMAL"):
            raise UsageError(f"synchronous must be FULL or NORMAL, not {synchronous!r}")
        self._sync = synchronous.upper()
        self._busy = busy_timeout
        self.readonly = readonly
        check_path(self.path, create=create and not readonly, readonly=readonly)
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._runs = RunKeys()
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
                c = connect(self.path, readonly=self.readonly, timeout=self._busy)
                if not self.readonly:  # the journal mode is written into the file
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
        """tether's error for a sqlite3 one: the store boundary lets no raw sqlite3 error out.

        Classified by SQLite's result code (its low byte; extended codes refine it),
        falling back on the message for errors raised without one."""
        msg = str(exc)
        code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
        if code in (_BUSY, _LOCKED) or "locked" in msg or "busy" in msg:
            return StoreLocked(f"store {self.path} is locked by another process for more than "
                               f"{self._busy:g}s; retry, or find the stuck process")
        if code in (_CORRUPT, _NOTADB) or (isinstance(exc, sqlite3.DatabaseError) and (
                "not a database" in msg or "malformed" in msg)):
            return StoreCorrupt(f"{self.path} is not a tether store or is damaged ({msg}); "
                                "restore it from a backup (tether store backup)")
        if self.readonly and code == _READONLY:
            return StoreError(f"store {self.path} is open read-only and this command tried to "
                              f"write to it ({msg}); use a command that writes as the store's "
                              "owner, on a writable copy")
        if code == _FULL or "disk is full" in msg:
            return StorageFull(f"store {self.path}: the disk is full ({msg}); free space on the "
                               f"file system that holds {self.path.parent}, or move the store to "
                               "one with room, then run again; nothing journaled is lost and "
                               "this write changed nothing")
        if code in _STORAGE:
            return StorageError(f"store {self.path}: the storage failed ({msg}); check the disk, "
                                f"its mount and the permissions of {self.path.parent}, then run "
                                "again; nothing journaled is lost and this write changed nothing")
        return StoreError(f"store {self.path}: {msg}")

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; nested inside another on this thread, a savepoint.

        After sqlite-utils' ``atomic``: undoing never hides the error that caused it (SQLite
        may have rolled the transaction back itself, on a full disk or an I/O error, so a
        bare ROLLBACK would fail and mask it), and every sqlite3 error leaves as tether's."""
        c = self._conn()
        nested = c.in_transaction
        begin, end = ("SAVEPOINT tether_tx", "RELEASE tether_tx") if nested else \
            ("BEGIN IMMEDIATE", "COMMIT")
        try:
            c.execute(begin)
        except sqlite3.Error as exc:
            raise self._translate(exc) from exc
        try:
            yield c
            c.execute(end)
        except BaseException as exc:
            self._undo(c, nested)
            if isinstance(exc, sqlite3.Error):
                raise self._translate(exc) from exc
            raise

    def _undo(self, c: sqlite3.Connection, nested: bool) -> None:
        """Roll back what the failed (sub)transaction wrote, if SQLite has not already."""
        # A run key read inside the transaction may be one it created: forget them all,
        # or a retried commit would write events under a key that was rolled back.
        self._runs.forget()
        if not c.in_transaction:
            return
        with contextlib.suppress(sqlite3.Error):  # the caller raises the error that matters
            if nested:
                c.execute("ROLLBACK TO tether_tx")
                c.execute("RELEASE tether_tx")
            else:
                c.execute("ROLLBACK")

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """One read transaction on this thread's connection: in WAL mode its reads all see
        the commit that was last when it began (nested: the outer one's)."""
        c = self._conn()
        if c.in_transaction:
            yield
            return
        try:
            c.execute("BEGIN")
            c.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()  # the snapshot starts here
        except sqlite3.Error as exc:
            raise self._translate(exc) from exc
        try:
            yield
        finally:
            with contextlib.suppress(sqlite3.Error):  # nothing was written: nothing to lose
                c.execute("COMMIT")

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """Translate sqlite3 errors of reads done outside ``_read`` (cursors, generators)."""
        try:
            yield
        except sqlite3.Error as exc:
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
        except (UnicodeEncodeError, OverflowError) as exc:
            raise self._unbindable(exc, args) from None

    def _unbindable(self, exc: Exception, args: Sequence[Any]) -> UsageError:
        """What a caller looks up that SQLite cannot bind: an id that is not UTF-8 (a lone
        surrogate) or a number beyond 64 bits. The CLI refuses these first, naming the
        argument; a Python caller gets the same kind of error, not a codec's."""
        return UsageError(f"store {self.path}: cannot look up {_first_unbindable(args)} "
                          f"({exc}); ids and names are UTF-8 text, numbers fit in 64 bits")

    def _rk(self, run: str, c: sqlite3.Connection | None = None, *,
            create: bool = False) -> int | None:
        """The run's small integer key (cached: a run's key never changes)."""
        rk = self._runs.key(run)
        if rk is not None:
            return rk
        conn = c or self._conn()
        try:
            row = conn.execute("SELECT rk FROM run_keys WHERE id = ?", (run,)).fetchone()
        except sqlite3.Error as exc:
            raise self._translate(exc) from exc
        except UnicodeEncodeError as exc:
            raise self._unbindable(exc, (run,)) from None
        if row is None and create:
            # Not cached yet: the transaction creating it may still roll back.
            cur = conn.execute("INSERT INTO run_keys(id) VALUES(?)", (run,))
            return int(cur.lastrowid or 0)
        if row is None:
            return None
        return self._runs.remember(run, row[0])

    def _run_id(self, rk: int) -> str:
        run = self._runs.run(rk)
        if run is None:
            run = self._runs.found(rk, self._read("SELECT id FROM run_keys WHERE rk = ?",
                                                  (rk,)))
        return run

    def _migrate(self) -> None:
        tables = {r[0] for r in self._read("SELECT name FROM sqlite_master WHERE type='table'")}
        if tables and "meta" not in tables:
            raise StoreCorrupt(f"{self.path} is an SQLite file but not a tether store "
                               "(no meta table); pass the right --store")
        if "meta" in tables:
            # Read first: a store that is up to date needs no write lock to be opened.
            row = self._read("SELECT value FROM meta WHERE key='schema_version'")
            if row and int(row[0][0]) == schema.VERSION:
                return
        if self.readonly:
            self._migrate_apart(tables)
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
            self._migrated(c, version)

    def _migrated(self, c: sqlite3.Connection, old: int) -> None:
        """Data steps of a migration from schema version ``old``, in its transaction
        (subclasses that own the data add theirs)."""

    def _migrate_apart(self, tables: set[str]) -> None:
        """A read-only open of a store that is not up to date: migrate it on a connection of
        its own if we may write it (after an upgrade, `tether runs` must not refuse the
        owner's store; the read-only connection itself still never writes); otherwise say
        what it needs."""
        if tables and os.access(self.path, os.W_OK) and os.access(self.path.parent, os.W_OK):
            # The store's own class: a migration's data steps live in its mixins.
            type(self)(self.path, create=False, synchronous=self._sync,
                       busy_timeout=self._busy).close()
            self.close()  # a read-only connection that saw the old schema must not be reused
            return
        if not tables:
            raise StoreCorrupt(f"{self.path} holds no tether store (no tables); pass the "
                               "right --store, or create one with tether run / tether demo")
        row = self._read("SELECT value FROM meta WHERE key='schema_version'")
        version = int(row[0][0]) if row else 0
        if version > schema.VERSION:
            raise SchemaTooNew(f"store {self.path} has schema version {version}, this tether "
                               f"knows up to {schema.VERSION}; upgrade tether")
        raise StoreError(f"store {self.path} has schema version {version} and needs a migration "
                         f"to {schema.VERSION}, which writes; this command only reads and opened "
                         "it read-only. Run a command that writes (e.g. tether worker "
                         "--until-idle) as the store's owner, or read a migrated copy")

    def check_integrity(self) -> list[str]:
        """SQLite's ``PRAGMA integrity_check``: every page and record well formed, and every
        index matching its table. ``quick_check`` skips the index comparison; on a 142 MB
        store of 101,318 events it took 0.14 s against 0.29 s, beside 5 s for the rest of
        verify, so the full check is worth it (docs/guide.md). Empty when sound; otherwise
        SQLite's lines, at most 100."""
        try:
            return self._check("integrity_check")
        except sqlite3.DatabaseError as exc:
            # Comparing an index whose page is noise can stop the full check with a bare
            # "malformed": quick_check, which only reads pages, then says where.
            try:
                return self._check("quick_check") or [str(exc)]
            except sqlite3.DatabaseError:
                return [str(exc)]  # so damaged SQLite cannot even check it

    def _check(self, pragma: str) -> list[str]:
        rows = self._conn().execute(f"PRAGMA {pragma}").fetchall()
        lines = [ln for (row,) in rows for ln in str(row).splitlines()]
        return [] if lines == ["ok"] else [ln for ln in lines if not ln.startswith("*** in")]

    def close(self) -> None:
        with self._conns_lock:
            for c in self._conns:
                with contextlib.suppress(sqlite3.Error):
                    c.close()
            self._conns.clear()
        self._local = threading.local()


def _first_unbindable(args: Sequence[Any]) -> str:
    """The first argument SQLite cannot bind, quoted and cut short, for a message."""
    for a in args:
        if isinstance(a, int) and not -(2**63) <= a < 2**63:
            return repr(a)[:40]
        if isinstance(a, str) and not a.isascii():
            try:
                a.encode("utf-8")
            except UnicodeEncodeError:
                return repr(a)[:40]
    return "a value"
