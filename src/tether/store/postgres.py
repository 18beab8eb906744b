"""The shared store: one PostgreSQL schema, for many workers on many machines.

The port of :mod:`tether.store.sqlite` behind the same protocol and conformance suite
(see postgres_base for connections, the write lock and what differs from SQLite).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tether.core.canonical import dumps, loads
from tether.core.events import BATCH_GENESIS, Event, genesis
from tether.store.chains import all_chunks, batches_from, missing_chunk, next_batch
from tether.store.postgres_backup import dump_schema
from tether.store.postgres_base import Conn
from tether.store.postgres_copy import PGCopy
from tether.store.postgres_erase import PGErase, PGErasure
from tether.store.postgres_leases import PGLeases
from tether.store.postgres_links import PGLinks
from tether.store.postgres_queues import PGQueues
from tether.store.postgres_seals import PGSeals
from tether.store.postgres_send import Combined, insert_rows
from tether.store.postgres_settings import PGSettings
from tether.store.postgres_tokens import PGTokens
from tether.store.postgres_world import PGWorld
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
from tether.store.writes import apply_writes, fence_refusal, nul_refusal


def _marks(n: int) -> str:
    return ", ".join(["%s"] * n)


def _upsert(table: str, cols: str, key: str) -> str:
    """SQLite's ``INSERT OR REPLACE`` for a row named by ``key``: every column replaced."""
    names = [c.strip() for c in cols.split(",")]
    sets = ", ".join(f"{c} = excluded.{c}" for c in names if c not in key.split(", "))
    return (f"INSERT INTO {table}({cols}) VALUES({_marks(len(names))}) "
            f"ON CONFLICT({key}) DO UPDATE SET {sets}")


def _replace(cols: str) -> str:
    """The tail of an upsert by ``id`` (for :func:`insert_rows`): every column replaced."""
    sets = ", ".join(f"{c} = excluded.{c}" for c in (n.strip() for n in cols.split(","))
                     if c != "id")
    return f"ON CONFLICT(id) DO UPDATE SET {sets}"


def _filtered(select: str, **equal: str | None) -> tuple[str, list[Any]]:
    """``select`` with ``AND column = %s`` for every filter given (names are ours, not input)."""
    given = {k: v for k, v in equal.items() if v}
    where = " AND ".join(f"{k} = %s" for k in given)
    return (f"{select} WHERE {where}" if where else f"{select} WHERE 1=1"), list(given.values())


_TOTALS = ", ".join(f"COALESCE(SUM({k}), 0)" for k in USAGE_KEYS)
_RUNS_UPSERT = _upsert("runs", RUN_COLS, "id")
_EFFECTS_REPLACE = _replace(EFFECT_COLS)
_APPROVALS_REPLACE = _replace(APPROVAL_COLS)


