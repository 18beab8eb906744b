"""The PostgreSQL store's erasure: an event's payload and every copy of it in the rows,
in one transaction with the ``payload.erased`` store event that records it.

The port of the erasure of :mod:`tether.store.sqlite_settings` and the row rewrites of
:mod:`tether.store.sqlite_erase`, with the same rules (``core/erasure.py``):

* the projections that copied the payload whole get the marker (:func:`blank_copies`);
* every checkpoint of every run that holds an erased value is rewritten without it,
  and so is every keyframe chunk, under its new content hash (:func:`scrub_checkpoints`);
  the old and new hash of each rewritten body go into the erasure's store event;
* the runs whose checkpoints changed lose their lease (:func:`fence`).

Bytes on disk: PostgreSQL keeps an updated row's old version in the heap (a large
value's in its TOAST table) until ``VACUUM``; the erasure vacuums the tables it
rewrote once it has committed, which removes those versions where no older snapshot
still needs them. It cannot reach the WAL, its archives or the file system's freed
blocks (docs/audit.md, "Bytes on disk").
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import pq, sql

from tether.core.canonical import dumps, loads, sha256_hex
from tether.core.erasure import (
    REPLAYED,
    Needles,
    chunk_name,
    needles,
    scrub,
    scrub_checkpoint,
    scrub_chunk,
    scrub_text,
)
from tether.core.fold import READS_PAYLOAD
from tether.core.ids import parse_iso, ulid_bytes, ulid_str
from tether.core.settings import ERASED_KIND, STORE_CHAIN, STORE_SCOPE, StoreEvent, erased_marker
from tether.core.statuses import CLOSED_STATUSES
from tether.errors import NotFound, UsageError
from tether.store.postgres_base import PGBase
from tether.store.postgres_settings import append_chain
from tether.store.sqlite_erase import ALSO_IN_LIMIT
from tether.store.sqlite_rows import id_key

_Conn = psycopg.Connection[Any]

_VACUUMED = ("events", "messages", "versions", "effects", "approvals", "outbox", "runs",
             "checkpoints", "chunks")
"""The tables an erasure may rewrite, vacuumed after it when it changed them."""


class PGErase(PGBase):
    """``erase`` (mixed into PostgresStore)."""

    def erase(self, event_id: str, *, reason: str, actor: str, time: str,
              id: str) -> StoreEvent:
        """Erase an event's payload and every copy of it in the projections, in one
        transaction with the ``payload.erased`` store event that records it."""
        e = self._erase(id_key(event_id), event_id, reason=reason, actor=actor, time=time,
                        id=id)
        self._vacuum(["events", *(k.split(".")[0] for k in e.payload.get("rows", {}))])
        return e

    def _erase(self, key: bytes | None, event_id: str, *, reason: str, actor: str, time: str,
               id: str) -> StoreEvent:
        with self._tx() as c:
            row = c.execute("SELECT rk, kind, payload, causes, epoch, step FROM events "
                            "WHERE id = %s", (key,)).fetchone() if key is not None else None
            if row is None or key is None:
                raise NotFound(f"no event {event_id!r} in {self.url}; `tether events RUN` "
                               "lists a run's events with their ids")
            rk, kind, payload, causes, epoch, step = row
            if payload is None:
                raise UsageError(f"event {event_id}: its payload is erased already")
            ev = ulid_str(key)  # the id as stored, whatever case was given
            run = self._run_id(rk)
            copies = erase_copies(c, ev, run, kind, loads(payload), loads(causes), epoch, step,
                                  run_of=self._run_id, now=parse_iso(time))
            # Keep the payload's hash: the chain still verifies without the payload.
            c.execute("UPDATE events SET payload_hash = %s, payload = NULL WHERE id = %s",
                      (hashlib.sha256(bytes(payload)).digest(), key))
            record: dict[str, Any] = {"event": ev, "run": run, "kind": kind, "epoch": epoch,
                                      "step": step, "reason": reason, **copies}
            if kind in REPLAYED and _in_flight(c, run, epoch, step):
                record["in_flight"] = True
            store_rk = self._rk(STORE_CHAIN, c, create=True)
            assert store_rk is not None
            return append_chain(c, store_rk, ERASED_KIND, STORE_SCOPE, record, actor=actor,
                                time=time, id=id)

    def _vacuum(self, tables: list[str]) -> None:
        """Reclaim the old row versions an erasure left (see the module), best effort.
        Only outside a transaction (VACUUM cannot run inside one): an erasure nested in
        a caller's transaction leaves them to autovacuum."""
        c = self._conn()
        if c.info.transaction_status != pq.TransactionStatus.IDLE:
            return
        for t in sorted(set(tables) & set(_VACUUMED)):
            try:
                c.execute(sql.SQL("VACUUM {}").format(sql.Identifier(t)))
            except psycopg.Error:
                # The erasure has committed: a VACUUM that cannot run now (the lock timeout
                # passed, a role that does not own the table) must not make it look failed,
                # and a retry refused ("erased already"). Autovacuum reclaims them later.
                continue


