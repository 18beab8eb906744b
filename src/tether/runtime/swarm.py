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
  writer is quarantined, or under a monitor's verdict nobody acked; a message
  taken by ``ctx.receive`` says the same).

What a step sends or writes is redacted before it is journaled, with the secret
patterns of the policy in force (:mod:`tether.core.redaction`): the store keeps
the redacted body or value, so the receiver or reader gets that form, live and
on replay alike (it reads from the store). The call's fingerprint is the
journal's own: a keyed hash of the real body when it held a secret, so a re-run
step sending the same thing matches without the secret being journaled.

Workspace files, which any run may share (in a swarm or not), are
:mod:`tether.runtime.workspace`. The store reads here run off the event loop: a
worker's other runs go on meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tether.core.canonical import digest, json_safe
from tether.core.fingerprint import fingerprint
from tether.core.text import refuse_nul
from tether.errors import UsageError
from tether.runtime.step_api import BoardEntry, InboxMessage
from tether.runtime.stepping import StepCalls, StepRuntime
from tether.store.records import TERMINAL_STATUSES, MessageRow, RunRow, VersionRow

if TYPE_CHECKING:
    from tether.store.protocol import Store


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


Fingerprinter = Callable[[str, str, Any], tuple[str, Any]]
"""``(kind, name, value) -> (fingerprint, value to journal)``: the run's
:meth:`~tether.runtime.services.StepServices.args_fingerprint` (redacts, keys the hash)."""


class SwarmCalls:
    """The swarm side of one step's calls."""

    def __init__(self, rt: StepRuntime, calls: StepCalls, journaled: Fingerprinter) -> None:
        self._rt = rt
        self._calls = calls
        self._journaled = journaled

    async def send(self, to: str, body: Any, *, topic: str | None = None) -> str:
        rt, calls = self._rt, self._calls
        where = f"run {rt.journal.run} step {calls.step}: ctx.send"
        refuse_nul(where, "the recipient", to)
        refuse_nul(where, "the topic", topic)
        i = calls.next()
        async with calls.turn(i):  # numbered as made; turns in that order
            # The fingerprint of [topic, body] is what it always was when neither holds a
            # secret (journals written before redaction replay unchanged).
            fp, shown = self._journaled("send", to, [topic, json_safe(body)])
            topic, body_json = shown
            rec = calls.recorded(i, "message.sent", fp, f"ctx.send to {to}")
            if rec is not None:
                return rec.call.id
            await rt.safe_point(calls.step)
            j = rt.journal
            if not isinstance(to, str) or not to:
                raise UsageError(f"run {j.run} step {calls.step}: ctx.send needs a run id, run name or "
                                 f"agent name (a non-empty string), not {to!r}")
            # Not journaled when no run has that name: a re-run of the step (after `tether
            # resume`, once the recipient was started) looks again and may find it.
            target = await asyncio.to_thread(resolve_recipient, j.store, j.row, to, calls.step)
            held = bool(j.row.spec.get("quarantined"))
            e = j.append("message.sent", {"i": i, **calls.within(i), "fp": fp, "to": target.id,
                                          "to_name": target.name, "topic": topic,
                                          "body": body_json, "held": held},
                         step=calls.step, actor=rt.actor)
            j.message(MessageRow(id=e.id, swarm=j.row.swarm, sender=j.run, epoch=j.row.epoch,
                                 step=calls.step, recipient=target.id, topic=topic, body=body_json,
                                 status="held" if held else "pending", created=rt.clock()))
            if target.id == j.run:
                rt.self_mail = True
            return e.id

    async def receive(self, *, limit: int | None = None) -> list[InboxMessage]:
        rt, calls = self._rt, self._calls
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            raise UsageError(f"run {rt.journal.run} step {calls.step}: ctx.receive(limit=...) must "
                             f"be a whole number of at least 1, or None for all; not {limit!r}")
        i = calls.next()
        async with calls.turn(i):  # numbered as made; turns in that order
            fp = fingerprint("receive", "inbox", digest(limit))
            rec = calls.recorded(i, "message.received", fp, "ctx.receive()")
            if rec is None:
                await rt.safe_point(calls.step)
                if rt.self_mail:
                    await rt.flush()  # a message to itself must be in the store to be taken
                    rt.self_mail = False
                j = rt.journal
                assert j.fence is not None
                rows = await asyncio.to_thread(j.store.claim_messages, j.run, j.fence,
                                               f"{j.row.epoch}:{calls.step}:{i}", rt.clock(), limit)
                got = [InboxMessage(m.id, m.sender, m.topic, m.body, m.step, m.suspect)
                       for m in rows]
                j.append("message.received", {"i": i, **calls.within(i), "fp": fp,
                                              "messages": [m.to_json() for m in got]},
                         step=calls.step, actor=rt.actor, causes=tuple(m.id for m in got))
                return got
            return [InboxMessage(m["id"], m["sender"], m.get("topic"), m["body"], int(m["step"]),
                                 bool(m.get("suspect")))
                    for m in rec.call.payload["messages"]]

    async def board_get(self, key: str) -> BoardEntry | None:
        rt, calls = self._rt, self._calls
        refuse_nul(f"run {rt.journal.run} step {calls.step}: ctx.board.get", "the blackboard key",
                   key)
        i = calls.next()
        async with calls.turn(i):  # numbered as made; turns in that order
            fp = fingerprint("board.read", key, digest(key))
            rec = calls.recorded(i, "blackboard.read", fp, f"ctx.board.get({key!r})")
            if rec is not None:
                return _entry(rec.call.payload)
            await rt.safe_point(calls.step)
            if rt.board_dirty:
                await rt.flush()  # this run's own writes must be visible to its reads
                rt.board_dirty = False
            j = rt.journal
            current = await asyncio.to_thread(j.store.current_versions, board_ns(j.row.swarm), [key])
            v = current.get(key)
            payload: dict[str, Any] = {"i": i, **calls.within(i), "fp": fp, "key": key,
                                           "found": v is not None}
            if v is not None:
                payload.update(value=v.value, version=v.version, writer=v.run, write=v.event,
                               suspect=v.suspect)
            j.append("blackboard.read", payload, step=calls.step, actor=rt.actor,
                     causes=(v.event,) if v is not None else ())
            return _entry(payload)

    async def board_set(self, key: str, value: Any) -> str:
        rt, calls = self._rt, self._calls
        if not isinstance(key, str) or not key:
            raise UsageError(f"run {rt.journal.run} step {calls.step}: a blackboard key must be "
                             "a non-empty string")
        refuse_nul(f"run {rt.journal.run} step {calls.step}: ctx.board.set", "the blackboard key",
                   key)
        i = calls.next()
        async with calls.turn(i):  # numbered as made; turns in that order
            # The key is not redacted: readers look the value up by it.
            fp, value_json = self._journaled("board.write", key, json_safe(value))
            rec = calls.recorded(i, "blackboard.write", fp, f"ctx.board.set({key!r})")
            if rec is not None:
                return rec.call.id
            await rt.safe_point(calls.step)
            j = rt.journal
            suspect = bool(j.row.spec.get("quarantined"))
            e = j.append("blackboard.write", {"i": i, **calls.within(i), "fp": fp, "key": key,
                                              "value": value_json, "suspect": suspect},
                         step=calls.step, actor=rt.actor)
            j.version(VersionRow(ns=board_ns(j.row.swarm), key=key, event=e.id, run=j.run,
                                 epoch=j.row.epoch, step=calls.step, value=value_json,
                                 suspect=suspect, created=rt.clock()))
            rt.board_dirty = True
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
