"""The SQLite store's share of the store chain (operator settings, core/settings.py).

An append reads the chain's head and writes the next event inside one
``BEGIN IMMEDIATE`` transaction, so two operators applying at once get two
events in some order, never a fork of the chain. The same transaction commits
a batch naming the event, so the batch chain covers the store chain too.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from tether.core.canonical import loads
from tether.core.ids import UlidSource, iso
from tether.core.settings import (
    ERASED_KIND,
    STORE_CHAIN,
    STORE_GENESIS,
    STORE_SCOPE,
    StoreEvent,
    make_store_event,
)
from tether.store.chains import (
    STORE_EVENT_COLS,
    StoreChainAppend,
    row_swarm,
    store_batch,
    store_event_values,
    store_events_from,
    store_head,
)
from tether.store.rows import id_key
from tether.store.schema import SWARMS_JOURNALED
from tether.store.sqlite_erase import SQLiteErasure
from tether.store.sqlite_tokens import SQLiteTokens


class SQLiteSettings(SQLiteTokens, StoreChainAppend):
    """Appending to and reading the store chain."""

    def _set_swarm(self, c: sqlite3.Connection, field: str, values: tuple[Any, ...]) -> None:
        c.execute(f"INSERT INTO swarms(name, budget, updated, pause_points) "
                  f"VALUES(?,?,?,?) ON CONFLICT(name) DO UPDATE SET "
                  f"{field} = excluded.{field}, updated = excluded.updated", values)

    def _append_store_event(self, c: sqlite3.Connection, kind: str, scope: str, payload: Any, *,
                            actor: str, time: str, id: str) -> StoreEvent:
        row = c.execute("SELECT n, hash FROM store_events ORDER BY n DESC LIMIT 1").fetchone()
        e = make_store_event(store_head(row), id=id, kind=kind, scope=scope, time=time, actor=actor,
                             payload=payload)
        c.execute(f"INSERT INTO store_events({STORE_EVENT_COLS}) VALUES(?,?,?,?,?,?,?,?)",
                  store_event_values(e))
        rk = self._rk(STORE_CHAIN, c, create=True)
        last = c.execute("SELECT n, hash FROM batches ORDER BY n DESC LIMIT 1").fetchone()
        assert rk is not None
        c.execute("INSERT INTO batches VALUES(?,?,?)", store_batch(last, e, rk))
        return e

    def _migrated(self, c: sqlite3.Connection, old: int) -> None:
        super()._migrated(c, old)
        if 0 < old < SWARMS_JOURNALED:
            # Rows an older tether wrote directly: journal them as they stand, by the
            # migration, at the time each row was last set, so the chain covers them.
            for name, budget, updated, points in c.execute(
                    "SELECT name, budget, updated, pause_points FROM swarms ORDER BY name"
                    ).fetchall():
                t = float(updated)
                ids = UlidSource(lambda t=t: t)  # type: ignore[misc]
                for field, raw in (("budget", budget), ("pause_points", points)):
                    if raw is not None:
                        self._append_store_event(c, f"swarm.{field}", f"swarm:{name}",
                                                 {field: loads(raw)}, actor="system:migration",
                                                 time=iso(t), id=ids.new())

    def erase(self, event_id: str, *, reason: str, actor: str, time: str,
              id: str) -> StoreEvent:
        """Erase an event's payload and every copy of it in the projections, in one
        transaction with the ``payload.erased`` store event that records it."""
        key = id_key(event_id)
        # The old bytes must not stay in the file's free pages, nor in the WAL's copies of
        # the pages: overwrite what is deleted, then checkpoint the WAL into the file.
        self._conn().execute("PRAGMA secure_delete = ON")
        try:
            e = self._erase(key, event_id, reason=reason, actor=actor, time=time, id=id)
        finally:
            self._conn().execute("PRAGMA secure_delete = OFF")
        self._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return e

    def _erase(self, key: bytes | None, event_id: str, *, reason: str, actor: str, time: str,
               id: str) -> StoreEvent:
        with self._tx() as c:
            record = SQLiteErasure(c).erase(key, event_id, store=str(self.path), reason=reason,
                                            time=time, run_of=self._run_id)
            return self._append_store_event(c, ERASED_KIND, STORE_SCOPE, record, actor=actor,
                                            time=time, id=id)

    def swarm_rows(self) -> dict[str, dict[str, Any]]:
        """Every swarm's row: name -> ``{"budget": ..., "pause_points": ... or None}``."""
        return {r[0]: row_swarm(r)
                for r in self._read("SELECT name, budget, pause_points FROM swarms")}

    def store_events(self, *, after: int = 0) -> list[StoreEvent]:
        """The store chain from event ``after`` + 1 on, in order."""
        # Workers ask every scheduling pass and almost always get nothing: one indexed read.
        rows = self._read(f"SELECT {STORE_EVENT_COLS} FROM store_events WHERE n > ? ORDER BY n",
                          (after,))
        if not rows:
            return []
        prev = STORE_GENESIS
        if after > 0:
            # The link is the previous row's hash: a removed or changed row breaks it.
            before = self._read("SELECT hash FROM store_events WHERE n = ?", (after,))
            prev = bytes(before[0][0]).hex() if before else ""
        return store_events_from(rows, prev)
