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

Workspace files, which any run may share (in a swarm or not), are
:mod:`tether.runtime.workspace`. The store reads here run off the event loop: a
worker's other runs go on meanwhile.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tether.core.canonical import digest, json_safe
from tether.core.fingerprint import fingerprint
from tether.errors import UsageError
from tether.store.records import TERMINAL_STATUSES, MessageRow, RunRow, VersionRow

if TYPE_CHECKING:
    from tether.runtime.context import StepContext
    from tether.runtime.executor import RunExecutor
    from tether.store.protocol import Store


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
        target = await asyncio.to_thread(resolve_recipient, j.store, j.row, to, ctx.step)
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
        current = await asyncio.to_thread(j.store.current_versions, board_ns(j.row.swarm), [key])
        v = current.get(key)
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