def _in_flight(c: _Conn, run: str, epoch: int, step: int) -> bool:
    """Whether (epoch, step) is the step a run that can still go on has not completed:
    resuming it replays that step's journal, which an erased payload leaves short."""
    row = c.execute("SELECT epoch, step, status FROM runs WHERE id = %s", (run,)).fetchone()
    return (row is not None and row[0] == epoch and step > row[1]
            and row[2] not in CLOSED_STATUSES)


def erase_copies(c: _Conn, ev: str, run: str, kind: str, payload: Any, causes: list[str],
                 epoch: int, step: int, *, run_of: Callable[[int], str],
                 now: float) -> dict[str, Any]:
    """Every copy of event ``ev``'s payload rewritten; what the erasure's store event
    records of them (as :func:`tether.store.sqlite_erase.erase_copies`)."""
    rows = blank_copies(c, ev, run, kind, payload, causes, epoch, step)
    found = needles(ev, payload)
    for k, v in scrub_unsealed(c, found, run, kind, causes).items():
        rows[k] = rows.get(k, 0) + v
    ckpts, chunks = scrub_checkpoints(c, found, run_of)
    if ckpts:
        rows["checkpoints.body"] = len(ckpts)
    if chunks:
        rows["chunks.body"] = chunks
    out: dict[str, Any] = {
        "rows": rows, "checkpoints": ckpts,
        "fenced": fence(c, sorted({run, *(x[0] for x in ckpts)}), now),
        "also_in": also_in(c, found, ev)}
    kept = kept_chunks(c, found)
    if kept:
        out["kept_chunks"] = kept
    return out


def blank_copies(c: _Conn, ev: str, run: str, kind: str, payload: Any, causes: list[str],
                 epoch: int, step: int) -> dict[str, int]:
    """Replace what the projections copied from event ``ev``'s payload by the erased
    marker; how many rows of each table changed (see
    :func:`tether.store.sqlite_erase.blank_copies`)."""
    mark = dumps(erased_marker(ev))
    done: dict[str, int] = {}

    def blank(table: str, column: str, where: str, args: tuple[Any, ...]) -> None:
        n = c.execute(f"UPDATE {table} SET {column} = %s WHERE {where}", (mark, *args)).rowcount
        if n > 0:
            done[f"{table}.{column}"] = done.get(f"{table}.{column}", 0) + n

    if kind == "message.sent":
        blank("messages", "body", "id = %s", (ev,))
    elif kind == "blackboard.write":
        blank("versions", "value", "event = %s AND ns LIKE 'board:%%'", (ev,))
    elif kind == "effect.intent":
        blank("effects", "arguments", "id = %s", (ev,))
        if isinstance(payload, dict) and isinstance(payload.get("i"), int):
            blank("approvals", "arguments",
                  "run = %s AND epoch = %s AND step = %s AND idx = %s",
                  (run, epoch, step, payload["i"]))
    elif kind == "approval.requested":
        blank("approvals", "arguments", "id = %s", (ev,))
    elif kind in ("effect.done", "effect.resolved", "effect.failed") and causes:
        blank("effects", "result", "id = %s", (str(causes[0]),))
    elif kind == "approval.decided" and isinstance(payload, dict) and payload.get("approval"):
        blank("approvals", "edited_arguments", "id = %s AND edited_arguments IS NOT NULL",
              (str(payload["approval"]),))
    blank("outbox", "body", "id = %s", (ev,))
    return done


def _holding(column: str, n: int) -> str:
    """A condition true of a row whose ``column`` (bytea) contains one of ``n`` byte
    patterns (``position`` on bytea: a byte search, no JSON decoded)."""
    return "(" + " OR ".join(f"position(%s IN {column}) > 0" for _ in range(n)) + ")"


def scrub_checkpoints(c: _Conn, n: Needles,
                      run_of: Callable[[int], str]) -> tuple[list[list[Any]], int]:
    """Rewrite every chunk and checkpoint holding an erased value; return the rewritten
    checkpoints as ``[run, epoch, step, old hash, new hash]`` and how many chunks changed."""
    pats = n.patterns()
    if not pats:
        return [], 0
    renamed: dict[str, str] = {}
    for name, body in c.execute(f"SELECT hash, body FROM chunks WHERE "
                                f"{_holding('body', len(pats))}", pats).fetchall():
        if not _state_chunk(c, str(name)):
            continue  # a file's before-image an undo restores by its hash: see kept_chunks
        new = scrub_chunk(bytes(body), n)
        if new is not None:
            renamed[str(name)] = chunk_name(new)
            c.execute("INSERT INTO chunks(hash, body) VALUES(%s,%s) ON CONFLICT DO NOTHING",
                      (renamed[name], new))
    # A keyframe that names a renamed chunk changes too, even if it holds no value itself.
    look = pats + [h.encode() for h in renamed]
    changed: list[list[Any]] = []
    for rowid, rk, epoch, step, kind, body in c.execute(
            "SELECT rowid, rk, epoch, step, kind, body FROM checkpoints WHERE "
            f"{_holding('body', len(look))} ORDER BY rk, epoch, step", look).fetchall():
        old = bytes(body)
        new = scrub_checkpoint(str(kind), old, n, renamed)
        if new is not None:
            c.execute("UPDATE checkpoints SET body = %s WHERE rowid = %s", (new, rowid))
            changed.append([run_of(int(rk)), int(epoch), int(step), sha256_hex(old),
                            sha256_hex(new)])
    # Every keyframe naming an old chunk names the new one now: the old bytes can go.
    gone = [h for h, new in renamed.items() if new != h]
    if gone:
        c.execute("DELETE FROM chunks WHERE hash = ANY(%s)", (gone,))
    return changed, len(renamed)


