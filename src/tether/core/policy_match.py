"""What a policy rule matches on: the action, name globs, argument predicates, budget state.

Each condition is compiled once from its spec (a value from TOML or Python) and then
tested against many actions. Compiling raises :class:`SpecError` with the key path
below the rule (``args.amount.gt``); the rule compiler adds the file and the rule id
and raises :class:`PolicyError`. Every test is total: a missing argument, a value of
the wrong type or an untracked budget never matches and never raises, so a surprising
action cannot crash a decision. Time windows live in :mod:`tether.core.policy_time`.
"""

from __future__ import annotations

import difflib
import fnmatch
import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeGuard

from tether.core import budget as budgets
from tether.core.effect_classes import ACTION_EFFECTS
from tether.errors import UsageError


class PolicyError(UsageError):
    """A policy that cannot be used: names the file and line, or the rule id and key path."""


class SpecError(Exception):
    """A bad value at ``path`` below a rule; the rule compiler turns it into a PolicyError."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


@dataclass(frozen=True, slots=True)
class Action:
    """What the runtime is about to do, as a policy sees it. Build one per tool or model call."""

    run: str
    agent: str
    """The agent's name."""
    swarm: str | None
    tool: str
    """The tool's name; for a model call, the model's name."""
    effect: str
    """``read``, ``reversible``, ``irreversible``, or ``model`` for a model call."""
    arguments: Mapping[str, Any]
    at: float
    """Seconds since the epoch, on the run's (injected) clock."""
    budget_used: Mapping[str, float] = field(default_factory=dict)
    """Fraction of each budget cap used, e.g. ``{"cost_usd_per_day": 0.8}``."""

    def __post_init__(self) -> None:
        if not math.isfinite(self.at):
            raise PolicyError(f"action {self.tool!r} of run {self.run}: time {self.at!r} is not a number "
                              "of seconds since the epoch")
        if self.effect not in ACTION_EFFECTS:
            raise PolicyError(f"action {self.tool!r} of run {self.run}: effect {self.effect!r} is not one "
                              f"of {', '.join(ACTION_EFFECTS)}")


def suggest(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest choice, or nothing."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def is_list(value: object) -> TypeGuard[Sequence[Any]]:
    """A TOML array (a list or tuple from Python); never a string."""
    return isinstance(value, list | tuple)


def is_number(value: object) -> TypeGuard[int | float]:
    """An int or float, and not a bool (TOML's ``true`` is not 1)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def show(value: object) -> str:
    """A value as an operator reads it in an explanation (TOML spelling for booleans)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def same(a: object, b: object) -> bool:
    """Equality that keeps booleans apart from numbers."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)


GLOB_CHARS: Final = frozenset("*?[")


def is_glob(pattern: str) -> bool:
    return not GLOB_CHARS.isdisjoint(pattern)


@dataclass(frozen=True, slots=True)
class Names:
    """Names matched by one glob or a list of globs (``send_*``, ``["a", "b"]``); case-sensitive."""

    patterns: tuple[str, ...]
    exact: frozenset[str]
    """The patterns without glob characters, looked up in a set."""
    globs: re.Pattern[str] | None
    """All glob patterns as one compiled regular expression."""

    @classmethod
    def compile(cls, spec: object, path: str) -> Names:
        items: list[object] = list(spec) if is_list(spec) else [spec]
        names = [i for i in items if isinstance(i, str) and i]
        if not names or len(names) != len(items):
            raise SpecError(path, f"expected a name or glob, or a list of them, got {spec!r}")
        globs = [p for p in names if is_glob(p)]
        rx = re.compile("|".join(fnmatch.translate(p) for p in globs)) if globs else None
        return cls(tuple(names), frozenset(p for p in names if not is_glob(p)), rx)

    def match(self, name: str | None) -> bool:
        if name is None:
            return False
        return name in self.exact or (self.globs is not None and self.globs.match(name) is not None)

    def check(self, attr: str) -> Callable[[Action], bool]:
        """``match`` of the action's ``attr`` (agent or swarm) as one closure, for the hot loop."""
        exact, rx, get = self.exact, self.globs, operator.attrgetter(attr)
        if rx is None:
            return lambda action: get(action) in exact
        if not exact:
            return lambda action: (v := get(action)) is not None and rx.match(v) is not None
        return lambda action: self.match(get(action))

    def explain(self, what: str, name: str | None) -> tuple[bool, str]:
        if name is None:
            return False, f"the action has no {what}"
        ok = self.match(name)
        return ok, f"{what} {name!r} {'matches' if ok else 'does not match'} {self}"

    def __str__(self) -> str:
        return repr(self.patterns[0]) if len(self.patterns) == 1 else repr(list(self.patterns))


NUMERIC: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "gt": operator.gt, "gte": operator.ge, "lt": operator.lt, "lte": operator.le}
ARG_OPS: Final = ("eq", "ne", "glob", "regex", "gt", "gte", "lt", "lte", "in", "not_in")


