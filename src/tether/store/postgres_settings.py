"""The PostgreSQL store's share of the store chain (operator settings, core/settings.py).

The port of :mod:`tether.store.sqlite_settings`. An append reads the chain's head and
writes the next event inside one write transaction holding the store's write lock
(``PGBase._tx``), so two operators applying at once get two events in some order,
never a fork of the chain. The same transaction commits a batch naming the event, so
the batch chain covers the store chain too. Erasure, which appends to the chain as
well, is :mod:`tether.store.postgres_erase`.
"""

from __future__ import annotations

from typing import Any

import psycopg

from tether.core.canonical import dumps, loads
from tether.core.events import BATCH_GENESIS, batch_hash, payload_digest
from tether.core.identity import TOKEN_KINDS
from tether.core.ids import parse_iso
from tether.core.settings import STORE_CHAIN, STORE_GENESIS, SWARM_KINDS, StoreEvent, make_store_event
from tether.store.postgres_tokens import PGTokens
from tether.store.sqlite_settings import STORE_EVENT_COLS


def append_chain(c: psycopg.Connection[Any], store_rk: int, kind: str, scope: str, payload: Any,
                 *, actor: str, time: str, id: str) -> StoreEvent:
    """Append one event to the store chain and the batch naming it, on ``c`` inside its
    write transaction; ``store_rk``: the store chain's run key (``_rk(STORE_CHAIN, c,
    create=True)``)."""
    row = c.execute("SELECT n, hash FROM store_events ORDER BY n DESC LIMIT 1").fetchone()
    head = (int(row[0]), bytes(row[1]).hex()) if row else None
    e = make_store_event(head, id=id, kind=kind, scope=scope, time=time, actor=actor,
                         payload=payload)
    c.execute(f"INSERT INTO store_events({STORE_EVENT_COLS}) VALUES(%s,%s,%s,%s,%s,%s,%s,%s)",
              (e.n, e.id, e.kind, e.scope, e.time, e.actor, dumps(e.payload),
               bytes.fromhex(e.hash)))
    last = c.execute("SELECT n, hash FROM batches ORDER BY n DESC LIMIT 1").fetchone()
    n, prev = (int(last[0]) + 1, bytes(last[1]).hex()) if last else (1, BATCH_GENESIS)
    h = batch_hash(prev, [(STORE_CHAIN, e.n, e.hash)])
    c.execute("INSERT INTO batches(n, hash, entries) VALUES(%s,%s,%s)",
              (n, bytes.fromhex(h), dumps([(store_rk, e.n, e.n)])))
    return e


class PGSettings(PGTokens):
    """Appending to and reading the store chain, and the swarms' rows it projects to."""

    def append_store_event(self, kind: str, scope: str, payload: Any, *, actor: str, time: str,
                           id: str) -> StoreEvent:
        """Append one event to the store chain (and its batch) in one transaction; a swarm
        setting (:data:`SWARM_KINDS`) updates the swarm's row, a token's event its row, in
        the same transaction."""
        field = SWARM_KINDS.get(kind)
        if field is not None and not (scope.startswith("swarm:") and isinstance(payload, dict)
                                      and isinstance(payload.get(field), dict)):
            raise ValueError(f"store event {kind}: needs scope 'swarm:NAME' and payload "
                             f"{{{field!r}: {{...}}}}, got scope {scope!r}")
        with self._tx() as c:
            if kind in TOKEN_KINDS:  # checked and written first: a refusal appends nothing
                self._project_token(c, kind, payload, time=time, actor=actor)
            e = self._append_store_event(c, kind, scope, payload, actor=actor, time=time, id=id)
            if field is not None:
                # The row is the chain's projection: what workers read when they take a run.
                c.execute(f"INSERT INTO swarms(name, budget, updated, pause_points) "
                          f"VALUES(%s,%s,%s,%s) ON CONFLICT(name) DO UPDATE SET "
                          f"{field} = excluded.{field}, updated = excluded.updated",
                          (scope[6:], dumps(payload.get("budget", {})), parse_iso(time),
                           dumps(payload["pause_points"]) if field == "pause_points" else None))
        return e

    def _append_store_event(self, c: psycopg.Connection[Any], kind: str, scope: str,
                            payload: Any, *, actor: str, time: str, id: str) -> StoreEvent:
        rk = self._rk(STORE_CHAIN, c, create=True)
        assert rk is not None
        return append_chain(c, rk, kind, scope, payload, actor=actor, time=time, id=id)

    def swarm_rows(self) -> dict[str, dict[str, Any]]:
        """Every swarm's row: name -> ``{"budget": ..., "pause_points": ... or None}``."""
        return {r[0]: {"budget": loads(r[1]),
                       "pause_points": None if r[2] is None else loads(r[2])}
                for r in self._read("SELECT name, budget, pause_points FROM swarms")}

    def store_events(self, *, after: int = 0) -> list[StoreEvent]:
        """The store chain from event ``after`` + 1 on, in order."""
        # Workers ask every scheduling pass and almost always get nothing: one indexed read.
        rows = self._read(f"SELECT {STORE_EVENT_COLS} FROM store_events WHERE n > %s "
                          "ORDER BY n", (after,))
        if not rows:
            return []
        prev = STORE_GENESIS
        if after > 0:
            # The link is the previous row's hash: a removed or changed row breaks it.
            before = self._read("SELECT hash FROM store_events WHERE n = %s", (after,))
            prev = bytes(before[0][0]).hex() if before else ""
        out = []
        for r in rows:
            try:
                payload = loads(r[6])
            except ValueError:  # damaged outside tether: keep it readable, let the hash say so
                payload = {"unreadable": bytes(r[6]).hex()}
            h = bytes(r[7]).hex()
            out.append(StoreEvent(n=r[0], id=r[1], kind=r[2], scope=r[3], time=r[4], actor=r[5],
                                  payload=payload, payload_hash=payload_digest(payload),
                                  prev=prev, hash=h))
            prev = h
        return out
