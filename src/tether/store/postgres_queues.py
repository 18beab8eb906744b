"""The PostgreSQL store's two queues: operators' commands and the notification outbox.

As in SQLite (sqlite_queues): commands are queued by any process and applied by
the run's owner at its next safe point (``PostgresStore.commit`` stamps them
applied); notifications are queued with their events and delivered by the
worker's notifier.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tether.core.canonical import dumps, loads
from tether.store.postgres_base import PGBase
from tether.store.postgres_send import execute_whole, insert_rows
from tether.store.records import Command, Notification


class PGQueues(PGBase):
    """Commands and the outbox (mixed into PostgresStore)."""

    def add_command(self, run: str, kind: str, args: dict[str, object], actor: str,
                    now: float, *, key: str | None = None) -> int:
        if key is not None:  # the common case of a keyed command: queued already, no lock
            got = self._read("SELECT id FROM commands WHERE key = %s", (key,))
            if got:
                return int(got[0][0])
        with self._tx() as c:
            if key is not None:
                again = c.execute("SELECT id FROM commands WHERE key = %s", (key,)).fetchone()
                if again is not None:
                    return int(again[0])
            row = execute_whole(c, "INSERT INTO commands(run, kind, args, actor, created, "
                                "key) VALUES(%s, %s, %s, %s, %s, %s) RETURNING id",
                                (run, kind, dumps(args), actor, now, key)).fetchone()
            assert row is not None  # INSERT ... RETURNING gives its row
            return int(row[0])

    def pending_commands(self, runs: Sequence[str] | None = None) -> list[Command]:
        if runs is not None and not runs:
            return []
        sql = ("SELECT id, run, kind, args, actor, created, applied FROM commands "
               "WHERE applied IS NULL")
        args: list[Any] = []
        if runs is not None:
            # One array parameter, however many runs: the server probes the index per run.
            sql += " AND run = ANY(%s)"
            args = [list(runs)]
        return [Command(r[0], r[1], r[2], loads(r[3]), r[4], r[5], r[6])
                for r in self._read(sql + " ORDER BY id", args)]

    def notify(self, notes: Sequence[Notification]) -> None:
        with self._tx() as c:
            insert_rows(c, "INSERT INTO outbox(id, kind, body, created, next_at)",
                        [(n.id, n.kind, dumps(n.body), n.created, n.created) for n in notes],
                        "ON CONFLICT DO NOTHING")

    def outbox_due(self, now: float, limit: int = 100) -> list[Notification]:
        rows = self._read("SELECT id, kind, body, created, attempts, next_at, delivered, "
                          "last_error FROM outbox WHERE delivered IS NULL AND next_at <= %s "
                          "ORDER BY next_at LIMIT %s", (now, limit if limit >= 0 else None))
        return [Notification(r[0], r[1], loads(r[2]), r[3], r[4], r[5], r[6], r[7])
                for r in rows]

    def outbox_mark(self, note_id: str, *, delivered: float | None, next_at: float | None = None,
                    error: str | None = None) -> None:
        with self._tx() as c:
            if delivered is not None:
                c.execute("UPDATE outbox SET delivered = %s, attempts = attempts + 1, "
                          "last_error = NULL WHERE id = %s", (delivered, note_id))
            else:
                c.execute("UPDATE outbox SET attempts = attempts + 1, next_at = %s, "
                          "last_error = %s WHERE id = %s", (next_at, error, note_id))