@dataclass(frozen=True, slots=True, eq=False)
class Predicate:
    """One test of a value, e.g. ``gt 100``; ``test`` is compiled once."""

    op: str
    operand: object
    test: Callable[[object], bool] = field(repr=False)

    def __str__(self) -> str:
        return f"{self.op} {show(self.operand)}"


def _tester(op: str, operand: Any, path: str) -> Callable[[object], bool]:
    if op in NUMERIC:
        if not is_number(operand):
            raise SpecError(path, f"expected a number, got {operand!r}")
        cmp = NUMERIC[op]

        def compare(v: object) -> bool:
            t = type(v)  # plain int and float first: this runs for every action that reaches the rule
            return (t is int or t is float or (t is not bool and isinstance(v, int | float))) and cmp(
                v, operand)

        return compare
    if op == "eq":
        return lambda v: same(v, operand)
    if op == "ne":
        return lambda v: not same(v, operand)
    if op in ("glob", "regex"):
        if not isinstance(operand, str):
            raise SpecError(path, f"expected a string, got {operand!r}")
        try:
            rx = re.compile(fnmatch.translate(operand) if op == "glob" else operand)
        except re.error as exc:
            raise SpecError(path, f"bad regular expression {operand!r}: {exc}") from None
        # A regex must match the whole string, like a glob: an allow rule for ".*@corp\.com"
        # must not also allow "x@corp.com.evil.net".
        return lambda v: isinstance(v, str) and rx.fullmatch(v) is not None
    if not is_list(operand):
        raise SpecError(path, f"expected a list of values, got {operand!r}")
    items = tuple(operand)
    strings = frozenset(i for i in items if isinstance(i, str))
    others = tuple(i for i in items if not isinstance(i, str))

    def inside(v: object) -> bool:
        if isinstance(v, str):
            return v in strings
        return any(same(v, i) for i in others)

    return inside if op == "in" else lambda v: not inside(v)


def compile_predicates(spec: object, path: str, ops: Sequence[str]) -> tuple[Predicate, ...]:
    """A table of predicates (``{ gt = 1, lt = 5 }``), all of which must hold."""
    if not isinstance(spec, Mapping) or not spec:
        raise SpecError(path, f"expected a table of predicates ({', '.join(ops)}), got {spec!r}")
    out = []
    for op, operand in spec.items():
        if op not in ops:
            raise SpecError(path, f"unknown predicate {op!r}{suggest(str(op), ops)}; use {', '.join(ops)}")
        out.append(Predicate(op, operand, _tester(op, operand, f"{path}.{op}")))
    return tuple(out)


def _check(preds: tuple[Predicate, ...], value: object) -> bool:
    for p in preds:  # noqa: SIM110 - a plain loop is faster than all() on the per-action path
        if not p.test(value):
            return False
    return True


def _explain(preds: tuple[Predicate, ...], what: str, value: object) -> tuple[bool, str]:
    failed = [p for p in preds if not p.test(value)]
    if failed:
        return False, f"{what} = {show(value)} fails {', '.join(map(str, failed))}"
    return True, f"{what} = {show(value)} satisfies {', '.join(map(str, preds))}"


