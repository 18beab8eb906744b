"""An erasure's rewrite of the rows, the same on every backend: an event's payload and
every copy of it, in the erasure's transaction (rules in ``core/erasure.py``):

* the projections that copied the payload whole get the marker (:meth:`blank_copies`);
* every checkpoint of every run that holds an erased value is rewritten without it,
  and so is every keyframe chunk, under its new content hash
  (:meth:`scrub_checkpoints`). The old hash of each rewritten body and the new one go
  into the erasure's store event, so the audit can still hold the body to the hash its
  step journaled;
* rows no seal covers that quote an erased value are scrubbed (:meth:`scrub_unsealed`);
* the runs whose checkpoints changed lose their lease (:meth:`fence`): a worker
  driving one holds the old state in memory and would write it back; its next commit
  is refused and the next owner restores the rewritten checkpoint.

:class:`ErasureRows` decides what changes; a backend's subclass reads and writes each
row with its own SQL, one statement a method, on the erasure's connection.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, Literal

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
from tether.core.ids import parse_iso, ulid_str
from tether.core.settings import erased_marker
from tether.core.statuses import CLOSED_STATUSES
from tether.errors import NotFound, UsageError

ALSO_IN_LIMIT = 20
"""How many other events holding an erased value an erasure names."""

Where = Literal["id", "board", "step", "edited"]
"""Which rows of a table a projection copied a payload into: ``id``: the row whose
``id`` is given; ``board``: the blackboard version an event wrote; ``step``: the
approval of an effect (run, epoch, step, idx); ``edited``: an approval's edited
arguments, if any."""

Blank = tuple[str, str, Where, tuple[Any, ...]]
"""A projection's copy of a payload: (table, column, which rows, their key)."""


def blanks(ev: str, run: str, kind: str, payload: Any, causes: list[str], epoch: int,
           step: int) -> list[Blank]:
    """Where the projections copied event ``ev``'s payload whole (see :data:`Where`)."""
    out: list[Blank] = []
    if kind == "message.sent":
        out.append(("messages", "body", "id", (ev,)))
    elif kind == "blackboard.write":
        out.append(("versions", "value", "board", (ev,)))
    elif kind == "effect.intent":
        out.append(("effects", "arguments", "id", (ev,)))
        if isinstance(payload, dict) and "i" in payload:
            out.append(("approvals", "arguments", "step", (run, epoch, step, payload["i"])))
    elif kind == "approval.requested":
        out.append(("approvals", "arguments", "id", (ev,)))
    elif kind in ("effect.done", "effect.resolved", "effect.failed") and causes:
        out.append(("effects", "result", "id", (str(causes[0]),)))
    elif kind == "approval.decided" and isinstance(payload, dict) and payload.get("approval"):
        out.append(("approvals", "edited_arguments", "edited", (str(payload["approval"]),)))
    out.append(("outbox", "body", "id", (ev,)))
    return out


def in_flight(row: Sequence[Any] | None, epoch: int, step: int) -> bool:
    """Whether (epoch, step) is the step a run (its row's ``(epoch, step, status)``) that
    can still go on has not completed: resuming it replays that step's journal, which
    an erased payload leaves short."""
    return (row is not None and row[0] == epoch and step > row[1]
            and row[2] not in CLOSED_STATUSES)


