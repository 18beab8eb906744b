"""Feeds a recorded run's events to the registered monitors, as the worker would.

Every registered monitor kind is built on its defaults (with a run's declared
invariants, for the invariants monitor) and put in one
:class:`~tether.core.monitors.watch.Watch`. Each event is fed in order with a
:class:`~tether.core.monitors.View` built the way ``runtime/monitoring.py`` builds
it: before a tool call's event (``tool.called`` of a call that was not rejected,
``effect.intent``) the call is proposed first, as ``ctx.call`` does before the tool
runs; the usage is the run's lifetime counts as the step context and executor count
them (a model call's tokens and cost after its event, a tool call before its event,
a step before ``step.finished``); the state is the run's state at that point (the
step's own changes show from ``step.finished`` on, as the executor's live state
does) and the progress the last value declared.

Offline, a block does not stop the call (the stream is what happened): a verdict
is recorded with the step and event it came at, and the stream goes on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tether.core.events import Event
from tether.core.monitors import KINDS, Level, Monitor, Proposal, View
from tether.core.monitors.watch import Watch

AFTER_STATE = frozenset({"message.sent", "checkpoint", "step.finished", "run.done",
                         "run.sleeping"})
"""Kinds written after a step has changed its state (and declared its progress)."""


@dataclass(frozen=True, slots=True)
class Flag:
    """One verdict above ``ok`` on a recorded run."""

    monitor: str
    rule: str
    level: str
    stage: int
    step: int
    """The 0-based index of the step it came at (the event's step - 1)."""
    seq: int
    via: str
    """``observe`` or ``propose``."""


Params = Callable[[str, Mapping[str, Any], Mapping[str, Any]], dict[str, Any]]


def default_params(kind: str, defaults: Mapping[str, Any], run: Mapping[str, Any]) -> dict[str, Any]:
    """A monitor's parameters for one run: its defaults, and for ``invariants`` the rules
    the run declares (``{"key", "op", "value"}`` each, as the policy file's expressions;
    a key the state does not have yet counts as 0)."""
    params = dict(defaults)
    if kind == "invariants" and "rules" in params and run.get("invariants"):
        params["rules"] = [f"state.get({i['key']!r}, 0) {i['op']} {i['value']!r}"
                           for i in run["invariants"]]
    return params


def monitors_for(run: Mapping[str, Any], params: Params = default_params,
                 names: Iterable[str] | None = None) -> Watch:
    """Every registered monitor (or those in ``names``), made for one run."""
    pairs: list[tuple[Monitor, tuple[Level, ...]]] = []
    for name, kind in KINDS.items():
        if names is not None and name not in names:
            continue
        pairs.append((kind.make(params(name, kind.defaults, run)), tuple(kind.stages)))
    return Watch(pairs)


def _secs(t: str) -> float:
    return datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp()


def feed(events: list[Event], *, states: Mapping[int, Mapping[str, Any]] | None = None,
         progress: Mapping[int, float] | None = None, run: Mapping[str, Any] | None = None,
         params: Params = default_params, names: Iterable[str] | None = None) -> list[Flag]:
    """Every verdict the registered monitors (or those in ``names``) give on ``events``
    (one run, in order)."""
    watch = monitors_for(run or {}, params, names)
    start = events[0].payload if events and events[0].kind == "run.started" else {}
    spec = start.get("spec") or {}
    agent = str(spec.get("agent_name") or spec.get("agent") or "")
    usage: dict[str, float] = {}
    flags: list[Flag] = []
    journaled = any(e.kind == "step.finished" and isinstance(e.payload, dict)
                    and "progress" in e.payload for e in events)
    prog: float | None = None
    for e in events:
        k = e.step if e.kind in AFTER_STATE else e.step - 1
        state = _last(states, k) if states is not None else None
        if journaled:  # as the host: the step's ctx.progress, set before its step.finished
            if e.kind == "step.finished" and isinstance(e.payload, dict):
                prog = e.payload.get("progress", prog)
        else:  # no ctx.progress on this commit: what the step declared, by the same rule
            prog = _last(progress, k) if progress else None
        _count_before(usage, e)
        view = View(run=e.run, agent=agent, swarm=start.get("swarm"), goal=str(start.get("goal", "")),
                    epoch=e.epoch, step=e.step, now=_secs(e.time), usage=dict(usage),
                    budget=start.get("budget") or {}, state=state, progress=prog)
        call = _proposal(e)
        if call is not None:
            for v in watch.propose(call, view):
                flags.append(Flag(v.signal.monitor, v.signal.rule, v.level.label, v.stage,
                                  e.step - 1, e.seq, "propose"))
        for v in watch.observe(e, view):
            flags.append(Flag(v.signal.monitor, v.signal.rule, v.level.label, v.stage,
                              e.step - 1, e.seq, "observe"))
        _count_after(usage, e)
    return flags


def _last(by_step: Mapping[int, Any] | None, k: int) -> Any:
    if not by_step:
        return None
    best = None
    for s, v in by_step.items():
        if s <= k and (best is None or s > best[0]):
            best = (s, v)
    return best[1] if best else None


def _add(usage: dict[str, float], key: str, n: float) -> None:
    usage[key] = usage.get(key, 0.0) + n


def _count_before(usage: dict[str, float], e: Event) -> None:
    """What the runtime counts before it appends ``e``: a call before it runs, a step
    before its ``step.finished``."""
    if e.kind == "step.finished":
        _add(usage, "steps", 1)
    elif _proposal(e) is not None:
        _add(usage, "tool_calls", 1)


def _count_after(usage: dict[str, float], e: Event) -> None:
    """A model call's tokens and cost, counted once its event is appended."""
    if e.kind == "model.called" and isinstance(e.payload, dict):
        u = (e.payload.get("response") or {}).get("usage") or {}
        _add(usage, "input_tokens", float(u.get("input_tokens") or 0))
        _add(usage, "output_tokens", float(u.get("output_tokens") or 0))
        _add(usage, "cost_usd", float(e.payload.get("cost_usd") or 0))


def _proposal(e: Event) -> Proposal | None:
    p = e.payload if isinstance(e.payload, dict) else None
    if p is None or "tool" not in p or p.get("rejected"):
        return None
    if e.kind == "tool.called":
        return Proposal(int(p["i"]), str(p["tool"]), "read", p.get("arguments"), str(p["fp"]))
    if e.kind == "effect.intent":
        return Proposal(int(p["i"]), str(p["tool"]), str(p["effect"]), p.get("arguments"),
                        str(p["fp"]))
    return None
