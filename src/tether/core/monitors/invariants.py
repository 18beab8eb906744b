"""The ``invariants`` monitor: predicates the user declares on a run, checked after every
step.

Two ways to declare one:

* in Python, a function decorated with :func:`invariant`, given to the agent
  (``StepAgent(..., invariants=[fn])``, or ``monitors=[fn]``): it gets a
  :class:`Facts` and returns something true while the invariant holds;
* in the policy file, a safe expression (:mod:`.expr`, never ``eval``)::

      [monitors.agent.router.invariants]
      rules = ["len(state.get('history', [])) < 1000"]
      named = { small_batches = "len(messages) <= 3" }
      constants = { limit = 5 }
      stages = ["quarantine"]

Both are checked when the step's ``step.finished`` is journaled, on the run's state
as the step left it, the step's effects (tool, arguments, status, and for file
tools the after-image hash of each path: ``files``) and the messages it sent. An
invariant that breaks is one signal (rule: its name) whose figures are what it
saw now and what it saw at the previous step (the diff that broke it), and, for
``all``/``any``, the offending item. It is reported when it breaks, not again at
every step it stays broken; once it holds again, the next break is reported (and
takes the next stage).

Files are seen as paths and after-image hashes from the journal, never read: a
monitor does no I/O, a hash is what replay and ``tether analyze`` see too, and a
file's content at check time may already be another run's. An invariant on a
file's content belongs in the step that wrote it (or a tool's ``prepare``).

A predicate that raises (or a rule that cannot be evaluated: a missing key, a
wrong type) is a ``monitor_error`` alert naming it; that invariant is off for the
rest of the run, the others go on, and the run is never taken down by it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, overload

from tether.core.events import Event
from tether.core.monitors.base import MonitorKind, Quiet, View, register
from tether.core.monitors.expr import EvalError, ExprError, Rule, Seen, compile_rule
from tether.core.monitors.verdicts import Level, Signal

NAME: Final = "invariants"
NAMES: Final = ("state", "effects", "files", "messages", "step", "run", "agent")
"""What a policy rule can name, besides its table's ``constants``."""
STEP_KINDS: Final = frozenset({"effect.intent", "effect.done", "effect.failed",
                               "message.sent", "model.called"})
"""The events of a step an invariant's facts (and its evidence) are made of."""
MAX_SEEN: Final = 64
SHOWN: Final = 8
"""Values an alert shows: the last ones the predicate read before it decided."""


@dataclass(frozen=True, slots=True)
class Facts:
    """What an invariant sees after a step; read-only (the state is a view that
    refuses writes and notes what is read, which is the diff an alert shows)."""

    run: str
    agent: str
    step: int
    state: Mapping[str, Any]
    effects: tuple[Mapping[str, Any], ...] = ()
    """The step's effects: ``{"id", "tool", "effect", "arguments", "status"`` (``done``,
    ``failed`` or ``intent``: in flight or in doubt), ``"files"``, ``"result"}``."""
    files: Mapping[str, str | None] = field(default_factory=dict)
    """Paths the step's effects wrote, with their after-image hash (SHA-256 hex,
    ``"dir"``, or None when deleted)."""
    messages: tuple[Mapping[str, Any], ...] = ()
    """The step's sent messages: ``{"to", "topic", "body"}``."""


class Invariant:
    """A Python invariant (see :func:`invariant`); calling it with no argument makes a
    monitor that checks it alone, so it can also be given as ``monitors=[fn]``."""

    def __init__(self, fn: Callable[[Facts], object], name: str) -> None:
        self.fn, self.name = fn, name
        self.text: str | None = None

    def check(self, facts: Facts, seen: Seen) -> bool:
        state = ReadOnly(facts.state, "state", seen)
        return bool(self.fn(Facts(facts.run, facts.agent, facts.step, state, facts.effects,
                                  facts.files, facts.messages)))

    def __call__(self) -> InvariantsMonitor:
        return InvariantsMonitor([self])

    def __repr__(self) -> str:
        return f"<invariant {self.name}>"


@overload
def invariant(fn: Callable[[Facts], object], /) -> Invariant: ...
@overload
def invariant(*, name: str | None = None) -> Callable[[Callable[[Facts], object]], Invariant]: ...
def invariant(fn: Callable[[Facts], object] | None = None, /, *,
              name: str | None = None) -> Any:
    """Declare an invariant: ``fn(facts)`` returns something true while it holds.

    Example:
        >>> @invariant
        ... def queue_stays_small(f: Facts) -> bool:
        ...     return len(f.state.get("queue", [])) < 100
        >>> agent = StepAgent(step, invariants=[queue_stays_small])
    """
    if fn is not None:
        return Invariant(fn, name or fn.__name__)
    return lambda f: Invariant(f, name or f.__name__)