class ErasureRows(ABC):
    """One erasure's reads and writes of the rows (a backend's SQL, one statement a
    method), and what it decides from them (see the module)."""

    # -- the event -------------------------------------------------------
    @abstractmethod
    def event_row(self, key: bytes) -> Sequence[Any] | None:
        """The event's (rk, kind, payload, causes, epoch, step)."""

    @abstractmethod
    def drop_payload(self, key: bytes, digest: bytes) -> None:
        """Set the event's payload NULL and its payload hash to ``digest``."""

    @abstractmethod
    def run_position(self, run: str) -> Sequence[Any] | None:
        """The run's (epoch, step, status)."""

    # -- projections -----------------------------------------------------
    @abstractmethod
    def blank(self, table: str, column: str, where: Where, value: bytes,
              key: tuple[Any, ...]) -> int:
        """Set ``column`` of the rows :data:`Where` names to ``value``; how many."""

    @abstractmethod
    def undo_of(self, effect: str) -> Any:
        """The effect's undo as stored (canonical JSON), None when it has none."""

    @abstractmethod
    def set_undo(self, effect: str, undo: bytes) -> None: ...

    @abstractmethod
    def outbox_holding(self, pats: list[bytes]) -> list[tuple[Any, ...]]:
        """(id, body) of the notifications whose body holds one of ``pats``."""

    @abstractmethod
    def set_outbox(self, note: str, body: bytes) -> None: ...

    @abstractmethod
    def reason_of(self, run: str) -> Sequence[Any] | None:
        """The run's row as ``(reason,)``."""

    @abstractmethod
    def set_reason(self, run: str, reason: str) -> None: ...

    @abstractmethod
    def events_holding(self, pats: list[bytes], ev: str, limit: int) -> list[bytes]:
        """The ids (bytes) of at most ``limit`` events but ``ev`` whose payload holds
        one of ``pats``, in commit order."""

    # -- checkpoints -----------------------------------------------------
    @abstractmethod
    def chunks_holding(self, pats: list[bytes]) -> list[tuple[Any, ...]]:
        """(hash, body) of the chunks whose body holds one of ``pats``."""

    @abstractmethod
    def count_chunks_holding(self, pats: list[bytes]) -> int: ...

    @abstractmethod
    def is_state_chunk(self, name: str) -> bool:
        """Whether chunk ``name`` is part of a state (a keyframe names it) and of nothing
        else (an effect's undo or a journaled file image names chunks of raw file
        bytes)."""

    @abstractmethod
    def add_chunk(self, name: str, body: bytes) -> None:
        """Store a chunk (kept if it is there already: its name is its content's hash)."""

    @abstractmethod
    def drop_chunks(self, names: list[str]) -> None: ...

    @abstractmethod
    def checkpoints_holding(self, pats: list[bytes]) -> list[tuple[Any, ...]]:
        """(rowid, rk, epoch, step, kind, body) of the checkpoints whose body holds one of
        ``pats``, by (rk, epoch, step)."""

    @abstractmethod
    def set_checkpoint(self, rowid: int, body: bytes) -> None: ...

    # -- leases ----------------------------------------------------------
    @abstractmethod
    def lease_live(self, run: str, now: float) -> bool: ...

    @abstractmethod
    def expire_leases(self, runs: list[str]) -> None:
        """A new token for each run's lease, expired."""

    # -- what an erasure does --------------------------------------------
    def erase_payload(self, key: bytes | None, event_id: str, *, store: str) -> None:
        """Only the event's payload (``Store.erase_payload``): NULL, its hash kept so the
        chain still verifies without it; nothing if it is erased already."""
        row = self.event_row(key) if key is not None else None
        if row is None or key is None:
            raise NotFound(f"no event {event_id!r} in {store}")
        if row[2] is None:
            return  # already erased
        self.drop_payload(key, hashlib.sha256(bytes(row[2])).digest())

    def erase(self, key: bytes | None, event_id: str, *, store: str, reason: str, time: str,
              run_of: Callable[[int], str]) -> dict[str, Any]:
        """Erase event ``event_id`` (``key``: its id's bytes, None if it is no id) and every
        copy of its payload; the record of the erasure's ``payload.erased`` store event.
        ``store`` names the store in errors; ``run_of(rk)`` a run key's run."""
        row = self.event_row(key) if key is not None else None
        if row is None or key is None:
            raise NotFound(f"no event {event_id!r} in {store}; `tether events RUN` "
                           "lists a run's events with their ids")
        rk, kind, payload, causes, epoch, step = row
        if payload is None:
            raise UsageError(f"event {event_id}: its payload is erased already")
        ev = ulid_str(key)  # the id as stored, whatever case was given
        run = run_of(rk)
        copies = self.erase_copies(ev, run, kind, loads(payload), loads(causes), epoch, step,
                                   run_of=run_of, now=parse_iso(time))
        # Keep the payload's hash: the chain still verifies without the payload.
        self.drop_payload(key, hashlib.sha256(bytes(payload)).digest())
        record: dict[str, Any] = {"event": ev, "run": run, "kind": kind, "epoch": epoch,
                                  "step": step, "reason": reason, **copies}
        if kind in REPLAYED and in_flight(self.run_position(run), epoch, step):
            record["in_flight"] = True
        return record

    def erase_copies(self, ev: str, run: str, kind: str, payload: Any, causes: list[str],
                     epoch: int, step: int, *, run_of: Callable[[int], str],
                     now: float) -> dict[str, Any]:
        """Every copy of event ``ev``'s payload (of ``kind``, in ``run``) rewritten; what the
        erasure's store event records of them: ``rows`` (table.column: count),
        ``checkpoints``, ``fenced``, ``also_in`` and ``kept_chunks`` (if any)."""
        rows = self.blank_copies(ev, run, kind, payload, causes, epoch, step)
        found = needles(ev, payload)
        for k, v in self.scrub_unsealed(found, run, kind, causes).items():
            rows[k] = rows.get(k, 0) + v
        ckpts, chunks = self.scrub_checkpoints(found, run_of)
        if ckpts:
            rows["checkpoints.body"] = len(ckpts)
        if chunks:
            rows["chunks.body"] = chunks
        out: dict[str, Any] = {
            "rows": rows, "checkpoints": ckpts,
            "fenced": self.fence(sorted({run, *(x[0] for x in ckpts)}), now),
            "also_in": self.also_in(found, ev)}
        kept = self.kept_chunks(found)
        if kept:
            out["kept_chunks"] = kept
        return out

    def blank_copies(self, ev: str, run: str, kind: str, payload: Any, causes: list[str],
                     epoch: int, step: int) -> dict[str, int]:
        """Replace what the projections copied from event ``ev``'s payload by the erased
        marker; how many rows of each table changed. The rows keep what the chain commits
        to through the event's seal, so the audit can still tell them apart from forgeries
        (it accepts a marker only for an event the store chain says was erased)."""
        mark = dumps(erased_marker(ev))
        done: dict[str, int] = {}
        for table, column, where, key in blanks(ev, run, kind, payload, causes, epoch, step):
            n = self.blank(table, column, where, mark, key)
            if n > 0:
                done[f"{table}.{column}"] = done.get(f"{table}.{column}", 0) + n
        return done

    def scrub_checkpoints(self, n: Needles, run_of: Callable[[int], str]
                          ) -> tuple[list[list[Any]], int]:
        """Rewrite every chunk and checkpoint holding an erased value; return the rewritten
        checkpoints as ``[run, epoch, step, old hash, new hash]`` and how many chunks
        changed. ``run_of(rk)`` gives a run key's id."""
        pats = n.patterns()
        if not pats:
            return [], 0
        renamed: dict[str, str] = {}
        for name, body in self.chunks_holding(pats):
            if not self.is_state_chunk(str(name)):
                continue  # a file's before-image an undo restores by its hash: see kept_chunks
            new = scrub_chunk(bytes(body), n)
            if new is not None:
                renamed[str(name)] = chunk_name(new)
                self.add_chunk(renamed[str(name)], new)
        # A keyframe that names a renamed chunk changes too, even if it holds no value itself.
        changed: list[list[Any]] = []
        for rowid, rk, epoch, step, kind, body in self.checkpoints_holding(
                pats + [h.encode() for h in renamed]):
            old = bytes(body)
            new = scrub_checkpoint(str(kind), old, n, renamed)
            if new is not None:
                self.set_checkpoint(rowid, new)
                changed.append([run_of(int(rk)), int(epoch), int(step), sha256_hex(old),
                                sha256_hex(new)])
        # Every keyframe naming an old chunk names the new one now: the old bytes can go.
        gone = [h for h, new in renamed.items() if new != h]
        if gone:
            self.drop_chunks(gone)
        return changed, len(renamed)

    def kept_chunks(self, n: Needles) -> int:
        """Chunks still holding an erased value after the rewrite: files' bytes
        (before-images an undo restores, named by their content hash), which an erasure
        does not change."""
        pats = n.patterns()
        return self.count_chunks_holding(pats) if pats else 0

    def scrub_unsealed(self, n: Needles, run: str, kind: str,
                       causes: list[str]) -> dict[str, int]:
        """Rows no seal covers any more that quote an erased value: any notification still
        queued (an approval's notice quotes the arguments of an effect's intent); the run's
        reason when the erased event is what set it (its fold reads the payload, so the
        audit no longer judges that row); the effect's undo when its result was erased (the
        undo is in the same payload; a rollback then refuses the undo's arguments, before
        running anything, rather than use a value the operator erased). How many rows of
        each changed."""
        pats = n.patterns()
        done: dict[str, int] = {}
        if not pats:
            return done
        if kind in ("effect.done", "effect.resolved") and causes:
            undo = self.undo_of(str(causes[0]))
            if undo is not None:
                old_undo = loads(undo)
                new_undo = scrub(old_undo, n)
                if new_undo is not old_undo:
                    self.set_undo(str(causes[0]), dumps(new_undo))
                    done["effects.undo"] = 1
        for oid, body in self.outbox_holding(pats):
            old = loads(body)
            new = scrub(old, n)
            if new is not old:
                self.set_outbox(oid, dumps(new))
                done["outbox.body"] = done.get("outbox.body", 0) + 1
        if kind in READS_PAYLOAD:
            row = self.reason_of(run)
            if row is not None and scrub_text(row[0], n) != row[0]:
                self.set_reason(run, scrub_text(row[0], n))
                done["runs.reason"] = 1
        return done

    def also_in(self, n: Needles, ev: str) -> list[str]:
        """Other events whose payloads still hold an erased value (at most
        :data:`ALSO_IN_LIMIT`, in commit order): an erasure removes one payload; these are
        the operator's to erase as well."""
        pats = n.patterns()
        if not pats:
            return []
        return [ulid_str(bytes(i)) for i in self.events_holding(pats, ev, ALSO_IN_LIMIT)]

    def fence(self, runs: list[str], now: float) -> list[str]:
        """Take away the live leases of ``runs`` (a new token, expired): the owner's next
        commit is refused; the runs whose lease was live, sorted."""
        live = sorted({r for r in runs if self.lease_live(r, now)})
        self.expire_leases(sorted(set(runs)))
        return live