def _state_chunk(c: _Conn, name: str) -> bool:
    """Whether chunk ``name`` is part of a state (a keyframe names it) and of nothing else
    (an effect's undo or a journaled file image names chunks of raw file bytes)."""
    h = name.encode()
    return (c.execute("SELECT 1 FROM checkpoints WHERE kind = 'key' AND "
                      "position(%s IN body) > 0 LIMIT 1", (h,)).fetchone() is not None
            and c.execute("SELECT 1 FROM effects WHERE position(%s IN undo) > 0 LIMIT 1",
                          (h,)).fetchone() is None
            and c.execute("SELECT 1 FROM events WHERE position(%s IN payload) > 0 LIMIT 1",
                          (h,)).fetchone() is None)


def kept_chunks(c: _Conn, n: Needles) -> int:
    """Chunks still holding an erased value after the rewrite: files' bytes (before-images
    an undo restores, named by their content hash), which an erasure does not change."""
    pats = n.patterns()
    if not pats:
        return 0
    row = c.execute(f"SELECT count(*) FROM chunks WHERE {_holding('body', len(pats))}",
                    pats).fetchone()
    return int(row[0]) if row else 0


def scrub_unsealed(c: _Conn, n: Needles, run: str, kind: str,
                   causes: list[str]) -> dict[str, int]:
    """Rows no seal covers any more that quote an erased value: queued notifications, the
    run's reason when the erased event set it, the effect's undo when its result was
    erased (see :func:`tether.store.sqlite_erase.scrub_unsealed`). How many of each
    changed."""
    pats = n.patterns()
    done: dict[str, int] = {}
    if not pats:
        return done
    if kind in ("effect.done", "effect.resolved") and causes:
        row = c.execute("SELECT undo FROM effects WHERE id = %s AND undo IS NOT NULL",
                        (str(causes[0]),)).fetchone()
        if row is not None:
            old_undo = loads(row[0])
            new_undo = scrub(old_undo, n)
            if new_undo is not old_undo:
                c.execute("UPDATE effects SET undo = %s WHERE id = %s", (dumps(new_undo),
                                                                         str(causes[0])))
                done["effects.undo"] = 1
    for oid, body in c.execute(f"SELECT id, body FROM outbox WHERE "
                               f"{_holding('body', len(pats))}", pats).fetchall():
        old = loads(body)
        new = scrub(old, n)
        if new is not old:
            c.execute("UPDATE outbox SET body = %s WHERE id = %s", (dumps(new), oid))
            done["outbox.body"] = done.get("outbox.body", 0) + 1
    if kind in READS_PAYLOAD:
        row = c.execute("SELECT reason FROM runs WHERE id = %s", (run,)).fetchone()
        if row is not None and scrub_text(row[0], n) != row[0]:
            c.execute("UPDATE runs SET reason = %s WHERE id = %s", (scrub_text(row[0], n), run))
            done["runs.reason"] = 1
    return done


def also_in(c: _Conn, n: Needles, ev: str) -> list[str]:
    """Other events whose payloads still hold an erased value (at most
    :data:`ALSO_IN_LIMIT`, in commit order): the operator's to erase as well."""
    pats = n.patterns()
    if not pats:
        return []
    rows = c.execute(f"SELECT id FROM events WHERE payload IS NOT NULL AND id != %s AND "
                     f"{_holding('payload', len(pats))} ORDER BY rowid LIMIT {ALSO_IN_LIMIT}",
                     [ulid_bytes(ev), *pats]).fetchall()
    return [ulid_str(bytes(r[0])) for r in rows]


def fence(c: _Conn, runs: list[str], now: float) -> list[str]:
    """Take away the live leases of ``runs`` (a new token, expired): the owner's next
    commit is refused; the runs whose lease was live, sorted."""
    live = sorted({r for r in runs if c.execute(
        "SELECT 1 FROM leases WHERE run = %s AND expires > %s", (r, now)).fetchone()})
    with c.cursor() as cur:
        cur.executemany("UPDATE leases SET token = token + 1, expires = 0 WHERE run = %s",
                        [(r,) for r in sorted(set(runs))])
    return live
