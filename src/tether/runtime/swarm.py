"""How a step talks to the rest of its swarm: messages and a shared blackboard, journaled.

Every exchange names its causes, so the swarm's provenance is a graph tether
can walk (``tether impact``):

* ``ctx.send(to, body)`` journals ``message.sent`` and posts the message in the
  same commit; it exists exactly when that event does, and a replayed step
  does not send it again.
* ``ctx.receive()`` takes the run's pending messages in one fenced store
  transaction, keyed by the call (epoch, step, index), so a crash between
  taking and journaling gives the same messages back to the re-run call; then
  ``message.received`` cites each ``message.sent``.
* ``ctx.board.set(key, value)`` journals ``blackboard.write`` and records a new
  version of the key; ``ctx.board.get(key)`` journals ``blackboard.read``
  citing the write it saw, and says whether that write is ``suspect`` (its
  writer is quarantined).
* The built-in file tools name the paths they read or change; the event of
  such a call cites the effect of each path's last writer in another run.
"""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tether.core.canonical import digest, json_safe
from tether.core.fingerprint import fingerprint
from tether.errors import UsageError
from tether.store.records import (
    TERMINAL_STATUSES,
    EffectRow,
    MessageRow,
    RunRow,
    VersionRow,
)

if TYPE_CHECKING:
    from tether.core.events import Event
    from tether.runtime.context import StepContext
    from tether.runtime.executor import RunExecutor
    from tether.store.protocol import Store
    from tether.tools.base import ToolContext


@dataclass(frozen=True, slots=True)
class InboxMessage:
    """A message as the receiving step sees it."""

    id: str
    """The sender's ``message.sent`` event id."""
    sender: str
    """The sending run's id."""
    topic: str | None
    body: Any
    step: int
    """The sender's step that sent it."""

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "sender": self.sender, "topic": self.topic, "body": self.body,
                "step": self.step}


@dataclass(frozen=True, slots=True)
class BoardEntry:
    """A blackboard value as a read saw it."""

    key: str
    value: Any
    version: int
    writer: str
    """The run that wrote it."""
    write: str
    """The ``blackboard.write`` event id (the read's cause)."""
    suspect: bool
    """The writer is quarantined: treat the value with care."""


def board_ns(swarm: str | None) -> str:
    """The blackboard namespace of a swarm (runs with no swarm share one)."""
    return f"board:{swarm or ''}"


def file_ns(workspace: str) -> str:
    """The namespace of a workspace's files (its real path)."""
    return f"file:{workspace}"


def resolve_recipient(store: Store, sender: RunRow, to: str, step: int) -> RunRow:
    """The run ``to`` names: a run id (any swarm), or a run name or agent of the sender's
    own swarm. Among several runs with that name or agent, the newest one still going wins. A message to
    a run that has ended is kept (pending) but not read: a race between a reply and the
    end of its recipient is normal in a swarm, not an error of the sender.
    """
    where = f"run {sender.id} step {step}: ctx.send"
    row = store.get_run(to)
    return row if row is not None else _named(store, sender, to, where)


def _named(store: Store, sender: RunRow, to: str, where: str) -> RunRow:
    # Names and agents are looked up in the sender's own swarm only (runs with no swarm
    # among themselves): a message crosses into another swarm by run id alone.
    named = [r for r in (store.get_run(i) for i in store.find_runs(to)) if r is not None
             and r.name == to and r.swarm == sender.swarm]
    if not named:
        named = [r for r in store.list_runs(swarm=sender.swarm) if r.swarm == sender.swarm
                 and (r.agent == to or r.agent.endswith(f":{to}")
                      or r.spec.get("agent_name") == to)]
    live = [r for r in named if r.status not in TERMINAL_STATUSES] or named
    if not live:
        swarm = f" in swarm {sender.swarm}" if sender.swarm else ""
        raise UsageError(f"{where}: no run or agent named {to!r}{swarm}; give a run id, a run "
                         "name or an agent name")
    return max(live, key=lambda r: (r.created, r.id))


