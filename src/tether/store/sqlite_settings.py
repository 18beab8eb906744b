"""The SQLite store's share of the store chain (operator settings, core/settings.py).

An append reads the chain's head and writes the next event inside one
``BEGIN IMMEDIATE`` transaction, so two operators applying at once get two
events in some order, never a fork of the chain. The same transaction commits
a batch naming the event, so the batch chain covers the store chain too.
"""

from __future__ import annotations

from typing import Any

from tether.core.canonical import dumps, loads
from tether.core.events import BATCH_GENESIS, batch_hash, payload_digest
from tether.core.settings import STORE_CHAIN, STORE_GENESIS, StoreEvent, make_store_event
from tether.store.sqlite_base import SQLiteBase

STORE_EVENT_COLS = "n, id, kind, scope, time, actor, payload, hash"


class SQLiteSettings(SQLiteBase):
    """Appending to and reading the store chain."""

    def append_store_event(self, kind: str, scope: str, payload: Any, *, actor: str, time: str,
                           id: str) -> StoreEvent:
        """Append one event to the store chain (and its batch) in one transaction."""
        with self._tx() as c:
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
