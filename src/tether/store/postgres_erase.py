"""The PostgreSQL store's erasure: an event's payload and every copy of it in the rows,
in one transaction with the ``payload.erased`` store event that records it.

What changes, and why, is :mod:`tether.store.erase_rows` (rules in ``core/erasure.py``),
the same as on SQLite; here is only its SQL (:class:`PGErasure`), the transaction, and
the vacuum after it.

Bytes on disk: PostgreSQL keeps an updated row's old version in the heap (a large
value's in its TOAST table) until ``VACUUM``; the erasure vacuums the tables it
rewrote once it has committed, which removes those versions where no older snapshot
still needs them. It cannot reach the WAL, its archives or the file system's freed
blocks (docs/audit.md, "Bytes on disk").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import psycopg
from psycopg import pq, sql

from tether.core.ids import ulid_bytes
from tether.core.settings import ERASED_KIND, STORE_CHAIN, STORE_SCOPE, StoreEvent
from tether.store.erase_rows import ErasureRows, Where
from tether.store.postgres_base import PGBase
from tether.store.postgres_send import execute_whole
from tether.store.postgres_settings import append_chain
from tether.store.rows import id_key

_Conn = psycopg.Connection[Any]

_VACUUMED = ("events", "messages", "versions", "effects", "approvals", "outbox", "runs",
             "checkpoints", "chunks")
"""The tables an erasure may rewrite, vacuumed after it when it changed them."""


class PGErase(PGBase):
    """``erase`` (mixed into PostgresStore)."""

    def erase(self, event_id: str, *, reason: str, actor: str, time: str,
              id: str) -> StoreEvent:
        """Erase an event's payload and every copy of it in the projections, in one
        transaction with the ``payload.erased`` store event that records it."""
        e = self._erase(id_key(event_id), event_id, reason=reason, actor=actor, time=time,
                        id=id)
        self._vacuum(["events", *(k.split(".")[0] for k in e.payload.get("rows", {}))])
        return e

    def _erase(self, key: bytes | None, event_id: str, *, reason: str, actor: str, time: str,
               id: str) -> StoreEvent:
        with self._tx() as c:
            record = PGErasure(c).erase(key, event_id, store=self.url, reason=reason, time=time,
                                        run_of=self._run_id)
            store_rk = self._rk(STORE_CHAIN, c, create=True)
            assert store_rk is not None
            return append_chain(c, store_rk, ERASED_KIND, STORE_SCOPE, record, actor=actor,
                                time=time, id=id)

    def _vacuum(self, tables: list[str]) -> None:
        """Reclaim the old row versions an erasure left (see the module), best effort.
        Only outside a transaction (VACUUM cannot run inside one): an erasure nested in
        a caller's transaction leaves them to autovacuum."""
        c = self._conn()
        if c.info.transaction_status != pq.TransactionStatus.IDLE:
            return
        for t in sorted(set(tables) & set(_VACUUMED)):
            try:
                c.execute(sql.SQL("VACUUM {}").format(sql.Identifier(t)))
            except psycopg.Error:
                # The erasure has committed: a VACUUM that cannot run now (the lock timeout
                # passed, a role that does not own the table) must not make it look failed,
                # and a retry refused ("erased already"). Autovacuum reclaims them later.
                continue


_WHERE: Final[dict[Where, str]] = {
    "id": "id = %s",
    "board": "event = %s AND ns LIKE 'board:%%'",
    "step": "run = %s AND epoch = %s AND step = %s AND idx = %s",
    "edited": "id = %s AND edited_arguments IS NOT NULL",
}


def _holding(column: str, n: int) -> str:
    """A condition true of a row whose ``column`` (bytea) contains one of ``n`` byte
    patterns (``position`` on bytea: a byte search, no JSON decoded)."""
    return "(" + " OR ".join(f"position(%s IN {column}) > 0" for _ in range(n)) + ")"