class SwarmCalls:
    """The swarm side of one step's context."""

    def __init__(self, ctx: StepContext) -> None:
        self._ctx = ctx

    @property
    def _ex(self) -> RunExecutor:
        return self._ctx._ex

    def _actor(self) -> str:
        return f"agent:{self._ex.agent.name}"

    async def send(self, to: str, body: Any, *, topic: str | None = None) -> str:
        ctx, ex = self._ctx, self._ex
        body_json = json_safe(body)
        i = ctx._next()
        fp = fingerprint("send", to, digest([topic, body_json]))
        rec = ctx._recorded(i, "message.sent", fp, f"ctx.send to {to}")
        if rec is not None:
            return rec.call.id
        await ex.safe_point(ctx.step)
        j = ex.journal
        if not isinstance(to, str) or not to:
            raise UsageError(f"run {j.run} step {ctx.step}: ctx.send needs a run id, run name or "
                             f"agent name (a non-empty string), not {to!r}")
        # Not journaled when no run has that name: a re-run of the step (after `tether
        # resume`, once the recipient was started) looks again and may find it.
        target = resolve_recipient(j.store, j.row, to, ctx.step)
        held = bool(j.row.spec.get("quarantined"))
        e = j.append("message.sent", {"i": i, "fp": fp, "to": target.id, "to_name": target.name,
                                      "topic": topic, "body": body_json, "held": held},
                     step=ctx.step, actor=self._actor())
        j.message(MessageRow(id=e.id, swarm=j.row.swarm, sender=j.run, epoch=j.row.epoch,
                             step=ctx.step, recipient=target.id, topic=topic, body=body_json,
                             status="held" if held else "pending", created=ex.clock()))
        if target.id == j.run:
            ex.self_mail = True
        return e.id

    async def receive(self, *, limit: int | None = None) -> list[InboxMessage]:
        ctx, ex = self._ctx, self._ex
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise UsageError(f"run {ex.journal.run} step {ctx.step}: ctx.receive(limit=...) must "
                             f"be a whole number of at least 1, or None for all; not {limit!r}")
        i = ctx._next()
        fp = fingerprint("receive", "inbox", digest(limit))
        rec = ctx._recorded(i, "message.received", fp, "ctx.receive()")
        if rec is None:
            await ex.safe_point(ctx.step)
            if ex.self_mail:
                await ex.flush()  # a message to itself must be in the store to be taken
                ex.self_mail = False
            j = ex.journal
            assert j.fence is not None
            rows = await asyncio.to_thread(j.store.claim_messages, j.run, j.fence,
                                           f"{j.row.epoch}:{ctx.step}:{i}", ex.clock(), limit)
            got = [InboxMessage(m.id, m.sender, m.topic, m.body, m.step) for m in rows]
            j.append("message.received", {"i": i, "fp": fp,
                                          "messages": [m.to_json() for m in got]},
                     step=ctx.step, actor=self._actor(), causes=tuple(m.id for m in got))
            return got
        return [InboxMessage(m["id"], m["sender"], m.get("topic"), m["body"], int(m["step"]))
                for m in rec.call.payload["messages"]]

    async def board_get(self, key: str) -> BoardEntry | None:
        ctx, ex = self._ctx, self._ex
        i = ctx._next()
        fp = fingerprint("board.read", key, digest(key))
        rec = ctx._recorded(i, "blackboard.read", fp, f"ctx.board.get({key!r})")
        if rec is not None:
            return _entry(rec.call.payload)
        await ex.safe_point(ctx.step)
        if ex.board_dirty:
            await ex.flush()  # this run's own writes must be visible to its reads
            ex.board_dirty = False
        j = ex.journal
        v = j.store.current_versions(board_ns(j.row.swarm), [key]).get(key)
        payload: dict[str, Any] = {"i": i, "fp": fp, "key": key, "found": v is not None}
        if v is not None:
            payload.update(value=v.value, version=v.version, writer=v.run, write=v.event,
                           suspect=v.suspect)
        j.append("blackboard.read", payload, step=ctx.step, actor=self._actor(),
                 causes=(v.event,) if v is not None else ())
        return _entry(payload)

    async def board_set(self, key: str, value: Any) -> str:
        ctx, ex = self._ctx, self._ex
        if not isinstance(key, str) or not key:
            raise UsageError(f"run {ex.journal.run} step {ctx.step}: a blackboard key must be "
                             "a non-empty string")
        value_json = json_safe(value)
        i = ctx._next()
        fp = fingerprint("board.write", key, digest(value_json))
        rec = ctx._recorded(i, "blackboard.write", fp, f"ctx.board.set({key!r})")
        if rec is not None:
            return rec.call.id
        await ex.safe_point(ctx.step)
        j = ex.journal
        suspect = bool(j.row.spec.get("quarantined"))
        e = j.append("blackboard.write", {"i": i, "fp": fp, "key": key, "value": value_json,
                                          "suspect": suspect},
                     step=ctx.step, actor=self._actor())
        j.version(VersionRow(ns=board_ns(j.row.swarm), key=key, event=e.id, run=j.run,
                             epoch=j.row.epoch, step=ctx.step, value=value_json,
                             suspect=suspect, created=ex.clock()))
        ex.board_dirty = True
        return e.id


def _entry(p: dict[str, Any]) -> BoardEntry | None:
    if not p.get("found"):
        return None
    return BoardEntry(p["key"], p["value"], int(p["version"]), p["writer"], p["write"],
                      bool(p.get("suspect")))


