"""Spans from the journal, following the OpenTelemetry GenAI conventions (docs/telemetry.md).

:class:`SpanBuilder` is fed committed events, each run's in seq order, and returns
the spans they complete as plain :class:`Span` records (no OpenTelemetry import:
:mod:`tether.telemetry.otel` turns them into SDK spans). A step is one trace:
``invoke_agent {agent}`` at its root, ``chat {model}`` per model call and
``execute_tool {tool}`` per tool call, effect or swarm call below it.

Ids and times come from the events alone (the trace and the step's span from run,
epoch and step; a call's span from its event's id; times from the journal's
timestamps), so the live sink and ``tether export-otel`` make the same spans, and a
restarted worker sends a span it already sent under the same ids, never a new one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

from tether.core.events import Event
from tether.telemetry.stamps import ns

Attrs = dict[str, "str | int | float | bool | list[str]"]
Lookup = Callable[[str], Event | None]
"""An event by id, from the store (links across runs, effects closed after a restart)."""

SWARM_TOOLS = {"message.sent": "send_message", "message.received": "read_inbox",
               "blackboard.write": "board_set", "blackboard.read": "board_get"}
"""Swarm calls journaled as their own kinds, named as the built-in Agent offers them."""
EFFECT_ENDS = frozenset({"effect.done", "effect.failed", "effect.in_doubt"})
STEP_EVENTS = frozenset({"policy.decided", "approval.requested", "approval.decided", "alert",
                         "budget.exceeded", "nondeterminism", "run.paused",
                         "run.awaiting_approval", "effect.retried"})
"""Kinds kept as span events of the step they happen in."""


class SpanEvent(NamedTuple):
    """A timed annotation of a span (a policy decision, an alert)."""

    name: str
    time_ns: int
    attributes: Attrs


class SpanLink(NamedTuple):
    """A link to a span of another trace (a message's sender, a blackboard value's writer)."""

    trace_id: int
    span_id: int
    attributes: Attrs


class Span(NamedTuple):
    """One finished span, ids as the integers OTLP carries (16 and 8 bytes). A named tuple,
    not a frozen dataclass: one is made per call on the telemetry thread, and a frozen
    dataclass's ``__init__`` (a ``setattr`` per field) cost more than the rest of it."""

    name: str
    kind: str
    """``internal`` or ``client`` (a model call leaves the process)."""
    trace_id: int
    span_id: int
    parent_id: int | None
    start_ns: int
    end_ns: int
    attributes: Attrs
    events: tuple[SpanEvent, ...] = ()
    links: tuple[SpanLink, ...] = ()
    error: str | None = None
    """The status description when the span failed (``error.type`` is in the attributes)."""


_STEP_HASH = hashlib.sha256(b"tether.step\0")
_SPAN_HASH = hashlib.sha256(b"tether.span\0")


def step_ids(run: str, epoch: int, step: int) -> tuple[int, int]:
    """The trace of one step of a run and its ``invoke_agent`` span: bytes 0-15 and 16-23 of
    SHA-256("tether.step\0RUN\0EPOCH\0STEP") (one hash for both)."""
    h = _STEP_HASH.copy()  # the prefix hashed once: a copy costs less than a new hash
    h.update(f"{run}\0{epoch}\0{step}".encode())
    raw = h.digest()
    return int.from_bytes(raw[:16], "big") or 1, int.from_bytes(raw[16:24], "big") or 1


def trace_id(run: str, epoch: int, step: int) -> int:
    """The trace of one step of a run (16 bytes)."""
    return step_ids(run, epoch, step)[0]


def call_span_id(event_id: str) -> int:
    """The span of the call an event records (a model call, a tool call, an effect's intent):
    8 bytes of SHA-256("tether.span\0EVENT_ID")."""
    h = _SPAN_HASH.copy()
    h.update(event_id.encode())
    return int.from_bytes(h.digest()[:8], "big") or 1  # 0 is OTLP's "no id"


@dataclass(frozen=True, slots=True)
class RunInfo:
    """What the spans say about a run beyond its events."""

    id: str
    name: str = ""
    agent: str = ""
    """The agent's name (``gen_ai.agent.name``); else taken from the events' actor."""
    swarm: str | None = None


