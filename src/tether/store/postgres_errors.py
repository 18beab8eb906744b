"""psycopg's errors as tether's: the PostgreSQL store lets no raw psycopg error out.

Classified by SQLSTATE (and psycopg's classes for them); a connection that failed has
none. Every message names the store (its URL without a password, and its schema) and says
what to do; where a write failed, that nothing journaled is lost.
"""

from __future__ import annotations

import psycopg
from psycopg import errors as pg_errors

from tether.errors import StorageError, StorageFull, StoreCorrupt, StoreError, StoreLocked


def translate(exc: BaseException, where: str, schema: str, *, lock_timeout: float,
              stall_timeout: float) -> StoreError:
    """tether's error for ``exc``, raised by the store named ``where`` (``store URL
    (schema S)``)."""
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    state = getattr(exc, "sqlstate", None) or ""
    if isinstance(exc, (pg_errors.LockNotAvailable, pg_errors.DeadlockDetected)):
        return StoreLocked(f"{where} is locked by another writer for more than "
                           f"{lock_timeout:g}s; retry, or find the stuck process "
                           "(pg_stat_activity shows who holds the lock)")
    if isinstance(exc, pg_errors.DiskFull) or state == "53100":
        return StorageFull(f"{where}: the database server's disk is full ({msg}); free space "
                           "on it, then run again; nothing journaled is lost and this write "
                           "changed nothing")
    if isinstance(exc, pg_errors.ReadOnlySqlTransaction):
        return StoreError(f"{where} is open read-only and this command tried to write to it "
                          f"({msg}); use a command that writes, with a role that may")
    if isinstance(exc, pg_errors.InsufficientPrivilege):
        return StoreError(f"{where}: permission denied ({msg}); grant the role of the URL "
                          f"rights on schema {schema}, or use its owner")
    if isinstance(exc, pg_errors.IdleInTransactionSessionTimeout):
        return StorageError(f"{where}: this process stalled for more than "
                            f"{stall_timeout:g}s inside a write transaction (paused or "
                            "frozen?) and the server ended its session, rolling the "
                            "transaction back to free the store for others; run again")
    return _server_or_link(exc, where, msg, state)


def _server_or_link(exc: BaseException, where: str, msg: str, state: str) -> StoreError:
    """The rest: a cancelled statement, a failing server, a lost link, missing tables."""
    if isinstance(exc, pg_errors.QueryCanceled):
        return StoreError(f"{where}: a statement was cancelled ({msg}); if the URL or the "
                          "role sets statement_timeout, raise it; nothing was written")
    if state.startswith(("53", "58")):
        return StorageError(f"{where}: the database server failed ({msg}); check its log "
                            "and its disk, then run again; nothing journaled is lost and "
                            "this write changed nothing")
    if isinstance(exc, psycopg.OperationalError) and (not state or state.startswith(
            ("08", "57P"))):
        return StorageError(f"{where}: cannot reach the database ({msg}); check that the "
                            "server runs and accepts connections from here, the host, port, "
                            "database name and credentials (PGPASSWORD or ~/.pgpass); "
                            "nothing journaled is lost and this write changed nothing")
    if isinstance(exc, (pg_errors.UndefinedTable, pg_errors.InvalidSchemaName)):
        return StoreCorrupt(f"{where} is missing tether's tables ({msg}); pass the right "
                            "?schema=, or restore the store from a backup")
    return StoreError(f"{where}: {msg}")
