"""The PostgreSQL store's leases, and which runs are runnable.

As in SQLite (sqlite_leases): a run is owned by at most one process, by a lease
with an expiry and a fencing token that only grows (a released lease keeps its
row). Every change is made inside the store's write transaction, which holds the
store's advisory lock: a takeover, a renewal and the fence check of a commit
(``PostgresStore.commit``) are serialized across processes and machines, so a
worker whose lease was taken can never write.
"""

from __future__ import annotations

from collections.abc import Sequence

from tether.store.postgres_base import PGBase


class PGLeases(PGBase):
    """Leases and what is runnable (mixed into PostgresStore)."""

    def acquire(self, run: str, owner: str, ttl: float, now: float) -> int | None:
        return self.acquire_many([run], owner, ttl, now).get(run)

    def acquire_many(self, runs: Sequence[str], owner: str, ttl: float,
                     now: float) -> dict[str, int]:
        # One statement a run, one transaction (one WAL flush) for a scheduling pass: the
        # upsert takes a free or expired lease, or renews our own, and says which it got.
        # Its WHERE and its token are tether.store.leases.granted_token, in SQL, so that a
        # run costs one round trip instead of a read and a write.
        got: dict[str, int] = {}
        with self._tx() as c:
            for run in runs:
                row = c.execute(
                    "INSERT INTO leases AS l VALUES(%s, %s, 1, %s) ON CONFLICT(run) DO UPDATE "
                    "SET owner = excluded.owner, token = l.token + 1, expires = excluded.expires "
                    "WHERE l.expires <= %s OR l.owner = excluded.owner RETURNING token",
                    (run, owner, now + ttl, now)).fetchone()
                if row is not None:
                    got[run] = int(row[0])
        return got

    def renew(self, leases: dict[str, int], owner: str, ttl: float, now: float) -> list[str]:
        lost = []
        with self._tx() as c:
            for run, token in leases.items():
                # expires = 0 is a released lease: a renewal racing the release must not
                # bring it back (the run would look held, and not runnable, until it expired).
                cur = c.execute("UPDATE leases SET expires = %s WHERE run = %s AND owner = %s "
                                "AND token = %s AND expires > 0", (now + ttl, run, owner, token))
                if cur.rowcount == 0:
                    lost.append(run)
        return lost

    def release(self, run: str, owner: str, token: int) -> None:
        # Keep the row so the next token is still larger: fencing tokens never repeat.
        with self._tx() as c:
            c.execute("UPDATE leases SET expires = 0 WHERE run = %s AND owner = %s "
                      "AND token = %s", (run, owner, token))

    def lease_of(self, run: str) -> tuple[str, int, float] | None:
        rows = self._read("SELECT owner, token, expires FROM leases WHERE run = %s", (run,))
        return (rows[0][0], rows[0][1], rows[0][2]) if rows else None

    def runnable(self, now: float, limit: int, lease_now: float | None = None) -> list[str]:
        ln = self.clock.now() if lease_now is None else lease_now
        rows = self._read(
            "SELECT r.id FROM runs r LEFT JOIN leases l ON l.run = r.id "
            "WHERE (r.status = 'running' OR (r.status IN ('sleeping', 'waiting') "
            "AND r.wake_at <= %s) OR (r.status = 'waiting' AND EXISTS(SELECT 1 FROM messages m "
            "WHERE m.recipient = r.id AND m.status = 'pending'))) "
            "AND (l.run IS NULL OR l.expires <= %s) ORDER BY r.updated LIMIT %s",
            (now, ln, limit if limit >= 0 else None))  # LIMIT NULL: none, as SQLite's -1
        return [r[0] for r in rows]

    def held_by_others(self, owner: str, lease_now: float) -> list[str]:
        rows = self._read(
            "SELECT l.run FROM leases l JOIN runs r ON r.id = l.run WHERE l.owner <> %s "
            "AND l.expires > %s AND r.status IN ('running', 'sleeping', 'waiting') ORDER BY l.run",
            (owner, lease_now))
        return [r[0] for r in rows]

    def next_wake(self) -> float | None:
        rows = self._read("SELECT MIN(wake_at) FROM runs WHERE status IN ('sleeping', 'waiting')")
        return rows[0][0] if rows else None
