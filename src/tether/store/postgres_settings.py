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

from tether.core.settings import STORE_CHAIN, STORE_GENESIS, StoreEvent, make_store_event
from tether.store.chains import (
    STORE_EVENT_COLS,
    StoreChainAppend,
    row_swarm,
    store_batch,
    store_event_values,
    store_events_from,
    store_head,
)
from tether.store.postgres_send import execute_whole
from tether.store.postgres_tokens import PGTokens


def append_chain(c: psycopg.Connection[Any], store_rk: int, kind: str, scope: str, payload: Any,
                 *, actor: str, time: str, id: str) -> StoreEvent:
    """Append one event to the store chain and the batch naming it, on ``c`` inside its
    write transaction; ``store_rk``: the store chain's run key (``_rk(STORE_CHAIN, c,
    create=True)``)."""
    row = c.execute("SELECT n, hash FROM store_events ORDER BY n DESC LIMIT 1").fetchone()
    e = make_store_event(store_head(row), id=id, kind=kind, scope=scope, time=time, actor=actor,
                         payload=payload)
    execute_whole(c, f"INSERT INTO store_events({STORE_EVENT_COLS}) "  # a payload can be large
                  "VALUES(%s,%s,%s,%s,%s,%s,%s,%s)", store_event_values(e))
    last = c.execute("SELECT n, hash FROM batches ORDER BY n DESC LIMIT 1").fetchone()
    c.execute("INSERT INTO batches(n, hash, entries) VALUES(%s,%s,%s)",
              store_batch(last, e, store_rk))
    return e


class PGSettings(PGTokens, StoreChainAppend):
    """Appending to and reading the store chain, and the swarms' rows it projects to."""

    def _set_swarm(self, c: psycopg.Connection[Any], field: str, values: tuple[Any, ...]) -> None:
        c.execute(f"INSERT INTO swarms(name, budget, updated, pause_points) "
                  f"VALUES(%s,%s,%s,%s) ON CONFLICT(name) DO UPDATE SET "
                  f"{field} = excluded.{field}, updated = excluded.updated", values)

    def _append_store_event(self, c: psycopg.Connection[Any], kind: str, scope: str,
                            payload: Any, *, actor: str, time: str, id: str) -> StoreEvent:
        rk = self._rk(STORE_CHAIN, c, create=True)
        assert rk is not None
        return append_chain(c, rk, kind, scope, payload, actor=actor, time=time, id=id)

    def swarm_rows(self) -> dict[str, dict[str, Any]]:
        """Every swarm's row: name -> ``{"budget": ..., "pause_points": ... or None}``."""
        return {r[0]: row_swarm(r)
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
        return store_events_from(rows, prev)
