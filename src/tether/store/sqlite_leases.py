"""The SQLite store's leases, and which runs are runnable.

A run is owned by at most one process: a lease with an expiry and a fencing
token that only grows (a released lease keeps its row, so the next token is
still larger), checked by every write of the run (``SQLiteStore.commit``). Who gets
a lease is :func:`tether.store.leases.granted_token`.
"""

from __future__ import annotations

from collections.abc import Sequence

from tether.store.leases import granted_token
from tether.store.sqlite_base import SQLiteBase


class SQLiteLeases(SQLiteBase):
    """Leases and what is runnable (mixed into SQLiteStore)."""

    # -- leases ----------------------------------------------------------
    def acquire(self, run: str, owner: str, ttl: float, now: float) -> int | None:
        return self.acquire_many([run], owner, ttl, now).get(run)

    def acquire_many(self, runs: Sequence[str], owner: str, ttl: float,
                     now: float) -> dict[str, int]:
        # One transaction (one fsync) for a whole scheduling pass.
        got: dict[str, int] = {}
        with self._tx() as c:
            for run in runs:
                row = c.execute("SELECT owner, token, expires FROM leases WHERE run = ?",
                                (run,)).fetchone()
                token = granted_token(row, owner, now)
                if token is None:
                    continue
                c.execute("INSERT OR REPLACE INTO leases VALUES(?,?,?,?)",
                          (run, owner, token, now + ttl))
                got[run] = token
        return got

    def renew(self, leases: dict[str, int], owner: str, ttl: float, now: float) -> list[str]:
        lost = []
        with self._tx() as c:
            for run, token in leases.items():
                # expires = 0 is a released lease: a renewal racing the release must not
                # bring it back (the run would look held, and not runnable, until it expired).
                cur = c.execute("UPDATE leases SET expires = ? WHERE run = ? AND owner = ? "
                                "AND token = ? AND expires > 0", (now + ttl, run, owner, token))
                if cur.rowcount == 0:
                    lost.append(run)
        return lost

    def release(self, run: str, owner: str, token: int) -> None:
        # Keep the row so the next token is still larger: fencing tokens never repeat.
        with self._tx() as c:
            c.execute("UPDATE leases SET expires = 0 WHERE run = ? AND owner = ? AND token = ?",
                      (run, owner, token))

    def lease_of(self, run: str) -> tuple[str, int, float] | None:
        rows = self._read("SELECT owner, token, expires FROM leases WHERE run = ?", (run,))
        return (rows[0][0], rows[0][1], rows[0][2]) if rows else None

    def runnable(self, now: float, limit: int, lease_now: float | None = None) -> list[str]:
        ln = self.clock.now() if lease_now is None else lease_now
        rows = self._read(
            "SELECT r.id FROM runs r LEFT JOIN leases l ON l.run = r.id "
            "WHERE (r.status = 'running' OR (r.status IN ('sleeping', 'waiting') AND r.wake_at <= ?) "
            "OR (r.status = 'waiting' AND EXISTS(SELECT 1 FROM messages m WHERE m.recipient = r.id "
            "AND m.status = 'pending'))) "
            "AND (l.run IS NULL OR l.expires <= ?) ORDER BY r.updated LIMIT ?", (now, ln, limit))
        return [r[0] for r in rows]

    def held_by_others(self, owner: str, lease_now: float) -> list[str]:
        rows = self._read(
            "SELECT l.run FROM leases l JOIN runs r ON r.id = l.run WHERE l.owner <> ? "
            "AND l.expires > ? AND r.status IN ('running', 'sleeping', 'waiting') ORDER BY l.run",
            (owner, lease_now))
        return [r[0] for r in rows]

    def next_wake(self) -> float | None:
        rows = self._read("SELECT MIN(wake_at) FROM runs WHERE status IN ('sleeping', 'waiting')")
        return rows[0][0] if rows else None
