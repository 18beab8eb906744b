"""The PostgreSQL store's connections, transactions and schema.

One store is one PostgreSQL schema (``?schema=NAME``, default ``tether``), so
several stores share a database without seeing each other. Discipline, as for
SQLite: one connection per thread, in autocommit mode so that every transaction
is explicit. A write transaction first takes the store's advisory lock
(``pg_advisory_xact_lock`` on a key derived from the schema name), so commits
serialize as SQLite's ``BEGIN IMMEDIATE`` makes them: the batch chain stays a
line, a fence check reads the lease a committed takeover wrote, and a writer
waits at most ``lock_timeout`` seconds (then StoreLocked). Unlike SQLite, a
writer frozen inside its transaction does not hold the lock for ever: the
server ends its session after 30 s idle in it. Reads run in READ
COMMITTED, one statement each; :meth:`PGBase.snapshot` gives a REPEATABLE READ
view for a series of them.

A password in the URL is used to connect and never shown: ``url`` (what messages
and ``reader_url`` print) has it removed; give processes that need one the
password with ``PGPASSWORD`` or ``~/.pgpass``, as libpq reads them.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from tether.core.clock import WallClock
from tether.errors import (
    SchemaTooNew,
    StoreCorrupt,
    StoreError,
    StoreMissing,
    UsageError,
)
from tether.store import postgres_schema as pg_schema
from tether.store.run_keys import RunKeys
from tether.store.urls import parse_url
from tether.system_clock import SYSTEM_CLOCK

try:
    import psycopg
    from psycopg import sql as pg_sql
    from psycopg.pq import TransactionStatus
except ImportError as exc:  # the optional extra is missing
    raise ImportError("the PostgreSQL store needs psycopg 3: pip install 'tether[postgres]' "
                      "(in a clone: .venv/bin/pip install -e '.[postgres]')") from exc

# After the guard: it imports psycopg too, and a missing driver must get the hint above.
from tether.store.postgres_errors import translate

Conn = psycopg.Connection[tuple[Any, ...]]
"""A store connection: rows as plain tuples."""

_INT64 = (-(2**63), 2**63)


def lock_key(schema: str) -> int:
    """The advisory lock key of a store: stores in other schemas do not contend."""
    return int.from_bytes(hashlib.sha256(f"tether:{schema}".encode()).digest()[:8], "big",
                          signed=True)


class WriteTx:
    """A write transaction being made (:meth:`PGBase._write`)."""

    def __init__(self, conn: psycopg.Connection[tuple[Any, ...]],
                 first: tuple[Any, ...] | None) -> None:
        self.conn = conn
        """The connection the transaction is on."""
        self.first = first
        """The first row of the query read as the transaction began (None: no row)."""
        self.last: pg_sql.Composed | None = None
        """The statement :meth:`with_commit` gave, if any."""

    def with_commit(self, query: str, values: Sequence[Any]) -> None:
        """Send ``query`` (``{}`` where each of ``values`` goes, written in as literals by
        psycopg's quoting) with the COMMIT, in the same round trip; if it fails, the
        transaction fails."""
        self.last = pg_sql.SQL(query).format(*map(pg_sql.Literal, values))


class PGBase:
    """Connections, transactions and schema shared by the PostgreSQL store's mixins.

    Args:
        url: ``postgresql://[user@]host[:port]/dbname?schema=NAME``; other query options
            go to libpq (e.g. ``sslmode=require``, ``connect_timeout=5``).
        create: create the schema and its tables if missing (otherwise StoreError).
        readonly: every transaction read-only; nothing is created or upgraded.
        clock: the wall clock that stamps applied commands and that leases expire by when
            the caller gives no time (default: the system's).
        lock_timeout: seconds a writer waits for the store's write lock before StoreLocked.
    """

    def __init__(self, url: str, *, create: bool = True, readonly: bool = False,
                 clock: WallClock | None = None, lock_timeout: float = 10.0) -> None:
        self._conninfo, self.schema, self.url = parse_url(url)
        # As given, password included: only for a process of ours that opens this store
        # too (verify's helper gets it on its stdin, never on a command line or a screen).
        self._given_url = url
        self.clock = clock or SYSTEM_CLOCK
        self.readonly = readonly
        self._lock_timeout = lock_timeout
        self._lock_key = lock_key(self.schema)
        # A writer that stalls inside its transaction (a paused VM, a SIGSTOP) would hold
        # the lock, and stop every worker of the store, for as long as it sleeps: the
        # server ends its session after this long idle in the transaction instead, which
        # rolls it back and frees the lock (its next statement then fails, and its lease
        # has expired by then). Well above any pause between two statements of ours.
        self._stall_timeout = max(30.0, 3 * lock_timeout)
        self._local = threading.local()
        self._conns: list[psycopg.Connection[tuple[Any, ...]]] = []
        self._conns_lock = threading.Lock()
        self._runs = RunKeys()
        try:
            self._open(create=create and not readonly)
        except BaseException:
            self.close()
            raise

    # -- connections -----------------------------------------------------
    def _conn(self) -> psycopg.Connection[tuple[Any, ...]]:
        """This thread's connection (a new one if the last was lost)."""
        c: psycopg.Connection[tuple[Any, ...]] | None = getattr(self._local, "conn", None)
        if c is not None and not c.closed and not c.broken:
            return c
        kwargs: dict[str, Any] = {"autocommit": True}
        if "connect_timeout" not in self._conninfo:
            kwargs["connect_timeout"] = 10
        try:
            c = psycopg.connect(self._conninfo, **kwargs)
            c.execute(pg_sql.SQL("SET search_path TO {}").format(pg_sql.Identifier(self.schema)))
            c.execute(pg_sql.SQL("SET lock_timeout = {}").format(
                pg_sql.Literal(f"{max(1, int(self._lock_timeout * 1000))}ms")))
            if self.readonly:
                c.execute("SET default_transaction_read_only = on")
        except psycopg.Error as exc:
            raise self._translate(exc) from exc
        self._local.conn = c
        with self._conns_lock:
            self._conns.append(c)
        return c

    def _translate(self, exc: BaseException) -> StoreError:
        """tether's error for a psycopg one: the store boundary lets no raw psycopg error
        out (:func:`tether.store.postgres_errors.translate`)."""
        return translate(exc, f"store {self.url} (schema {self.schema})", self.schema,
                         lock_timeout=self._lock_timeout, stall_timeout=self._stall_timeout)

    @contextlib.contextmanager
    def _tx(self) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        """One write transaction holding the store's write lock; nested inside another on
        this thread, a savepoint. Rolled back on any exception, keeping the error that
        caused it; every psycopg error leaves as tether's."""
        with self._write() as tx:
            yield tx.conn

    @contextlib.contextmanager
    def _write(self, first: str | None = None) -> Iterator[WriteTx]:
        """:meth:`_tx`, with fewer round trips: ``first`` (a query without parameters) is
        sent with the BEGIN and the lock and read under the lock (``tx.first``: its first
        row), and a statement left in ``tx.last`` is sent with the COMMIT.

        Each is one simple-protocol message the server runs whole before it answers, so
        a process frozen anywhere in it leaves the server idle in the transaction, where
        ``idle_in_transaction_session_timeout`` ends the session (see insert_rows)."""
        c = self._conn()
        try:
            if c.info.transaction_status != TransactionStatus.IDLE:
                with c.transaction():  # nested: a savepoint
                    tx = WriteTx(c, c.execute(first).fetchone() if first else None)
                    yield tx
                    if tx.last is not None:
                        c.execute(tx.last)
                return
            try:
                cur = c.execute(self._begin + (first or ""))
                while cur.nextset():  # to the last statement's rows
                    pass
                tx = WriteTx(c, cur.fetchone() if first else None)
                yield tx
                c.execute(pg_sql.SQL("; ").join([tx.last, pg_sql.SQL("COMMIT")])
                          if tx.last is not None else "COMMIT")
            except BaseException:
                if not c.broken and c.info.transaction_status != TransactionStatus.IDLE:
                    with contextlib.suppress(psycopg.Error):  # the first error is the one
                        c.execute("ROLLBACK")
                raise
        except BaseException as exc:
            # A run key read inside the transaction may be one it created: forget them all,
            # or a retried commit would write events under a key that was rolled back.
            self._runs.forget()
            if isinstance(exc, psycopg.Error):
                raise self._translate(exc) from exc
            if isinstance(exc, (UnicodeEncodeError, OverflowError)):
                raise self._unbindable(exc, ()) from None
            raise

    @property
    def _begin(self) -> str:
        """What starts a write transaction: BEGIN, the store's lock, the stall timeout
        (our own numbers, written in: a query without parameters can hold several)."""
        return (f"BEGIN; SELECT pg_advisory_xact_lock({int(self._lock_key)}), set_config("
                "'idle_in_transaction_session_timeout', "
                f"'{int(self._stall_timeout * 1000)}ms', true); ")

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """One REPEATABLE READ, READ ONLY transaction on this thread's connection: its reads
        all see the store as it was at its first (nested: the outer one's)."""
        c = self._conn()
        if c.info.transaction_status != TransactionStatus.IDLE:
            yield
            return
        try:
            c.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            self._snapshot_begun(c)
        except psycopg.Error as exc:
            with contextlib.suppress(psycopg.Error):
                c.execute("ROLLBACK")
            raise self._translate(exc) from exc
        try:
            yield
        finally:
            with contextlib.suppress(psycopg.Error):  # nothing was written: nothing to lose
                c.execute("ROLLBACK")

    def _snapshot_begun(self, c: psycopg.Connection[tuple[Any, ...]]) -> None:
        """The first statement of a snapshot's transaction: the snapshot starts here."""
        c.execute("SELECT 1").fetchall()

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """Translate psycopg errors of reads done outside ``_read`` (cursors, generators)."""
        try:
            yield
        except psycopg.Error as exc:
            raise self._translate(exc) from exc
        except (UnicodeEncodeError, OverflowError) as exc:
            raise self._unbindable(exc, ()) from None

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """The rows of one query (``%s`` placeholders)."""
        for a in args:
            if type(a) is int and not _INT64[0] <= a < _INT64[1]:
                raise self._unbindable(OverflowError("beyond 64 bits"), args)
        try:
            with self._conn().cursor() as cur:
                cur.execute(sql, args)
                return cur.fetchall() if cur.description is not None else []
        except psycopg.DataError as exc:
            # What a caller asked for cannot be a stored value (text holding NUL...).
            raise UsageError(f"store {self.url}: cannot look up {_first_odd(args)} "
                             f"({str(exc).strip()})") from None
        except psycopg.Error as exc:
            raise self._translate(exc) from exc
        except (UnicodeEncodeError, OverflowError) as exc:
            raise self._unbindable(exc, args) from None

    def _unbindable(self, exc: Exception, args: Sequence[Any]) -> UsageError:
        """What a caller gives that PostgreSQL cannot bind: text that is not UTF-8 (a lone
        surrogate) or a number beyond 64 bits; a UsageError, not a codec's error."""
        return UsageError(f"store {self.url}: cannot look up {_first_odd(args)} ({exc}); "
                          "ids and names are UTF-8 text, numbers fit in 64 bits")

    def _rk(self, run: str, c: psycopg.Connection[tuple[Any, ...]] | None = None, *,
            create: bool = False) -> int | None:
        """The run's small integer key (cached: a run's key never changes)."""
        rk = self._runs.key(run)
        if rk is not None:
            return rk
        conn = c or self._conn()
        try:
            row = conn.execute("SELECT rk FROM run_keys WHERE id = %s", (run,)).fetchone()
            if row is None and create:
                # Not cached yet: the transaction creating it may still roll back.
                made = conn.execute("INSERT INTO run_keys(id) VALUES(%s) RETURNING rk",
                                    (run,)).fetchone()
                return int(made[0]) if made else None
        except psycopg.Error as exc:
            raise self._translate(exc) from exc
        except UnicodeEncodeError as exc:
            raise self._unbindable(exc, (run,)) from None
        if row is None:
            return None
        return self._runs.remember(run, row[0])

    def _run_id(self, rk: int) -> str:
        run = self._runs.run(rk)
        if run is None:
            run = self._runs.found(rk, self._read("SELECT id FROM run_keys WHERE rk = %s",
                                                  (rk,)))
        return run

    # -- schema ----------------------------------------------------------
    def _version(self) -> int | None:
        """The store's schema version; None when its schema holds no tables at all."""
        tables = {r[0] for r in self._read(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s", (self.schema,))}
        if not tables:
            return None
        if "meta" not in tables:
            raise StoreCorrupt(f"store {self.url}: schema {self.schema} holds tables but not a "
                               "tether store (no meta table); pass the right ?schema=")
        row = self._read("SELECT value FROM meta WHERE key = 'schema_version'")
        return int(row[0][0]) if row else 0

    def _open(self, *, create: bool) -> None:
        version = self._version()
        if version == pg_schema.VERSION:
            return  # up to date: opening takes no lock
        if version is not None and version > pg_schema.VERSION:
            raise SchemaTooNew(f"store {self.url} has schema version {version}, this tether "
                               f"knows up to {pg_schema.VERSION}; upgrade tether")
        if version is None and not create:
            raise StoreMissing(f"no tether store in schema {self.schema} of {self.url}; pass the "
                             "right ?schema=, or create the store (any command that writes, "
                             "e.g. tether run, creates it)")
        if self.readonly:
            raise StoreError(f"store {self.url} has schema version {version} and needs an "
                             f"upgrade to {pg_schema.VERSION}, which writes; this command only "
                             "reads. Run a command that writes (e.g. tether worker --until-idle) "
                             "first")
        with self._tx() as c:
            c.execute(pg_sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                pg_sql.Identifier(self.schema)))
            now = self._version()  # under the lock: another process may have made it
            if now is None:
                for stmt in pg_schema.CREATE:
                    c.execute(stmt)
                c.execute("INSERT INTO meta VALUES('x.fingerprint_key', %s)",
                          (secrets.token_hex(32),))
                now = pg_schema.BASE_VERSION
            for v in range(now, pg_schema.VERSION):
                for stmt in pg_schema.UPGRADES[v]:
                    c.execute(stmt)
            c.execute("INSERT INTO meta VALUES('schema_version', %s) ON CONFLICT(key) "
                      "DO UPDATE SET value = excluded.value", (str(pg_schema.VERSION),))
            if now < pg_schema.VERSION:
                self._migrated(c, now)

    def _migrated(self, c: psycopg.Connection[tuple[Any, ...]], old: int) -> None:
        """Data steps of an upgrade from schema version ``old``, in its transaction
        (subclasses that own the data add theirs)."""

    def check_integrity(self) -> list[str]:
        """What PostgreSQL can say of the store's structure: every table of the schema
        present, every index valid (a failed concurrent build leaves an invalid one), the
        schema version this code writes. Pages and checksums are the server's to check
        (``initdb --data-checksums``, ``amcheck``); empty when sound."""
        problems: list[str] = []
        tables = {r[0] for r in self._read(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s", (self.schema,))}
        problems += [f"table {t} is missing" for t in pg_schema.TABLES if t not in tables]
        problems += [f"index {r[0]} is invalid; REINDEX it" for r in self._read(
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s "
            "AND NOT (i.indisvalid AND i.indisready)", (self.schema,))]
        if "meta" in tables:
            row = self._read("SELECT value FROM meta WHERE key = 'schema_version'")
            if not row or row[0][0] != str(pg_schema.VERSION):
                problems.append(f"schema version is {row[0][0] if row else 'missing'}, "
                                f"not {pg_schema.VERSION}")
        return problems[:100]

    def close(self) -> None:
        with self._conns_lock:
            for c in self._conns:
                with contextlib.suppress(psycopg.Error):
                    c.close()
            self._conns.clear()
        self._local = threading.local()


def _first_odd(args: Sequence[Any]) -> str:
    """The first argument PostgreSQL cannot bind or store, quoted and cut short."""
    for a in args:
        if isinstance(a, int) and not _INT64[0] <= a < _INT64[1]:
            return repr(a)[:40]
        if isinstance(a, str) and ("\x00" in a or not a.isascii()):
            try:
                a.encode("utf-8")
            except UnicodeEncodeError:
                return repr(a)[:40]
            if "\x00" in a:
                return repr(a)[:40]
    return "a value"