class PGErasure(ErasureRows):
    """An erasure's rows on connection ``c``, inside its write transaction."""

    def __init__(self, c: _Conn) -> None:
        self.c = c

    def event_row(self, key: bytes) -> Sequence[Any] | None:
        return self.c.execute("SELECT rk, kind, payload, causes, epoch, step FROM events "
                              "WHERE id = %s", (key,)).fetchone()

    def drop_payload(self, key: bytes, digest: bytes) -> None:
        self.c.execute("UPDATE events SET payload_hash = %s, payload = NULL WHERE id = %s",
                       (digest, key))

    def run_position(self, run: str) -> Sequence[Any] | None:
        return self.c.execute("SELECT epoch, step, status FROM runs WHERE id = %s",
                              (run,)).fetchone()

    def blank(self, table: str, column: str, where: Where, value: bytes,
              key: tuple[Any, ...]) -> int:
        if where == "step" and not isinstance(key[-1], int):
            # An index that is no integer matches no approval; PostgreSQL would refuse to
            # compare it with the integer column rather than say so.
            return 0
        n = execute_whole(self.c, f"UPDATE {table} SET {column} = %s WHERE {_WHERE[where]}",
                          (value, *key)).rowcount
        return max(n, 0)

    def undo_of(self, effect: str) -> Any:
        row = self.c.execute("SELECT undo FROM effects WHERE id = %s AND undo IS NOT NULL",
                             (effect,)).fetchone()
        return None if row is None else row[0]

    def set_undo(self, effect: str, undo: bytes) -> None:
        execute_whole(self.c, "UPDATE effects SET undo = %s WHERE id = %s", (undo, effect))

    def outbox_holding(self, pats: list[bytes]) -> list[tuple[Any, ...]]:
        return self.c.execute(f"SELECT id, body FROM outbox WHERE "
                              f"{_holding('body', len(pats))}", pats).fetchall()

    def set_outbox(self, note: str, body: bytes) -> None:
        execute_whole(self.c, "UPDATE outbox SET body = %s WHERE id = %s", (body, note))

    def reason_of(self, run: str) -> Sequence[Any] | None:
        return self.c.execute("SELECT reason FROM runs WHERE id = %s", (run,)).fetchone()

    def set_reason(self, run: str, reason: str) -> None:
        self.c.execute("UPDATE runs SET reason = %s WHERE id = %s", (reason, run))

    def events_holding(self, pats: list[bytes], ev: str, limit: int) -> list[bytes]:
        return [r[0] for r in self.c.execute(
            f"SELECT id FROM events WHERE payload IS NOT NULL AND id != %s AND "
            f"{_holding('payload', len(pats))} ORDER BY rowid LIMIT {int(limit)}",
            [ulid_bytes(ev), *pats]).fetchall()]

    def chunks_holding(self, pats: list[bytes]) -> list[tuple[Any, ...]]:
        return self.c.execute(f"SELECT hash, body FROM chunks WHERE "
                              f"{_holding('body', len(pats))}", pats).fetchall()

    def count_chunks_holding(self, pats: list[bytes]) -> int:
        row = self.c.execute(f"SELECT count(*) FROM chunks WHERE "
                             f"{_holding('body', len(pats))}", pats).fetchone()
        return int(row[0]) if row else 0

    def is_state_chunk(self, name: str) -> bool:
        h = name.encode()
        c = self.c
        return (c.execute("SELECT 1 FROM checkpoints WHERE kind = 'key' AND "
                          "position(%s IN body) > 0 LIMIT 1", (h,)).fetchone() is not None
                and c.execute("SELECT 1 FROM effects WHERE position(%s IN undo) > 0 LIMIT 1",
                              (h,)).fetchone() is None
                and c.execute("SELECT 1 FROM events WHERE position(%s IN payload) > 0 LIMIT 1",
                              (h,)).fetchone() is None)

    def add_chunk(self, name: str, body: bytes) -> None:
        execute_whole(self.c, "INSERT INTO chunks(hash, body) VALUES(%s,%s) "
                      "ON CONFLICT DO NOTHING", (name, body))

    def drop_chunks(self, names: list[str]) -> None:
        self.c.execute("DELETE FROM chunks WHERE hash = ANY(%s)", (names,))

    def checkpoints_holding(self, pats: list[bytes]) -> list[tuple[Any, ...]]:
        return self.c.execute("SELECT rowid, rk, epoch, step, kind, body FROM checkpoints "
                              f"WHERE {_holding('body', len(pats))} ORDER BY rk, epoch, step",
                              pats).fetchall()

    def set_checkpoint(self, rowid: int, body: bytes) -> None:
        execute_whole(self.c, "UPDATE checkpoints SET body = %s WHERE rowid = %s",
                      (body, rowid))

    def lease_live(self, run: str, now: float) -> bool:
        return self.c.execute("SELECT 1 FROM leases WHERE run = %s AND expires > %s",
                              (run, now)).fetchone() is not None

    def expire_leases(self, runs: list[str]) -> None:
        # One statement, not a pipelined batch inside the write lock (see insert_rows).
        self.c.execute("UPDATE leases SET token = token + 1, expires = 0 WHERE run = ANY(%s)",
                       (list(runs),))
