"""The SQLite store's two queues: operators' commands and the notification outbox.

Commands are queued by any process (CLI, web, API) and applied by the run's owner
at its next safe point (``SQLiteStore.commit`` stamps them applied). Notifications
are queued in the same transaction as their events and delivered by the worker's
notifier, each marked delivered or due again later.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tether.core.canonical import dumps, loads
from tether.store.records import Command, Notification
from tether.store.sqlite_base import SQLiteBase

_BY_ID = 32
"""Runs whose pending commands are asked for by id. A worker asks for all the runs it
drives (thousands) every poll: binding as many ids, one index probe each, cost ~0.85 ms
of CPU a poll at 1,000 runs; the pending queue is short (each command is applied at its
run's next safe point), so more runs than this read it whole and filter it here (~0.1 ms)."""


class SQLiteQueues(SQLiteBase):
    """Commands and the outbox (mixed into SQLiteStore)."""

    # -- commands --------------------------------------------------------
    def add_command(self, run: str, kind: str, args: dict[str, object], actor: str,
                    now: float, *, key: str | None = None) -> int:
        if key is not None:  # the common case of a keyed command: queued already, no lock
            got = self._read("SELECT id FROM commands WHERE key = ?", (key,))
            if got:
                return int(got[0][0])
        with self._tx() as c:
            if key is not None:
                got = c.execute("SELECT id FROM commands WHERE key = ?", (key,)).fetchone()
                if got is not None:
                    return int(got[0])
            cur = c.execute("INSERT INTO commands(run, kind, args, actor, created, key) "
                            "VALUES(?,?,?,?,?,?)", (run, kind, dumps(args), actor, now, key))
            return int(cur.lastrowid or 0)

    def pending_commands(self, runs: Sequence[str] | None = None) -> list[Command]:
        if runs is not None and not runs:
            return []
        sql = "SELECT id, run, kind, args, actor, created, applied FROM commands WHERE applied IS NULL"
        args: list[Any] = []
        wanted: set[str] | None = None
        if runs is not None and len(runs) <= _BY_ID:
            sql += f" AND run IN ({','.join('?' * len(runs))})"
            args = list(runs)
        elif runs is not None:
            wanted = set(runs)
        return [Command(r[0], r[1], r[2], loads(r[3]), r[4], r[5], r[6])
                for r in self._read(sql + " ORDER BY id", args)
                if wanted is None or r[1] in wanted]

    # -- outbox ----------------------------------------------------------
    def notify(self, notes: Sequence[Notification]) -> None:
        with self._tx() as c:
            c.executemany("INSERT OR IGNORE INTO outbox(id, kind, body, created, next_at) "
                          "VALUES(?,?,?,?,?)",
                          [(n.id, n.kind, dumps(n.body), n.created, n.created) for n in notes])

    def outbox_due(self, now: float, limit: int = 100) -> list[Notification]:
        rows = self._read("SELECT id, kind, body, created, attempts, next_at, delivered, "
                          "last_error FROM outbox WHERE delivered IS NULL AND next_at <= ? "
                          "ORDER BY next_at LIMIT ?", (now, limit))
        return [Notification(r[0], r[1], loads(r[2]), r[3], r[4], r[5], r[6], r[7]) for r in rows]

    def outbox_mark(self, note_id: str, *, delivered: float | None, next_at: float | None = None,
                    error: str | None = None) -> None:
        with self._tx() as c:
            if delivered is not None:
                c.execute("UPDATE outbox SET delivered = ?, attempts = attempts + 1, "
                          "last_error = NULL WHERE id = ?", (delivered, note_id))
            else:
                c.execute("UPDATE outbox SET attempts = attempts + 1, next_at = ?, "
                          "last_error = ? WHERE id = ?", (next_at, error, note_id))