@dataclass(frozen=True, slots=True)
class RuleCheck:
    """A policy rule, with its table's constants."""

    name: str
    rule: Rule
    constants: Mapping[str, Any]

    @property
    def text(self) -> str:
        return self.rule.text

    def check(self, facts: Facts, seen: Seen) -> bool:
        return self.rule.holds({"state": facts.state, "effects": list(facts.effects),
                                "files": dict(facts.files), "messages": list(facts.messages),
                                "step": facts.step, "run": facts.run, "agent": facts.agent,
                                **self.constants}, seen)


Check = Invariant | RuleCheck


class InvariantsMonitor(Quiet):
    """Checks its invariants at every ``step.finished`` (see the module docstring)."""

    name = NAME

    def __init__(self, checks: Iterable[Check]) -> None:
        self.checks = list(checks)
        # With nothing to check it looks at nothing (the built-in's default: no rules).
        self.kinds = STEP_KINDS | {"step.started", "step.finished"} if self.checks \
            else frozenset()
        self.step_events: list[Event] = []
        self.before: dict[str, dict[str, Any]] = {}
        """What each invariant saw at its last check."""
        self.broken: set[str] = set()
        self.off: set[str] = set()

    def observe(self, event: Event, view: View) -> Iterable[Signal]:
        if not self.checks:
            return ()
        if event.kind in STEP_KINDS:
            self.step_events.append(event)
            return ()
        if event.kind == "step.started":
            self.step_events = []
        if event.kind != "step.finished":
            return ()
        events, self.step_events = self.step_events, []
        facts = _facts(events, view)
        evidence = (event.id, *[e.id for e in events][-15:])
        return [s for c in self.checks if c.name not in self.off
                for s in self._judge(c, facts, evidence)]

    def _judge(self, c: Check, facts: Facts, evidence: tuple[str, ...]) -> Iterator[Signal]:
        seen = Seen()
        try:
            ok = c.check(facts, seen)
        except Exception as exc:  # the user's predicate: an alert, never a crashed worker
            self.off.add(c.name)
            why = str(exc) if isinstance(exc, EvalError) else f"{type(exc).__name__}: {exc}"
            yield Signal(NAME, "monitor_error", f"run {facts.run} step {facts.step}: invariant "
                         f"{c.name!r} could not be checked ({why}); it is off for this run: "
                         "fix it, then resume or restart the run", evidence=evidence[:1],
                         figures={"invariant": c.name, "error": why}, level=Level.ALERT)
            return
        before, now = self.before.get(c.name, {}), _summary(seen.values)
        self.before[c.name] = now
        if ok:
            self.broken.discard(c.name)
            return
        if c.name in self.broken:
            return
        self.broken.add(c.name)
        yield _broke(c, facts, before, now, _summary(seen.offending), evidence)


def _broke(c: Check, facts: Facts, before: Mapping[str, Any], now: Mapping[str, Any],
           offending: Mapping[str, Any], evidence: tuple[str, ...]) -> Signal:
    shown = dict(list(now.items())[-SHOWN:])
    diff = {k: {"before": before[k], "now": v} for k, v in shown.items()
            if k in before and before[k] != v}
    # The whole rule's own value (true, now false) says nothing the break does not.
    parts = [f"{k} was {_short(d['before'])}, now {_short(d['now'])}" for k, d in diff.items()
             if k != c.text]
    parts += [f"{k} = {_short(v)}" for k, v in shown.items() if k not in diff][:3]
    if offending:
        parts.append("at " + ", ".join(f"{k} = {_short(v)}" for k, v in offending.items()))
    return Signal(NAME, c.name, f"invariant {c.name!r} broke at step {facts.step}"
                  + (": " + "; ".join(parts) if parts else ""), evidence=evidence,
                  figures={"invariant": c.name, "step": facts.step, "rule": c.text,
                           "now": shown, "before": {k: before[k] for k in shown if k in before},
                           "changed": sorted(diff), "offending": dict(offending)},
                  threshold=c.text or c.name)


def _facts(events: Sequence[Event], view: View) -> Facts:
    effects: dict[str, dict[str, Any]] = {}
    messages: list[Mapping[str, Any]] = []
    for e in events:
        p = e.payload if isinstance(e.payload, dict) else {}
        if e.kind == "effect.intent":
            effects[e.id] = {"id": e.id, "tool": p.get("tool"), "effect": p.get("effect"),
                             "arguments": p.get("arguments"), "status": "intent",
                             "files": {}, "result": None}
        elif e.kind in ("effect.done", "effect.failed") and e.causes and e.causes[0] in effects:
            eff = effects[e.causes[0]]
            eff["status"] = e.kind.split(".", 1)[1]
            eff["result"] = p.get("result", p.get("error"))
            eff["files"] = dict((p.get("after") or {}).get("files") or {})
        elif e.kind == "message.sent":
            messages.append({"to": p.get("to_name"), "topic": p.get("topic"),
                             "body": p.get("body")})
    files = {path: h for eff in effects.values() for path, h in eff["files"].items()}
    return Facts(view.run, view.agent, view.step, view.state or {}, tuple(effects.values()),
                 files, tuple(messages))


