"""The embedded default store: one SQLite file in WAL mode (see sqlite_base)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tether.core.canonical import dumps, loads
from tether.core.events import BATCH_GENESIS, Event, genesis
from tether.errors import UsageError
from tether.store.chains import all_chunks, batches_from, missing_chunk, next_batch
from tether.store.records import (
    USAGE_KEYS,
    ApprovalRow,
    Batch,
    CheckpointChain,
    EffectRow,
    RunRow,
    Write,
)
from tether.store.rows import (
    APPROVAL_COLS,
    EFFECT_COLS,
    EVENT_COLS,
    RUN_COLS,
    approval_values,
    chained_events,
    effect_values,
    event_values,
    id_key,
    row_approval,
    row_effect,
    row_event,
    row_run,
    run_changes,
    run_values,
    usage_scope,
)
from tether.store.sqlite_copy import SQLiteCopy
from tether.store.sqlite_erase import SQLiteErasure
from tether.store.sqlite_leases import SQLiteLeases
from tether.store.sqlite_links import SQLiteLinks
from tether.store.sqlite_queues import SQLiteQueues
from tether.store.sqlite_seals import SQLiteSeals
from tether.store.sqlite_settings import SQLiteSettings
from tether.store.sqlite_world import SQLiteWorld
from tether.store.writes import apply_writes, fence_refusal


def _filtered(select: str, **equal: str | None) -> tuple[str, list[Any]]:
    """``select`` with ``AND column = ?`` for every filter given (names are ours, not input)."""
    given = {k: v for k, v in equal.items() if v}
    where = " AND ".join(f"{k} = ?" for k in given)
    return (f"{select} WHERE {where}" if where else f"{select} WHERE 1=1"), list(given.values())


class SQLiteStore(SQLiteLeases, SQLiteQueues, SQLiteWorld, SQLiteLinks, SQLiteSettings,
                  SQLiteSeals, SQLiteCopy):
    """A tether store in one SQLite file (implements :class:`tether.store.protocol.Store`).

    Args:
        path: the database file.
        create: create the file if it is missing (otherwise StoreError).
        synchronous: ``FULL`` (default, durable on power loss) or ``NORMAL``.
        busy_timeout: seconds to wait for another writer before StoreLocked.
        readonly: open for reading only: nothing is created, migrated or written.
        clock: the wall clock that stamps applied commands (default: the system's).
    """

    # -- writing ---------------------------------------------------------
    def commit(self, writes: Sequence[Write]) -> list[BaseException | None]:
        with self._tx() as c:
            results, entries, hashes = apply_writes(
                writes, lambda w: self._check_fence(c, w) or self._check_transitions(c, w),
                lambda w: self._apply(c, w))
            if entries:
                last = c.execute("SELECT n, hash FROM batches ORDER BY n DESC LIMIT 1").fetchone()
                c.execute("INSERT INTO batches VALUES(?,?,?)",
                          (*next_batch(last, hashes), dumps(entries)))
        return results

    def _check_fence(self, c: sqlite3.Connection, w: Write) -> BaseException | None:
        row = c.execute("SELECT r.seq, l.token FROM runs r LEFT JOIN leases l ON l.run = r.id "
                        "WHERE r.id = ?", (w.run,)).fetchone()
        return fence_refusal(w, row)

    def _apply(self, c: sqlite3.Connection, w: Write) -> int:
        rk = self._rk(w.run, c, create=True)
        assert rk is not None
        c.executemany(
            f"INSERT INTO events({EVENT_COLS}) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?)",
            [event_values(rk, e) for e in w.events])
        if w.run_row is not None:
            self._write_run(c, w)
        for f in w.effects:
            c.execute(f"INSERT OR REPLACE INTO effects({EFFECT_COLS}) "
                      "VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?)", effect_values(f))
        self._apply_progress(c, w, rk)
        self._apply_requests(c, w)
        self._apply_world(c, w)
        self._apply_links(c, w, rk)
        return rk

    def _apply_progress(self, c: sqlite3.Connection, w: Write, rk: int) -> None:
        """The run's checkpoint (and its new chunks) and the usage it added."""
        if w.chunks:
            c.executemany("INSERT OR IGNORE INTO chunks(hash, body) VALUES(?,?)", w.chunks)
        if w.checkpoint is not None:
            epoch, ck = w.checkpoint
            c.executemany("INSERT OR IGNORE INTO chunks(hash, body) VALUES(?,?)", ck.chunks)
            c.execute("INSERT OR REPLACE INTO checkpoints VALUES(?,?,?,?,?)",
                      (rk, epoch, ck.step, ck.kind, ck.body))
        if w.usage is not None:
            vals = [w.usage.counts.get(k, 0) for k in USAGE_KEYS]
            sets = ", ".join(f"{k} = {k} + excluded.{k}" for k in USAGE_KEYS)
            c.execute(f"INSERT INTO usage(run, bucket, swarm, {', '.join(USAGE_KEYS)}) "
                      f"VALUES(?,?,?,{','.join('?' * len(USAGE_KEYS))}) "
                      f"ON CONFLICT(run, bucket) DO UPDATE SET {sets}",
                      (w.run, w.usage.bucket, w.swarm, *vals))

    def _apply_requests(self, c: sqlite3.Connection, w: Write) -> None:
        """Approvals asked or decided, notifications to send, commands applied."""
        if w.approvals:
            c.executemany(f"INSERT OR REPLACE INTO approvals({APPROVAL_COLS}) "
                          f"VALUES({','.join('?' * 21)})",
                          [approval_values(a) for a in w.approvals])
        if w.notifications:
            c.executemany("INSERT OR IGNORE INTO outbox(id, kind, body, created, next_at) "
                          "VALUES(?,?,?,?,?)",
                          [(n.id, n.kind, dumps(n.body), n.created, n.created)
                           for n in w.notifications])
        if w.commands_applied:
            now = self.clock.now()
            c.executemany("UPDATE commands SET applied = ? WHERE id = ?",
                          [(now, i) for i in w.commands_applied])

    def _write_run(self, c: sqlite3.Connection, w: Write) -> None:
        r = w.run_row
        assert r is not None
        if w.fence is None or w.run_changes is None:
            c.execute(f"INSERT OR REPLACE INTO runs({RUN_COLS}) "
                      "VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                      run_values(r))
            return
        # Only what changed (see run_changes): a plain step rewrites one row, not its indexes.
        cols, vals = run_changes(r, w.run_changes)
        c.execute(f"UPDATE runs SET {', '.join(f'{k} = ?' for k in cols)} WHERE id = ?",
                  (*vals, r.id))

    # -- reading ---------------------------------------------------------
    def get_run(self, run: str) -> RunRow | None:
        rows = self._read(f"SELECT {RUN_COLS} FROM runs WHERE id = ?", (run,))
        return row_run(rows[0]) if rows else None

    def find_runs(self, prefix: str) -> list[str]:
        # substr, not LIKE: '_' and '%' in what a user typed are plain characters (`tether
        # stop _` must not stop the only run). An empty prefix names nothing.
        head = prefix.upper()
        rows = self._read("SELECT id FROM runs WHERE id = ? OR name = ? "
                          "OR (? > 0 AND substr(id, 1, ?) = ?) ORDER BY id",
                          (prefix, prefix, len(head), len(head), head))
        return [r[0] for r in rows]

    def list_runs(self, *, status: str | None = None, swarm: str | None = None) -> list[RunRow]:
        sql, args = _filtered(f"SELECT {RUN_COLS} FROM runs", status=status, swarm=swarm)
        return [row_run(r) for r in self._read(sql + " ORDER BY created DESC, id DESC", args)]

    def events(self, run: str, *, after_seq: int = 0, limit: int | None = None) -> list[Event]:
        rk = self._rk(run)
        if rk is None:
            return []
        sql = f"SELECT {EVENT_COLS} FROM events WHERE rk = ? AND seq > ? ORDER BY seq"
        args: list[Any] = [rk, after_seq]
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        rows = self._read(sql, args)
        prev = genesis(run)
        if rows and after_seq > 0:
            p = self._read("SELECT hash FROM events WHERE rk = ? AND seq = ?", (rk, after_seq))
            prev = bytes(p[0][0]).hex() if p else ""
        return chained_events(rows, run, prev)

    def tail_events(self, run: str, epoch: int, step: int) -> list[Event]:
        rk = self._rk(run)
        if rk is None:
            return []
        # Walk back from the end of the chain: the in-flight step's events are its tail.
        try:
            cur = self._conn().execute(f"SELECT {EVENT_COLS} FROM events WHERE rk = ? "
                                       "ORDER BY seq DESC", (rk,))
            rows = []
            for r in cur:
                if r[3] != epoch or r[4] != step:
                    break
                rows.append(r)
            cur.close()
        except sqlite3.Error as exc:
            raise self._translate(exc) from exc
        return [row_event(r, run) for r in reversed(rows)]

    def event(self, event_id: str) -> Event | None:
        key = id_key(event_id)
        if key is None:
            return None
        rows = self._read(f"SELECT {EVENT_COLS} FROM events WHERE id = ?", (key,))
        return row_event(rows[0], self._run_id(rows[0][0])) if rows else None

    def all_run_ids(self) -> list[str]:
        return sorted(self._run_id(r[0]) for r in self._read("SELECT DISTINCT rk FROM events"))

    def latest_batch(self) -> int:
        rows = self._read("SELECT MAX(n) FROM batches")  # the primary key's last entry
        return int(rows[0][0]) if rows and rows[0][0] is not None else 0

    def batches(self) -> Iterator[Batch]:
        last, prev = 0, BATCH_GENESIS
        while True:
            rows = self._read("SELECT n, hash, entries FROM batches WHERE n > ? ORDER BY n "
                              "LIMIT 1000", (last,))
            if not rows:
                return
            yield from batches_from(rows, prev, self._run_id)
            last, prev = rows[-1][0], bytes(rows[-1][1]).hex()

    def erase_payload(self, event_id: str) -> None:
        with self._tx() as c:
            SQLiteErasure(c).erase_payload(id_key(event_id), event_id, store=str(self.path))

    def approval(self, approval_id: str) -> ApprovalRow | None:
        rows = self._read(f"SELECT {APPROVAL_COLS} FROM approvals WHERE id = ?", (approval_id,))
        return row_approval(rows[0]) if rows else None

    def approvals(self, *, run: str | None = None, status: str | None = None,
                  expired_by: float | None = None) -> list[ApprovalRow]:
        sql, args = _filtered(f"SELECT {APPROVAL_COLS} FROM approvals", run=run, status=status)
        if expired_by is not None:
            sql += " AND expires_at IS NOT NULL AND expires_at <= ?"
            args.append(expired_by)
        return [row_approval(r) for r in self._read(sql + " ORDER BY requested_at, id", args)]

    def effect(self, effect_id: str) -> EffectRow | None:
        rows = self._read(f"SELECT {EFFECT_COLS} FROM effects WHERE id = ?", (effect_id,))
        return row_effect(rows[0]) if rows else None

    def effects(self, *, run: str | None = None, status: str | None = None) -> list[EffectRow]:
        sql, args = _filtered(f"SELECT {EFFECT_COLS} FROM effects", run=run, status=status)
        return [row_effect(r) for r in self._read(sql + " ORDER BY id", args)]

    def checkpoint_chain(self, run: str, epoch: int, step: int) -> CheckpointChain | None:
        rk = self._rk(run)
        key = self._read("SELECT step, body FROM checkpoints WHERE rk = ? AND epoch = ? AND "
                         "step <= ? AND kind = 'key' ORDER BY step DESC LIMIT 1", (rk, epoch, step))
        if not key:
            return None
        deltas = self._read("SELECT body FROM checkpoints WHERE rk = ? AND epoch = ? AND step > ? "
                            "AND step <= ? ORDER BY step", (rk, epoch, key[0][0], step))
        return CheckpointChain(key[0][0], bytes(key[0][1]), [bytes(d[0]) for d in deltas])

    def checkpoint_steps(self, run: str, epoch: int) -> list[tuple[int, str, int]]:
        return [(r[0], r[1], r[2]) for r in self._read(
            "SELECT step, kind, length(body) FROM checkpoints WHERE rk = ? AND epoch = ? "
            "ORDER BY step", (self._rk(run), epoch))]

    def checkpoint_bodies(self, run: str) -> Iterator[tuple[int, int, str, bytes]]:
        with self._guard():
            cur = self._conn().execute("SELECT epoch, step, kind, body FROM checkpoints "
                                       "WHERE rk = ? ORDER BY epoch, step", (self._rk(run),))
            for r in cur:
                yield r[0], r[1], r[2], bytes(r[3])

    def chunks(self, digests: Sequence[str]) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for i in range(0, len(digests), 500):  # stay under SQLite's variable limit
            part = list(digests[i:i + 500])
            out.update((r[0], bytes(r[1])) for r in self._read(
                f"SELECT hash, body FROM chunks WHERE hash IN ({','.join('?' * len(part))})",
                part))
        return all_chunks(str(self.path), digests, out)

    def chunk(self, digest: str) -> bytes:
        rows = self._read("SELECT body FROM chunks WHERE hash = ?", (digest,))
        if not rows:
            raise missing_chunk(str(self.path), digest)
        return bytes(rows[0][0])

    def usage_since(self, *, run: str | None = None, swarm: str | None = None,
                    since: float) -> dict[str, float]:
        col, val, bucket = usage_scope(run, swarm, since)
        rows = self._read(f"SELECT {', '.join(f'TOTAL({k})' for k in USAGE_KEYS)} FROM usage "
                          f"WHERE {col} = ? AND bucket >= ?", (val, bucket))
        return dict(zip(USAGE_KEYS, rows[0], strict=True))

    def swarm_usage(self, swarm: str) -> dict[str, float]:
        rows = self._read(f"SELECT {', '.join(f'TOTAL({k})' for k in USAGE_KEYS)} FROM usage "
                          "WHERE swarm = ?", (swarm,))
        return dict(zip(USAGE_KEYS, rows[0], strict=True))

    def get_meta(self, key: str) -> str | None:
        rows = self._read("SELECT value FROM meta WHERE key = ?", ("x." + key,))
        return str(rows[0][0]) if rows else None

    def set_meta(self, key: str, value: str) -> None:
        with self._tx() as c:
            c.execute("INSERT OR REPLACE INTO meta VALUES(?,?)", ("x." + key, value))

    def swarm_budget(self, swarm: str) -> dict[str, float]:
        rows = self._read("SELECT budget FROM swarms WHERE name = ?", (swarm,))
        return dict(loads(rows[0][0])) if rows else {}

    def swarm_pause_points(self, swarm: str) -> dict[str, Any]:
        rows = self._read("SELECT pause_points FROM swarms WHERE name = ?", (swarm,))
        return dict(loads(rows[0][0])) if rows and rows[0][0] is not None else {}

    # -- maintenance -----------------------------------------------------
    def backup(self, path: str) -> None:
        dest = Path(path)
        if dest.exists():
            raise UsageError(f"backup target {dest} exists; choose a new path")
        with self._guard():
            target = sqlite3.connect(dest)
            try:
                self._conn().backup(target)
            finally:
                target.close()
