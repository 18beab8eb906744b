"""The SQLite store's share of an erasure: the rows that copied an erased payload.

Called inside the erasure's transaction (``SQLiteSettings.erase``), with
``secure_delete`` on, so the replaced bytes are overwritten in the file's pages:

* the projections that copied the payload whole get the marker (:func:`blank_copies`);
* every checkpoint of every run that holds an erased value is rewritten without it,
  and so is every keyframe chunk, under its new content hash
  (:func:`scrub_checkpoints`, rules in ``core/erasure.py``). The old hash of each
  rewritten body and the new one go into the erasure's store event, so the audit can
  still hold the body to the hash its step journaled;
* the runs whose checkpoints changed lose their lease (:func:`fence`): a worker
  driving one holds the old state in memory and would write it back; its next commit
  is refused and the next owner restores the rewritten checkpoint.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from tether.core.canonical import dumps, loads, sha256_hex
from tether.core.erasure import (
    Needles,
    chunk_name,
    needles,
    scrub,
    scrub_checkpoint,
    scrub_chunk,
    scrub_text,
)
from tether.core.fold import READS_PAYLOAD
from tether.core.ids import ulid_bytes, ulid_str
from tether.core.settings import erased_marker

ALSO_IN_LIMIT = 20
"""How many other events holding an erased value an erasure names."""


def erase_copies(c: sqlite3.Connection, ev: str, run: str, kind: str, payload: Any,
                 causes: list[str], epoch: int, step: int, *, run_of: Callable[[int], str],
                 now: float) -> dict[str, Any]:
    """Every copy of event ``ev``'s payload (of ``kind``, in ``run``) rewritten; what the
    erasure's store event records of them: ``rows`` (table.column: count),
    ``checkpoints``, ``fenced``, ``also_in`` and ``kept_chunks`` (if any)."""
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


def blank_copies(c: sqlite3.Connection, ev: str, run: str, kind: str, payload: Any,
                 causes: list[str], epoch: int, step: int) -> dict[str, int]:
    """Replace what the projections copied from event ``ev``'s payload by the erased
    marker; how many rows of each table changed. The rows keep what the chain commits
    to through the event's seal, so the audit can still tell them apart from forgeries
    (it accepts a marker only for an event the store chain says was erased)."""
    mark = dumps(erased_marker(ev))
    done: dict[str, int] = {}

    def blank(table: str, column: str, where: str, args: tuple[Any, ...]) -> None:
        n = c.execute(f"UPDATE {table} SET {column} = ? WHERE {where}", (mark, *args)).rowcount
        if n:
            done[f"{table}.{column}"] = done.get(f"{table}.{column}", 0) + n

    if kind == "message.sent":
        blank("messages", "body", "id = ?", (ev,))
    elif kind == "blackboard.write":
        blank("versions", "value", "event = ? AND ns LIKE 'board:%'", (ev,))
    elif kind == "effect.intent":
        blank("effects", "arguments", "id = ?", (ev,))
        if isinstance(payload, dict) and "i" in payload:
            blank("approvals", "arguments", "run = ? AND epoch = ? AND step = ? AND idx = ?",
                  (run, epoch, step, payload["i"]))
    elif kind == "approval.requested":
        blank("approvals", "arguments", "id = ?", (ev,))
    elif kind in ("effect.done", "effect.resolved", "effect.failed") and causes:
        blank("effects", "result", "id = ?", (causes[0],))
    elif kind == "approval.decided" and isinstance(payload, dict) and payload.get("approval"):
        blank("approvals", "edited_arguments", "id = ? AND edited_arguments IS NOT NULL",
              (payload["approval"],))
    blank("outbox", "body", "id = ?", (ev,))
    return done


def _holding(column: str, n: int) -> str:
    """A condition true of a row whose ``column`` contains one of ``n`` byte patterns
    (``instr`` on blobs: a byte search in C, no JSON decoded)."""
    return "(" + " OR ".join(f"instr({column}, ?) > 0" for _ in range(n)) + ")"


def scrub_checkpoints(c: sqlite3.Connection, n: Needles,
                      run_of: Callable[[int], str]) -> tuple[list[list[Any]], int]:
    """Rewrite every chunk and checkpoint holding an erased value; return the rewritten
    checkpoints as ``[run, epoch, step, old hash, new hash]`` and how many chunks changed.
    ``run_of(rk)`` gives a run key's id."""
    pats = n.patterns()
    if not pats:
        return [], 0
    renamed: dict[str, str] = {}
    for name, body in c.execute(f"SELECT hash, body FROM chunks WHERE {_holding('body', len(pats))}",
                                pats).fetchall():
        if not _state_chunk(c, str(name)):
            continue  # a file's before-image an undo restores by its hash: see kept_chunks
        new = scrub_chunk(bytes(body), n)
        if new is not None:
            renamed[str(name)] = chunk_name(new)
            c.execute("INSERT OR IGNORE INTO chunks(hash, body) VALUES(?,?)", (renamed[name], new))
    # A keyframe that names a renamed chunk changes too, even if it holds no value itself.
    look = pats + [h.encode() for h in renamed]
    changed: list[list[Any]] = []
    for rowid, rk, epoch, step, kind, body in c.execute(
            "SELECT rowid, rk, epoch, step, kind, body FROM checkpoints WHERE "
            f"{_holding('body', len(look))} ORDER BY rk, epoch, step", look).fetchall():
        old = bytes(body)
        new = scrub_checkpoint(str(kind), old, n, renamed)
        if new is not None:
            c.execute("UPDATE checkpoints SET body = ? WHERE rowid = ?", (new, rowid))
            changed.append([run_of(int(rk)), int(epoch), int(step), sha256_hex(old),
                            sha256_hex(new)])
    # Every keyframe naming an old chunk names the new one now: the old bytes can go.
    c.executemany("DELETE FROM chunks WHERE hash = ?",
                  [(h,) for h, new in renamed.items() if new != h])
    return changed, len(renamed)