class _Step:
    """What a step in flight has shown so far (the containers made when first needed: most
    steps of a long run have no span events, effects or policy decisions)."""

    __slots__ = ("agent", "cost", "epoch", "events", "intents", "last", "policy", "span",
                 "start", "step", "tokens", "tool_calls", "trace")

    def __init__(self, run: str, epoch: int, step: int, start: int, agent: str) -> None:
        self.epoch, self.step, self.start, self.last, self.agent = epoch, step, start, start, agent
        self.trace, self.span = step_ids(run, epoch, step)
        self.events: tuple[SpanEvent, ...] = ()
        self.tool_calls: tuple[tuple[str, str], ...] = ()
        self.intents: dict[str, Event] | None = None
        self.policy: dict[int, dict[str, Any]] | None = None
        self.tokens = (0, 0)
        self.cost = 0.0


class SpanBuilder:
    """Spans of the events fed to it; one builder serves many runs.

    Args:
        lookup: an event by id (the store's), for links to other runs' spans and for an
            effect whose intent was committed before this builder saw its run.
        history: the events of an event's step before it (the store's), read when the
            builder meets a step it holds no state for (a restarted worker, a step resumed
            after an approval or a failure): they are fed again for their state only, so
            a live sink and a replay hold the same state at every event.
    """

    def __init__(self, lookup: Lookup | None = None,
                 history: Callable[[Event], list[Event]] | None = None) -> None:
        self.lookup = lookup
        self.history = history
        self._steps: dict[str, _Step] = {}
        self._rebuilding = False

    def open_step(self, run: str) -> tuple[int, int] | None:
        """(epoch, step) of the run's step in flight as far as this builder knows."""
        s = self._steps.get(run)
        return None if s is None else (s.epoch, s.step)

    def feed(self, info: RunInfo, events: Iterable[Event]) -> list[Span]:
        """The spans that ``events`` (the run's next committed events) complete."""
        out: list[Span] = []
        for e in events:
            self._one(info, e, out)
        return out

    def _one(self, info: RunInfo, e: Event, out: list[Span]) -> None:
        k, p = e.kind, e.payload if isinstance(e.payload, dict) else {}
        if k == "step.started":
            t = ns(e.time)
            self._steps[e.run] = _Step(e.run, e.epoch, e.step, t, info.agent or _agent(e.actor))
            return
        s = self._step_of(info, e)
        if s is None:
            return  # between steps (commands, wake-ups, pauses): the run's own, no step's
        t = ns(e.time)
        if k == "model.called":
            out.append(self._chat(info, s, e, p, t))
        elif k == "tool.called":
            out.append(self._tool(info, s, e, p.get("tool", "?"), s.last, t, p))
        elif k == "effect.intent":
            s.intents = s.intents or {}
            s.intents[e.id] = e
        elif k in EFFECT_ENDS:
            span = self._effect_end(info, s, e, p, t)
            if span is not None:
                out.append(span)
        elif k in SWARM_TOOLS:
            out.append(self._tool(info, s, e, SWARM_TOOLS[k], s.last, t, p))
        elif k == "step.finished":
            out.append(self._step_span(info, s, t, p.get("outcome"), None))
            del self._steps[e.run]
            return
        elif k in ("run.failed", "run.stopped"):
            err = str(p.get("error") or p.get("reason") or k) if k == "run.failed" else None
            s.events += (SpanEvent(k, t, _flat(p, ("reason", "error"))),)
            out.append(self._step_span(info, s, t, k.removeprefix("run."), err))
            del self._steps[e.run]
            return
        if k in STEP_EVENTS:
            if k == "policy.decided" and isinstance(p.get("i"), int):
                s.policy = s.policy or {}
                s.policy[p["i"]] = p
            s.events += (SpanEvent(_EVENT_NAMES.get(k, k), t, _event_attrs(k, p)),)
        s.last = t

    def _step_of(self, info: RunInfo, e: Event) -> _Step | None:
        s = self._steps.get(e.run)
        if s is not None and (s.epoch, s.step) == (e.epoch, e.step):
            return s
        if e.kind not in _CALLS and e.kind != "step.finished":
            return None
        if self.history is not None and not self._rebuilding:
            self._rebuilding = True
            try:
                self._steps.pop(e.run, None)
                self.feed(info, self.history(e))  # state only: their spans went before
            finally:
                self._rebuilding = False
            s = self._steps.get(e.run)
            if s is not None and (s.epoch, s.step) == (e.epoch, e.step):
                return s
        t = ns(e.time)  # a step none of whose earlier events are known
        s = self._steps[e.run] = _Step(e.run, e.epoch, e.step, t, info.agent or _agent(e.actor))
        return s

    # -- spans -----------------------------------------------------------------
    def _base(self, info: RunInfo, s: _Step, op: str) -> Attrs:
        a: Attrs = {"gen_ai.operation.name": op, "gen_ai.conversation.id": info.id,
                    "gen_ai.agent.name": s.agent, "tether.run.id": info.id,
                    "tether.step": s.step, "tether.epoch": s.epoch}
        return a  # one literal: cheaper than copying a cached dict and adding to it

    def _chat(self, info: RunInfo, s: _Step, e: Event, p: dict[str, Any], t: int) -> Span:
        model = str(p.get("model") or "?")
        r = p.get("response")
        r = r if isinstance(r, dict) else {}
        usage = r.get("usage")
        usage = usage if isinstance(usage, dict) else {}
        a = self._base(info, s, "chat")
        a["gen_ai.request.model"] = model
        if r.get("model"):
            a["gen_ai.response.model"] = str(r["model"])
        if r.get("finish_reason"):
            a["gen_ai.response.finish_reasons"] = [str(r["finish_reason"])]
        if p.get("provider"):
            a["gen_ai.provider.name"] = str(p["provider"])
        tin, tout = usage.get("input_tokens"), usage.get("output_tokens")
        if isinstance(tin, int):
            a["gen_ai.usage.input_tokens"] = tin
            s.tokens = (s.tokens[0] + tin, s.tokens[1])
        if isinstance(tout, int):
            a["gen_ai.usage.output_tokens"] = tout
            s.tokens = (s.tokens[0], s.tokens[1] + tout)
        if isinstance(p.get("cost_usd"), (int, float)):
            a["tether.cost_usd"] = float(p["cost_usd"])
            s.cost += float(p["cost_usd"])
        a["tether.call.index"] = p.get("i", -1)
        calls = r.get("tool_calls") or []
        s.tool_calls = tuple((str(c.get("name")), str(c.get("id"))) for c in calls
                             if isinstance(c, dict))
        latency = p.get("latency_s")
        start = t - round(latency * 1e9) if isinstance(latency, (int, float)) else s.last
        return Span(f"chat {model}", "client", s.trace,
                    call_span_id(e.id), s.span, start, t, a)

    def _tool(self, info: RunInfo, s: _Step, e: Event, tool: str, start: int, t: int,
              p: dict[str, Any], effect: str = "read", opened: Event | None = None,
              span_of: str | None = None) -> Span:
        a = self._base(info, s, "execute_tool")
        a["gen_ai.tool.name"] = tool
        a["gen_ai.tool.type"] = "function"
        call_id = self._call_id(s, tool)
        if call_id:
            a["gen_ai.tool.call.id"] = call_id
        a["tether.effect.class"] = effect
        first = opened or e
        fp = first.payload if isinstance(first.payload, dict) else {}
        i = fp.get("i")
        if isinstance(i, int):
            a["tether.call.index"] = i
            decided = s.policy.get(i) if s.policy is not None else None
            if decided is not None:
                a["tether.policy.verdict"] = str(decided.get("verdict"))
                if decided.get("rule") is not None:
                    a["tether.policy.rule"] = str(decided["rule"])
        err = p.get("error") if e.kind != "effect.in_doubt" else p.get("reason")
        if e.kind in EFFECT_ENDS:
            a["tether.effect.outcome"] = e.kind.removeprefix("effect.")
        if p.get("rejected"):
            a["tether.call.rejected"] = True
        links = self._links(e, p)
        error = None
        if err:
            error = str(err)
            a["error.type"] = "in_doubt" if e.kind == "effect.in_doubt" else "tool_error"
        return Span(f"execute_tool {tool}", "internal", s.trace,
                    call_span_id(span_of or first.id), s.span, start, t,
                    a, links=links, error=error)

    def _effect_end(self, info: RunInfo, s: _Step, e: Event, p: dict[str, Any],
                    t: int) -> Span | None:
        if not e.causes:
            return None
        intent = s.intents.get(e.causes[0]) if s.intents is not None else None  # kept: a
        # retried effect ends again
        if intent is None and self.lookup is not None:
            intent = self.lookup(e.causes[0])  # committed before this builder saw the run
        if intent is None or not isinstance(intent.payload, dict):
            return None
        ip = intent.payload
        return self._tool(info, s, e, str(ip.get("tool", "?")), ns(intent.time), t, p,
                          str(ip.get("effect", "irreversible")), intent, e.id)

    def _call_id(self, s: _Step, tool: str) -> str | None:
        # The built-in Agent runs its model's tool calls in order; a step function that
        # calls tools of its own has none to match, and its spans carry no call id.
        for n, (name, cid) in enumerate(s.tool_calls):
            if name == tool:
                s.tool_calls = s.tool_calls[:n] + s.tool_calls[n + 1:]
                return cid
        return None

    def _links(self, e: Event, p: dict[str, Any]) -> tuple[SpanLink, ...]:
        if e.kind not in ("message.received", "blackboard.read") or self.lookup is None:
            return ()
        out = []
        for cid in e.causes:
            src = self.lookup(cid)
            if src is None or src.run == e.run:
                continue
            kind = "message" if e.kind == "message.received" else "board"
            out.append(SpanLink(trace_id(src.run, src.epoch, src.step), call_span_id(src.id),
                                {"tether.link.kind": kind, "tether.link.event": src.id,
                                 "tether.link.run": src.run}))
        return tuple(out)

    def _step_span(self, info: RunInfo, s: _Step, t: int, outcome: object,
                   error: str | None) -> Span:
        a = self._base(info, s, "invoke_agent")
        if info.name:
            a["tether.run.name"] = info.name
        if info.swarm:
            a["tether.swarm"] = info.swarm
        if outcome:
            a["tether.step.outcome"] = str(outcome)
        if s.tokens[0] or s.tokens[1]:
            a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"] = s.tokens
        if s.cost:
            a["tether.cost_usd"] = s.cost
        if error:
            a["error.type"] = "run_failed"
        return Span(f"invoke_agent {s.agent}", "internal", s.trace, s.span, None, s.start,
                    max(t, s.start), a, s.events, (), error)