class PostgresStore(PGLeases, PGQueues, PGWorld, PGLinks, PGSettings, PGTokens, PGSeals,
                    PGErase, PGCopy):
    """A tether store in one schema of a PostgreSQL database (implements
    :class:`tether.store.protocol.Store`).

    Args:
        url: ``postgresql://[user@]host[:port]/dbname?schema=NAME`` (default schema
            ``tether``; other options go to libpq).
        create: create the schema and its tables if missing (otherwise StoreError).
        readonly: open for reading only: nothing is created, upgraded or written.
        clock: the wall clock that stamps applied commands (default: the system's).
        lock_timeout: seconds a writer waits for the store's write lock before StoreLocked.

    Example::

        store = PostgresStore("postgresql://tether@db.internal/ops?schema=prod")
    """

    # -- writing ---------------------------------------------------------
    def commit(self, writes: Sequence[Write]) -> list[BaseException | None]:
        # The chain's last batch is read with the lock (under it: no other commit can take
        # the next n) and the new batch sent with the COMMIT: two round trips fewer.
        with self._write("SELECT n, hash FROM batches ORDER BY n DESC LIMIT 1") as tx:
            c = tx.conn
            results, entries, hashes = apply_writes(
                writes, lambda w: nul_refusal(w) or self._check_fence(c, w)
                or self._check_transitions(c, w),
                lambda w: self._apply(c, w))
            if entries:
                tx.with_commit("INSERT INTO batches VALUES({}, {}, {})",
                               (*next_batch(tx.first, hashes), dumps(entries)))
        return results

    def _check_fence(self, c: Conn, w: Write) -> BaseException | None:
        row = c.execute("SELECT r.seq, l.token FROM runs r LEFT JOIN leases l ON l.run = r.id "
                        "WHERE r.id = %s", (w.run,)).fetchone()
        return fence_refusal(w, row)

    def _apply(self, c: Conn, w: Write) -> int:
        rk = self._rk(w.run, c, create=True)
        assert rk is not None
        # Each kind of row in one statement, none for no rows (see insert_rows), and those
        # below sent together as one (Combined): each is on a table of its own and none
        # reads what another writes. A step's events, run row, checkpoint and usage cost
        # one round trip, not four.
        one = Combined(c)
        insert_rows(one, f"INSERT INTO events({EVENT_COLS})",
                    [event_values(rk, e) for e in w.events])
        if w.run_row is not None:
            self._write_run(one, w)
        insert_rows(one, f"INSERT INTO effects({EFFECT_COLS})",
                    [effect_values(f) for f in w.effects], _EFFECTS_REPLACE, key=0)
        self._apply_progress(one, w, rk)
        self._apply_requests(one, w)
        one.send()
        # Apart: versions are numbered from the rows before them, links read the events.
        self._apply_world(c, w)
        self._apply_links(c, w, rk)
        return rk

    def _apply_progress(self, one: Combined, w: Write, rk: int) -> None:
        """The run's checkpoint (and its new chunks) and the usage it added."""
        chunks = [*w.chunks, *(w.checkpoint[1].chunks if w.checkpoint is not None else ())]
        insert_rows(one, "INSERT INTO chunks(hash, body)", chunks, "ON CONFLICT DO NOTHING")
        if w.checkpoint is not None:
            epoch, ck = w.checkpoint
            one.execute("INSERT INTO checkpoints(rk, epoch, step, kind, body) "
                        "VALUES(%s, %s, %s, %s, %s) ON CONFLICT(rk, epoch, step) DO UPDATE "
                        "SET kind = excluded.kind, body = excluded.body",
                        (rk, epoch, ck.step, ck.kind, ck.body))
        if w.usage is not None:
            vals = [w.usage.counts.get(k, 0) for k in USAGE_KEYS]
            sets = ", ".join(f"{k} = usage.{k} + excluded.{k}" for k in USAGE_KEYS)
            one.execute(f"INSERT INTO usage(run, bucket, swarm, {', '.join(USAGE_KEYS)}) "
                        f"VALUES({_marks(3 + len(USAGE_KEYS))}) "
                        f"ON CONFLICT(run, bucket) DO UPDATE SET {sets}",
                        (w.run, w.usage.bucket, w.swarm, *vals))

    def _apply_requests(self, one: Combined, w: Write) -> None:
        """Approvals asked or decided, notifications to send, commands applied."""
        insert_rows(one, f"INSERT INTO approvals({APPROVAL_COLS})",
                    [approval_values(a) for a in w.approvals], _APPROVALS_REPLACE, key=0)
        insert_rows(one, "INSERT INTO outbox(id, kind, body, created, next_at)",
                    [(n.id, n.kind, dumps(n.body), n.created, n.created)
                     for n in w.notifications], "ON CONFLICT DO NOTHING")
        if w.commands_applied:
            one.execute("UPDATE commands SET applied = %s WHERE id = ANY(%s)",
                        (self.clock.now(), list(w.commands_applied)))

    def _write_run(self, one: Combined, w: Write) -> None:
        r = w.run_row
        assert r is not None
        if w.fence is None or w.run_changes is None:
            one.execute(_RUNS_UPSERT, run_values(r))
            return
        # Only what changed (see run_changes): a plain step can be a HOT update.
        cols, vals = run_changes(r, w.run_changes)
        one.execute(f"UPDATE runs SET {', '.join(f'{k} = %s' for k in cols)} WHERE id = %s",
                    (*vals, r.id))

    # -- reading ---------------------------------------------------------
    def get_run(self, run: str) -> RunRow | None:
        rows = self._read(f"SELECT {RUN_COLS} FROM runs WHERE id = %s", (run,))
        return row_run(rows[0]) if rows else None

    def find_runs(self, prefix: str) -> list[str]:
        # substr, not LIKE: '_' and '%' in what a user typed are plain characters. An empty
        # prefix names nothing. COLLATE "C": ids sort as SQLite sorts them, by code point.
        head = prefix.upper()
        rows = self._read("SELECT id FROM runs WHERE id = %s OR name = %s "
                          "OR (%s > 0 AND substr(id, 1, %s) = %s) ORDER BY id",
                          (prefix, prefix, len(head), len(head), head))
        return [r[0] for r in rows]

    def list_runs(self, *, status: str | None = None, swarm: str | None = None) -> list[RunRow]:
        sql, args = _filtered(f"SELECT {RUN_COLS} FROM runs", status=status, swarm=swarm)
        return [row_run(r) for r in self._read(
            sql + " ORDER BY created DESC, id DESC", args)]

    def events(self, run: str, *, after_seq: int = 0, limit: int | None = None) -> list[Event]:
        for n in (after_seq, limit):  # refused before the run is looked up, as SQLite does
            if n is not None and not -(2**63) <= n < 2**63:
                raise self._unbindable(OverflowError("beyond 64 bits"), (n,))
        rk = self._rk(run)
        if rk is None:
            return []
        sql = f"SELECT {EVENT_COLS} FROM events WHERE rk = %s AND seq > %s ORDER BY seq"
        args: list[Any] = [rk, after_seq]
        if limit is not None and limit >= 0:  # negative: none, as in SQLite
            sql += " LIMIT %s"
            args.append(limit)
        rows = self._read(sql, args)
        prev = genesis(run)
        if rows and after_seq > 0:
            p = self._read("SELECT hash FROM events WHERE rk = %s AND seq = %s", (rk, after_seq))
            prev = bytes(p[0][0]).hex() if p else ""
        return chained_events(rows, run, prev)

    def tail_events(self, run: str, epoch: int, step: int) -> list[Event]:
        rk = self._rk(run)
        if rk is None:
            return []
        # Walk back from the end of the chain, a page at a time: the in-flight step's events
        # are its tail, a few rows of a chain that may hold millions.
        rows: list[tuple[Any, ...]] = []
        before = 2**63 - 1
        while True:
            page = self._read(f"SELECT {EVENT_COLS} FROM events WHERE rk = %s AND seq < %s "
                              "ORDER BY seq DESC LIMIT 64", (rk, before))
            for r in page:
                if r[3] != epoch or r[4] != step:
                    return [row_event(x, run) for x in reversed(rows)]
                rows.append(r)
            if len(page) < 64:
                return [row_event(x, run) for x in reversed(rows)]
            before = page[-1][1]

    def event(self, event_id: str) -> Event | None:
        key = id_key(event_id)
        if key is None:
            return None
        rows = self._read(f"SELECT {EVENT_COLS} FROM events WHERE id = %s", (key,))
        return row_event(rows[0], self._run_id(rows[0][0])) if rows else None

    def all_run_ids(self) -> list[str]:
        return sorted(self._run_id(r[0]) for r in self._read("SELECT DISTINCT rk FROM events"))

    def latest_batch(self) -> int:
        rows = self._read("SELECT MAX(n) FROM batches")
        return int(rows[0][0]) if rows and rows[0][0] is not None else 0

    def batches(self) -> Iterator[Batch]:
        last, prev = 0, BATCH_GENESIS
        while True:
            rows = self._read("SELECT n, hash, entries FROM batches WHERE n > %s ORDER BY n "
                              "LIMIT 1000", (last,))
            if not rows:
                return
            yield from batches_from(rows, prev, self._run_id)
            last, prev = rows[-1][0], bytes(rows[-1][1]).hex()

    def erase_payload(self, event_id: str) -> None:
        with self._tx() as c:
            PGErasure(c).erase_payload(id_key(event_id), event_id, store=self.url)

    def approval(self, approval_id: str) -> ApprovalRow | None:
        rows = self._read(f"SELECT {APPROVAL_COLS} FROM approvals WHERE id = %s", (approval_id,))
        return row_approval(rows[0]) if rows else None

    def approvals(self, *, run: str | None = None, status: str | None = None,
                  expired_by: float | None = None) -> list[ApprovalRow]:
        sql, args = _filtered(f"SELECT {APPROVAL_COLS} FROM approvals", run=run, status=status)
        if expired_by is not None:
            sql += " AND expires_at IS NOT NULL AND expires_at <= %s"
            args.append(expired_by)
        return [row_approval(r) for r in self._read(
            sql + " ORDER BY requested_at, id", args)]

    def effect(self, effect_id: str) -> EffectRow | None:
        rows = self._read(f"SELECT {EFFECT_COLS} FROM effects WHERE id = %s", (effect_id,))
        return row_effect(rows[0]) if rows else None

    def effects(self, *, run: str | None = None, status: str | None = None) -> list[EffectRow]:
        sql, args = _filtered(f"SELECT {EFFECT_COLS} FROM effects", run=run, status=status)
        return [row_effect(r) for r in self._read(sql + " ORDER BY id", args)]

    def checkpoint_chain(self, run: str, epoch: int, step: int) -> CheckpointChain | None:
        rk = self._rk(run)
        key = self._read("SELECT step, body FROM checkpoints WHERE rk = %s AND epoch = %s AND "
                         "step <= %s AND kind = 'key' ORDER BY step DESC LIMIT 1",
                         (rk, epoch, step))
        if not key:
            return None
        deltas = self._read("SELECT body FROM checkpoints WHERE rk = %s AND epoch = %s "
                            "AND step > %s AND step <= %s ORDER BY step",
                            (rk, epoch, key[0][0], step))
        return CheckpointChain(key[0][0], bytes(key[0][1]), [bytes(d[0]) for d in deltas])

    def checkpoint_steps(self, run: str, epoch: int) -> list[tuple[int, str, int]]:
        return [(r[0], r[1], r[2]) for r in self._read(
            "SELECT step, kind, octet_length(body) FROM checkpoints WHERE rk = %s "
            "AND epoch = %s ORDER BY step", (self._rk(run), epoch))]

    def checkpoint_bodies(self, run: str) -> Iterator[tuple[int, int, str, bytes]]:
        rk, after = self._rk(run), (-1, -1)
        while True:  # a page at a time: a long run's checkpoints need not fit in memory
            rows = self._read("SELECT epoch, step, kind, body FROM checkpoints WHERE rk = %s "
                              "AND (epoch, step) > (%s, %s) ORDER BY epoch, step LIMIT 256",
                              (rk, *after))
            for r in rows:
                yield r[0], r[1], r[2], bytes(r[3])
            if len(rows) < 256:
                return
            after = (rows[-1][0], rows[-1][1])

    def chunks(self, digests: Sequence[str]) -> dict[str, bytes]:
        out: dict[str, bytes] = {r[0]: bytes(r[1]) for r in self._read(
            "SELECT hash, body FROM chunks WHERE hash = ANY(%s)", (list(digests),))}
        return all_chunks(str(self.url), digests, out)

    def chunk(self, digest: str) -> bytes:
        rows = self._read("SELECT body FROM chunks WHERE hash = %s", (digest,))
        if not rows:
            raise missing_chunk(str(self.url), digest)
        return bytes(rows[0][0])

    def usage_since(self, *, run: str | None = None, swarm: str | None = None,
                    since: float) -> dict[str, float]:
        col, val, bucket = usage_scope(run, swarm, since)
        rows = self._read(f"SELECT {_TOTALS} FROM usage WHERE {col} = %s AND bucket >= %s",
                          (val, bucket))
        return {k: float(v) for k, v in zip(USAGE_KEYS, rows[0], strict=True)}

    def swarm_usage(self, swarm: str) -> dict[str, float]:
        rows = self._read(f"SELECT {_TOTALS} FROM usage WHERE swarm = %s", (swarm,))
        return {k: float(v) for k, v in zip(USAGE_KEYS, rows[0], strict=True)}

    def get_meta(self, key: str) -> str | None:
        rows = self._read("SELECT value FROM meta WHERE key = %s", ("x." + key,))
        return str(rows[0][0]) if rows else None

    def set_meta(self, key: str, value: str) -> None:
        with self._tx() as c:
            c.execute("INSERT INTO meta VALUES(%s, %s) ON CONFLICT(key) DO UPDATE "
                      "SET value = excluded.value", ("x." + key, value))

    def swarm_budget(self, swarm: str) -> dict[str, float]:
        rows = self._read("SELECT budget FROM swarms WHERE name = %s", (swarm,))
        return dict(loads(rows[0][0])) if rows else {}

    def swarm_pause_points(self, swarm: str) -> dict[str, Any]:
        rows = self._read("SELECT pause_points FROM swarms WHERE name = %s", (swarm,))
        return dict(loads(rows[0][0])) if rows and rows[0][0] is not None else {}

    # -- maintenance -----------------------------------------------------
    def backup(self, path: str) -> None:
        """A consistent copy of the store's schema, by ``pg_dump --format=custom`` (the
        PostgreSQL client tools must be installed, at the server's major version or newer).

        Restore it with ``pg_restore``: into a new database (``createdb copy && pg_restore
        --dbname postgresql://host/copy FILE``, then open ``...copy?schema=NAME``) or into
        the same one after the store's schema was dropped or renamed. The file is written
        aside and moved into place, so a failed dump leaves nothing at ``path``."""
        dump_schema(self._conninfo, self.schema, self.url, Path(path))
