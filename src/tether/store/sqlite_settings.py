"""The SQLite store's share of the store chain (operator settings, core/settings.py).

An append reads the chain's head and writes the next event inside one
``BEGIN IMMEDIATE`` transaction, so two operators applying at once get two
events in some order, never a fork of the chain. The same transaction commits
a batch naming the event, so the batch chain covers the store chain too.
"""

from __future__ import annotations

import hashlib
import sqlite3
from typing import Any

from tether.core.canonical import dumps, loads
from tether.core.erasure import REPLAYED
from tether.core.events import BATCH_GENESIS, batch_hash, payload_digest
from tether.core.identity import TOKEN_KINDS
from tether.core.ids import UlidSource, iso, parse_iso, ulid_str
from tether.core.settings import (
    ERASED_KIND,
    STORE_CHAIN,
    STORE_GENESIS,
    STORE_SCOPE,
    SWARM_KINDS,
    StoreEvent,
    make_store_event,
)
from tether.core.statuses import CLOSED_STATUSES
from tether.errors import NotFound, UsageError
from tether.store.schema import SWARMS_JOURNALED
from tether.store.sqlite_erase import erase_copies
from tether.store.sqlite_rows import id_key
from tether.store.sqlite_tokens import SQLiteTokens

STORE_EVENT_COLS = "n, id, kind, scope, time, actor, payload, hash"


class SQLiteSettings(SQLiteTokens):
    """Appending to and reading the store chain."""

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
                          f"VALUES(?,?,?,?) ON CONFLICT(name) DO UPDATE SET "
                          f"{field} = excluded.{field}, updated = excluded.updated",
                          (scope[6:], dumps(payload.get("budget", {})), parse_iso(time),
                           dumps(payload["pause_points"]) if field == "pause_points" else None))
        return e

    def _append_store_event(self, c: sqlite3.Connection, kind: str, scope: str, payload: Any, *,
                            actor: str, time: str, id: str) -> StoreEvent:
        row = c.execute("SELECT n, hash FROM store_events ORDER BY n DESC LIMIT 1").fetchone()
        head = (int(row[0]), bytes(row[1]).hex()) if row else None
        e = make_store_event(head, id=id, kind=kind, scope=scope, time=time, actor=actor,
                             payload=payload)
        c.execute(f"INSERT INTO store_events({STORE_EVENT_COLS}) VALUES(?,?,?,?,?,?,?,?)",
                  (e.n, e.id, e.kind, e.scope, e.time, e.actor, dumps(e.payload),
                   bytes.fromhex(e.hash)))
        rk = self._rk(STORE_CHAIN, c, create=True)
        last = c.execute("SELECT n, hash FROM batches ORDER BY n DESC LIMIT 1").fetchone()
        n, prev = (last[0] + 1, bytes(last[1]).hex()) if last else (1, BATCH_GENESIS)
        h = batch_hash(prev, [(STORE_CHAIN, e.n, e.hash)])
        c.execute("INSERT INTO batches VALUES(?,?,?)",
                  (n, bytes.fromhex(h), dumps([(rk, e.n, e.n)])))
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
            row = c.execute("SELECT rk, kind, payload, causes, epoch, step FROM events "
                            "WHERE id = ?", (key,)).fetchone() if key is not None else None
            if row is None or key is None:
                raise NotFound(f"no event {event_id!r} in {self.path}; `tether events RUN` "
                               "lists a run's events with their ids")
            rk, kind, payload, causes, epoch, step = row
            if payload is None:
                raise UsageError(f"event {event_id}: its payload is erased already")
            ev = ulid_str(key)  # the id as stored, whatever case was given
            run = self._run_id(rk)
            copies = erase_copies(c, ev, run, kind, loads(payload), loads(causes), epoch, step,
                                  run_of=self._run_id, now=parse_iso(time))
            # Keep the payload's hash: the chain still verifies without the payload.
            c.execute("UPDATE events SET payload_hash = ?, payload = NULL WHERE id = ?",
                      (hashlib.sha256(bytes(payload)).digest(), key))
            record: dict[str, Any] = {"event": ev, "run": run, "kind": kind, "epoch": epoch,
                                      "step": step, "reason": reason, **copies}
            in_flight = kind in REPLAYED and self._in_flight(c, run, epoch, step)
            if in_flight:
                record["in_flight"] = True
            return self._append_store_event(c, ERASED_KIND, STORE_SCOPE, record, actor=actor,
                                            time=time, id=id)

    @staticmethod
    def _in_flight(c: sqlite3.Connection, run: str, epoch: int, step: int) -> bool:
        """Whether (epoch, step) is the step a run that can still go on has not completed:
        resuming it replays that step's journal, which an erased payload leaves short."""
        row = c.execute("SELECT epoch, step, status FROM runs WHERE id = ?", (run,)).fetchone()
        return (row is not None and row[0] == epoch and step > row[1]
                and row[2] not in CLOSED_STATUSES)

    def swarm_rows(self) -> dict[str, dict[str, Any]]:
        """Every swarm's row: name -> ``{"budget": ..., "pause_points": ... or None}``."""
        return {r[0]: {"budget": loads(r[1]),
                       "pause_points": None if r[2] is None else loads(r[2])}
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