_CALLS = frozenset({"model.called", "tool.called", "effect.intent", *EFFECT_ENDS, *SWARM_TOOLS,
                    "clock.read", "random.read", "checkpoint"})
_EVENT_NAMES = {"policy.decided": "tether.policy.decided", "alert": "tether.alert",
                "approval.requested": "tether.approval.requested",
                "approval.decided": "tether.approval.decided",
                "budget.exceeded": "tether.budget.exceeded",
                "nondeterminism": "tether.nondeterminism", "run.paused": "tether.run.paused",
                "run.awaiting_approval": "tether.run.awaiting_approval",
                "effect.retried": "tether.effect.retried"}
_EVENT_FIELDS = {
    "policy.decided": ("i", "tool", "effect", "verdict", "rule", "reason", "policy_hash"),
    "alert": ("monitor", "rule", "verdict", "stage", "message"),
    "approval.requested": ("i", "tool", "effect", "rule", "reason"),
    "approval.decided": ("i", "approval", "decision", "by"),
    "budget.exceeded": ("scope", "limit", "cap", "used", "on_exceed"),
    "nondeterminism": ("i", "expected", "got"),
    "run.paused": ("reason",), "run.awaiting_approval": ("approval", "reason"),
    "effect.retried": ("i", "reason"),
}


def _event_attrs(kind: str, p: dict[str, Any]) -> Attrs:
    return _flat(p, _EVENT_FIELDS.get(kind, ()))


def _flat(p: dict[str, Any], keys: Iterable[str]) -> Attrs:
    out: Attrs = {}
    for key in keys:
        v = p.get(key)
        if v is None:
            continue
        out[f"tether.{key}"] = v if isinstance(v, (str, int, float, bool)) else str(v)
    return out


def _agent(actor: str) -> str:
    return actor.removeprefix("agent:") if actor.startswith("agent:") else actor