def _state_chunk(c: sqlite3.Connection, name: str) -> bool:
    """Whether chunk ``name`` is part of a state (a keyframe names it) and of nothing else
    (an effect's undo or a journaled file image names chunks of raw file bytes)."""
    h = name.encode()
    return (c.execute("SELECT 1 FROM checkpoints WHERE kind = 'key' AND instr(body, ?) > 0 "
                      "LIMIT 1", (h,)).fetchone() is not None
            and c.execute("SELECT 1 FROM effects WHERE instr(undo, ?) > 0 LIMIT 1",
                          (h,)).fetchone() is None
            and c.execute("SELECT 1 FROM events WHERE instr(payload, ?) > 0 LIMIT 1",
                          (h,)).fetchone() is None)


def kept_chunks(c: sqlite3.Connection, n: Needles) -> int:
    """Chunks still holding an erased value after the rewrite: files' bytes (before-images
    an undo restores, named by their content hash), which an erasure does not change."""
    pats = n.patterns()
    if not pats:
        return 0
    return int(c.execute(f"SELECT count(*) FROM chunks WHERE {_holding('body', len(pats))}",
                         pats).fetchone()[0])


def scrub_unsealed(c: sqlite3.Connection, n: Needles, run: str, kind: str,
                   causes: list[str]) -> dict[str, int]:
    """Rows no seal covers any more that quote an erased value: any notification still
    queued (an approval's notice quotes the arguments of an effect's intent); the run's
    reason when the erased event is what set it (its fold reads the payload, so the audit
    no longer judges that row); the effect's undo when its result was erased (the undo
    is in the same payload; a rollback then refuses the undo's arguments, before running
    anything, rather than use a value the operator erased). How many rows of each
    changed."""
    pats = n.patterns()
    done: dict[str, int] = {}
    if not pats:
        return done
    if kind in ("effect.done", "effect.resolved") and causes:
        row = c.execute("SELECT undo FROM effects WHERE id = ? AND undo IS NOT NULL",
                        (causes[0],)).fetchone()
        if row is not None:
            old_undo = loads(row[0])
            new_undo = scrub(old_undo, n)
            if new_undo is not old_undo:
                c.execute("UPDATE effects SET undo = ? WHERE id = ?", (dumps(new_undo),
                                                                       causes[0]))
                done["effects.undo"] = 1
    for oid, body in c.execute(f"SELECT id, body FROM outbox WHERE {_holding('body', len(pats))}",
                               pats).fetchall():
        old = loads(body)
        new = scrub(old, n)
        if new is not old:
            c.execute("UPDATE outbox SET body = ? WHERE id = ?", (dumps(new), oid))
            done["outbox.body"] = done.get("outbox.body", 0) + 1
    if kind in READS_PAYLOAD:
        row = c.execute("SELECT reason FROM runs WHERE id = ?", (run,)).fetchone()
        if row is not None and scrub_text(row[0], n) != row[0]:
            c.execute("UPDATE runs SET reason = ? WHERE id = ?", (scrub_text(row[0], n), run))
            done["runs.reason"] = 1
    return done


def also_in(c: sqlite3.Connection, n: Needles, ev: str) -> list[str]:
    """Other events whose payloads still hold an erased value (at most
    :data:`ALSO_IN_LIMIT`, in commit order): an erasure removes one payload; these are
    the operator's to erase as well."""
    pats = n.patterns()
    if not pats:
        return []
    rows = c.execute(f"SELECT id FROM events WHERE payload IS NOT NULL AND id != ? AND "
                     f"{_holding('payload', len(pats))} ORDER BY rowid LIMIT {ALSO_IN_LIMIT}",
                     [ulid_bytes(ev), *pats]).fetchall()
    return [ulid_str(bytes(r[0])) for r in rows]


def fence(c: sqlite3.Connection, runs: list[str], now: float) -> list[str]:
    """Take away the live leases of ``runs`` (a new token, expired): the owner's next
    commit is refused; the runs whose lease was live, sorted."""
    live = sorted({r for r in runs if c.execute(
        "SELECT 1 FROM leases WHERE run = ? AND expires > ?", (r, now)).fetchone()})
    c.executemany("UPDATE leases SET token = token + 1, expires = 0 WHERE run = ?",
                  [(r,) for r in sorted(set(runs))])
    return live