class Board:
    """``ctx.board``: the swarm's shared, versioned key-value store."""

    def __init__(self, calls: SwarmCalls) -> None:
        self._calls = calls

    async def get(self, key: str) -> BoardEntry | None:
        """The current value of ``key`` (None if never written), journaled with its version."""
        return await self._calls.board_get(key)

    async def set(self, key: str, value: Any) -> str:
        """Write a new version of ``key``; returns the ``blackboard.write`` event id."""
        return await self._calls.board_set(key, value)


# -- files: last writers -------------------------------------------------------------

_LOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Lock]] = \
    weakref.WeakKeyDictionary()


def workspace_lock(ex: RunExecutor) -> asyncio.Lock | None:
    """The lock of the run's workspace on this event loop (None without a workspace).

    File tools hold it from before they act until their versions are committed, so
    the runs of a worker that share a workspace write and read its files one call at a
    time, in the order the versions say. (Other workers, in other processes or on other
    event loops, are not covered: their writes to a shared folder can interleave; see
    docs/design.md.)
    """
    ws = ex.journal.row.spec.get("workspace")
    if not ws:
        return None
    per_loop = _LOCKS.setdefault(asyncio.get_running_loop(), {})
    lock = per_loop.get(ws)
    if lock is None:
        lock = per_loop[ws] = asyncio.Lock()
    return lock


def file_causes(ex: RunExecutor, tc: ToolContext) -> tuple[tuple[str, ...], list[str]]:
    """(the effects of other runs that last wrote the paths this call touched, the paths
    among them whose last version is suspect: its writer is quarantined). Called under the
    workspace lock: every earlier write to them is committed."""
    ws = ex.journal.row.spec.get("workspace")
    paths = set(tc.touched) | set((tc.after.get("files") or {}) if isinstance(tc.after, dict)
                                  else ())
    if not ws or not paths:
        return (), []
    current = ex.journal.store.current_versions(file_ns(ws), sorted(paths))
    others = {k: v for k, v in current.items() if v.run != ex.journal.run}
    return (tuple(sorted({v.event for v in others.values()})),
            sorted(k for k, v in others.items() if v.suspect))


def file_versions(ex: RunExecutor, intent: Event, tc: ToolContext) -> list[VersionRow]:
    """New versions of the files an effect changed (from its after-image)."""
    ws = ex.journal.row.spec.get("workspace")
    files = tc.after.get("files") if isinstance(tc.after, dict) else None
    if not ws or not isinstance(files, dict):
        return []
    now = ex.clock()
    suspect = bool(ex.journal.row.spec.get("quarantined"))
    return [VersionRow(ns=file_ns(ws), key=path, event=intent.id, run=intent.run,
                       epoch=intent.epoch, step=intent.step,
                       hash=h if isinstance(h, str) else None, suspect=suspect, created=now)
            for path, h in sorted(files.items())]


def unwritten_since(store: Store, effect_id: str, versions: list[VersionRow]) -> list[VersionRow]:
    """Of the versions of a late-recorded file effect (settled or resolved as done after a
    crash), those for paths nobody wrote since its intent: if another run did, that run
    is the file's last writer, and this late version must not take its place (the runs
    that touched the file in between could not cite this effect; nothing can fix that)."""
    if not versions:
        return []
    from tether.core.ids import ulid_time
    since = ulid_time(effect_id)
    current = store.current_versions(versions[0].ns, [v.key for v in versions])
    return [v for v in versions if not (v.key in current and current[v.key].created > since)]


def resolved_versions(store: Store, row: RunRow, eff: EffectRow,
                      now: float) -> list[VersionRow]:
    """Versions for a built-in file effect an operator resolved as done (it happened, but
    its ``effect.done`` with the after-image was never journaled): the named paths as they
    are now, so the next run to touch them cites this effect as their writer. Only for a
    path nobody wrote since the effect's intent (:func:`unwritten_since`).
    """
    from tether.tools.files import FILE_TOOLS, file_hash
    ws = row.spec.get("workspace")
    if not ws or eff.tool not in {t.name for t in FILE_TOOLS}:
        return []
    paths = [str(eff.arguments[k]) for k in ("path", "src", "dst")
             if isinstance(eff.arguments.get(k), str)]
    out = []
    for path in paths:
        try:
            h = file_hash(Path(ws), path)
        except UsageError:
            continue  # not a path the tools would act on: the effect failed on it
        out.append(VersionRow(ns=file_ns(ws), key=path, event=eff.id, run=eff.run,
                              epoch=eff.epoch, step=eff.step, hash=h,
                              suspect=bool(row.spec.get("quarantined")), created=now))
    return unwritten_since(store, eff.id, out)