def _summary(values: Mapping[str, Any]) -> dict[str, Any]:
    """JSON values for the alert (a long one cut short); copied, so a state the step
    changes in place later does not change what was seen."""
    out: dict[str, Any] = {}
    for k, v in list(values.items())[-MAX_SEEN:]:
        if v is None or isinstance(v, (bool, int, float)):
            out[k] = v
            continue
        text = v if isinstance(v, str) else json.dumps(v, default=str, sort_keys=True)
        out[k] = v if isinstance(v, str) and len(v) <= 300 else (
            json.loads(text) if len(text) <= 300 else text[:300] + "...")
    return out


def _short(v: Any) -> str:
    text = v if isinstance(v, str) and v.endswith("...") else json.dumps(v, default=str)
    return text if len(text) <= 120 else text[:117] + "..."


class ReadOnly(Mapping[str, Any]):
    """A state (or a table in it) that cannot be changed, read as ``s["k"]`` or ``s.k``;
    each value read is noted in ``seen`` under its path."""

    __slots__ = ("_d", "_path", "_seen")

    def __init__(self, d: Mapping[str, Any], path: str, seen: Seen) -> None:
        self._d, self._path, self._seen = d, path, seen

    def __getitem__(self, k: str) -> Any:
        sub = f"{self._path}.{k}" if isinstance(k, str) and k.isidentifier() else \
            f"{self._path}[{k!r}]"
        return _wrap(self._d[k], sub, self._seen)

    def __getattr__(self, k: str) -> Any:
        if k.startswith("_"):
            raise AttributeError(k)
        try:
            return self[k]
        except KeyError:
            raise AttributeError(f"{self._path} has no key {k!r}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._d)

    def __len__(self) -> int:
        return _noted(self._seen, f"len({self._path})", len(self._d))


class ReadOnlyList(Sequence[Any]):
    """A list in a read-only state (see :class:`ReadOnly`)."""

    __slots__ = ("_items", "_path", "_seen")

    def __init__(self, items: Sequence[Any], path: str, seen: Seen) -> None:
        self._items, self._path, self._seen = items, path, seen

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return ReadOnlyList(self._items[i], f"{self._path}[{i.start}:{i.stop}]", self._seen)
        n = i if i >= 0 else len(self._items) + i
        return _wrap(self._items[i], f"{self._path}[{n}]", self._seen)

    def __len__(self) -> int:
        return _noted(self._seen, f"len({self._path})", len(self._items))


def _noted(seen: Seen, path: str, v: int) -> int:
    if len(seen.values) < MAX_SEEN * 4:
        seen.values[path] = v
    return v


def _wrap(v: Any, path: str, seen: Seen) -> Any:
    if isinstance(v, Mapping):
        return ReadOnly(v, path, seen)
    if isinstance(v, (list, tuple)):
        return ReadOnlyList(v, path, seen)
    if len(seen.values) < MAX_SEEN * 4:
        seen.values[path] = v
    return v


# -- the policy file's [monitors.invariants] ---------------------------------------

def _rules(params: Mapping[str, Any], where: str) -> list[RuleCheck]:
    """Compile a table's ``rules``, ``named`` and ``constants`` (ExprError with the key path)."""
    constants = params.get("constants") or {}
    for k in constants:
        if not k.isidentifier() or k in NAMES or k.startswith("_"):
            raise ExprError(f"{where}.constants.{k}: a constant needs a name a rule can use "
                            f"(an identifier, not one of {', '.join(NAMES)})")
    names = [*NAMES, *constants]
    rules = params.get("rules") or []
    out = [RuleCheck(text if isinstance(text, str) else "", compile_rule(
        text, names, where=f"{where}.rules[{i}]"), constants) for i, text in enumerate(rules)]
    for name, text in (params.get("named") or {}).items():
        out.append(RuleCheck(name, compile_rule(text, names, where=f"{where}.named.{name}"),
                             constants))
    return out


def _check(params: Mapping[str, Any], where: str) -> None:
    _rules(params, where)


def _make(params: Mapping[str, Any]) -> InvariantsMonitor:
    return InvariantsMonitor(_rules(params, f"monitors.{NAME}"))


KIND = register(MonitorKind(
    NAME, _make, {"rules": [], "named": {}, "constants": {}}, check=_check,
    doc="predicates on a run's state, effects and files, checked after every step"))