@dataclass(frozen=True, slots=True)
class ArgTest:
    """Predicates on one argument; a missing argument never matches."""

    name: str
    predicates: tuple[Predicate, ...]

    def test(self, arguments: Mapping[str, Any]) -> bool:
        try:
            value = arguments[self.name]
        except (KeyError, TypeError):
            return False
        return _check(self.predicates, value)

    def check(self) -> Callable[[Action], bool]:
        """``test`` as one closure over an action, for the policy's hot loop."""
        name, preds = self.name, self.predicates
        if len(preds) != 1:
            return lambda action: self.test(action.arguments)
        test = preds[0].test

        def check(action: Action) -> bool:
            try:
                value = action.arguments[name]
            except (KeyError, TypeError):
                return False
            return test(value)

        return check

    def explain(self, arguments: Mapping[str, Any]) -> tuple[bool, str]:
        if self.name not in arguments:
            return False, f"args.{self.name} is missing"
        return _explain(self.predicates, f"args.{self.name}", arguments[self.name])


def compile_args(spec: object, path: str) -> tuple[ArgTest, ...]:
    """``{ amount = { gt = 100 }, to = "a@b.c" }``: a bare scalar means ``eq``."""
    if not isinstance(spec, Mapping):
        raise SpecError(path, f"expected a table of argument names, got {spec!r}")
    out = []
    for name, preds in spec.items():
        sub = f"{path}.{name}"
        if isinstance(preds, str | int | float | bool):
            preds = {"eq": preds}
        elif not isinstance(preds, Mapping):
            raise SpecError(sub, f"expected a value or a table of predicates ({', '.join(ARG_OPS)}), "
                                 f"got {preds!r}; for membership write {{ in = [...] }}")
        out.append(ArgTest(str(name), compile_predicates(preds, sub, ARG_OPS)))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class BudgetTest:
    """Predicates on the fraction used of one budget cap; an untracked cap never matches."""

    key: str
    predicates: tuple[Predicate, ...]

    def test(self, used: Mapping[str, float]) -> bool:
        value = used.get(self.key)
        return value is not None and _check(self.predicates, value)

    def check(self) -> Callable[[Action], bool]:
        """``test`` as one closure over an action."""
        return lambda action: self.test(action.budget_used)

    def explain(self, used: Mapping[str, float]) -> tuple[bool, str]:
        if self.key not in used:
            return False, f"budget {self.key} is not tracked for this run"
        return _explain(self.predicates, f"budget.{self.key}", used[self.key])


def compile_budget(spec: object, path: str) -> tuple[BudgetTest, ...]:
    """``{ cost_usd_per_day = { gte = 0.8 } }`` on fractions of the caps."""
    if not isinstance(spec, Mapping):
        raise SpecError(path, f"expected a table of budget keys, got {spec!r}")
    out = []
    for key, preds in spec.items():
        sub = f"{path}.{key}"
        try:
            budgets.parse_key(str(key))
        except UsageError as exc:
            raise SpecError(sub, str(exc)) from None
        out.append(BudgetTest(str(key), compile_predicates(preds, sub, tuple(NUMERIC))))
    return tuple(out)


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")
_UNITS: Final = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(spec: object, path: str) -> float:
    """``"30m"``, ``"2h"``, ``"1d"``, ``"45s"`` or a number of seconds."""
    m = _DURATION.fullmatch(spec.strip()) if isinstance(spec, str) else None
    if m:
        seconds = float(m[1]) * _UNITS[m[2]]
    elif is_number(spec):
        seconds = float(spec)
    else:
        raise SpecError(path, f"expected a duration such as '30m', '2h', '1d' or a number of seconds, "
                              f"got {spec!r}")
    if not seconds > 0 or math.isinf(seconds):
        raise SpecError(path, f"must be a positive, finite duration, got {spec!r}")
    return seconds
