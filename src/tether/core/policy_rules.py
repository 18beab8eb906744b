"""Policy rules: one compiled rule, the policy-wide defaults, and compiling both from specs.

A spec is a table from a policy file's ``[[rule]]`` or a dict given in Python, with the
keys in :data:`RULE_KEYS`. Compiling checks every key and raises :class:`SpecError`
naming the key path (``when.tz``, ``args.amount``); :mod:`tether.core.policy` adds the
file and the rule id.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass, field
from datetime import UTC, tzinfo
from typing import Final, Literal, cast

from tether.core.effect_classes import ACTION_EFFECTS
from tether.core.policy_match import (
    Action,
    ArgTest,
    BudgetTest,
    Names,
    SpecError,
    compile_args,
    compile_budget,
    is_list,
    parse_duration,
    suggest,
)
from tether.core.policy_time import Window, zone
from tether.core.text import nul_in, nul_problem

Verdict = Literal["allow", "deny", "approve", "defer"]
OnExpiry = Literal["deny", "allow", "escalate"]
VERDICTS: Final = ("allow", "deny", "approve", "defer")
ON_EXPIRY: Final = ("deny", "allow", "escalate")
RULE_KEYS: Final = ("id", "agent", "swarm", "tool", "effect", "args", "when", "budget", "decide", "reason",
                    "approvers", "expires", "on_expiry")
DEFAULT_KEYS: Final = ("timezone", "approvers", "expires", "on_expiry")
_APPROVAL_KEYS: Final = ("approvers", "expires", "on_expiry")


@dataclass(frozen=True, slots=True)
class Defaults:
    """The ``[defaults]`` table: time zone of windows without ``tz``, and approval settings used
    by approve rules that name none and by the default approval of irreversible actions."""

    timezone: tzinfo = UTC
    approvers: tuple[str, ...] = ()
    expires: float | None = None
    on_expiry: OnExpiry = "deny"


@dataclass(frozen=True, slots=True)
class Rule:
    """One compiled rule. A condition that is None (or empty) matches every action."""

    id: str
    decide: Verdict
    reason: str | None = None
    agent: Names | None = None
    swarm: Names | None = None
    tool: Names | None = None
    effect: frozenset[str] | None = None
    args: tuple[ArgTest, ...] = ()
    when: Window | None = None
    budget: tuple[BudgetTest, ...] = ()
    approvers: tuple[str, ...] = ()
    expires: float | None = None
    """Seconds an approval may wait; None for the policy default."""
    on_expiry: OnExpiry | None = None
    checks: tuple[Callable[[Action], bool], ...] = field(init=False, repr=False, compare=False)
    """The conditions besides tool and effect, compiled to closures, cheapest first."""

    def __post_init__(self) -> None:
        checks: list[Callable[[Action], bool]] = []
        if self.agent is not None:
            checks.append(self.agent.check("agent"))
        if self.swarm is not None:
            checks.append(self.swarm.check("swarm"))
        checks += [a.check() for a in self.args]
        checks += [b.check() for b in self.budget]
        if (when := self.when) is not None:
            checks.append(lambda action: when.contains(action.at))
        object.__setattr__(self, "checks", tuple(checks))

    def matches(self, action: Action) -> bool:
        """Whether every condition holds for ``action``."""
        return ((self.tool is None or self.tool.match(action.tool))
                and (self.effect is None or action.effect in self.effect)
                and self.matches_rest(action))

    def matches_rest(self, action: Action) -> bool:
        """The conditions besides tool and effect, which the policy's index has already checked."""
        for check in self.checks:  # noqa: SIM110 - a plain loop is faster than all() here
            if not check(action):
                return False
        return True

    def explain(self, action: Action) -> tuple[bool, str]:
        """Whether the rule matches, and why: every condition if it does, the failing ones if not."""
        checks: list[tuple[bool, str]] = []
        if self.tool is not None:
            checks.append(self.tool.explain("tool", action.tool))
        if self.effect is not None:
            ok = action.effect in self.effect
            checks.append((ok, f"effect {action.effect} {'is' if ok else 'is not'} "
                               f"{' or '.join(sorted(self.effect))}"))
        if self.agent is not None:
            checks.append(self.agent.explain("agent", action.agent))
        if self.swarm is not None:
            checks.append(self.swarm.explain("swarm", action.swarm))
        checks += [a.explain(action.arguments) for a in self.args]
        checks += [b.explain(action.budget_used) for b in self.budget]
        if self.when is not None:
            checks.append(self.when.explain(action.at))
        failed = [why for ok, why in checks if not ok]
        if failed:
            return False, "; ".join(failed)
        return True, "; ".join(why for _, why in checks) or "no conditions: matches every action"


def _text(spec: object, path: str) -> str:
    if not isinstance(spec, str) or not spec.strip():
        raise SpecError(path, f"expected a non-empty string, got {spec!r}")
    return spec


Groups = Mapping[str, tuple[str, ...]]
"""The ``[groups]`` table compiled: a group's name -> the people in it."""
GROUP_PREFIX: Final = "group:"
"""How an approvers list names a group of the policy's ``[groups]`` table."""


def compile_groups(spec: object) -> dict[str, tuple[str, ...]]:
    """The ``[groups]`` table (``oncall = ["ada", "bob"]``); SpecError with paths such as
    ``groups.oncall[1]``. A group lists people (token names, OS users), not groups."""
    if spec is None:
        return {}
    if not isinstance(spec, Mapping):
        raise SpecError("groups", f"expected a table of name = [people], got {spec!r}")
    out: dict[str, tuple[str, ...]] = {}
    for name, members in spec.items():
        path = f"groups.{name}"
        if not isinstance(name, str) or not name.strip() or ":" in name:
            raise SpecError(path, "a group's name is a word such as oncall (no ':')")
        if not is_list(members) or not members:
            raise SpecError(path, f"expected a list of user names such as ['alice'], got "
                                  f"{members!r}")
        people = tuple(_text(p, f"{path}[{i}]") for i, p in enumerate(members))
        for i, p in enumerate(people):
            if p.startswith(GROUP_PREFIX):
                raise SpecError(f"{path}[{i}]", f"{p!r}: a group lists people, not groups; "
                                                "write the people's names")
        out[name] = tuple(dict.fromkeys(people))
    return out


def _people(spec: object, path: str, groups: Groups) -> tuple[str, ...]:
    """Approvers: people's names, and ``group:NAME`` for each member of a group (in order,
    each name once)."""
    if not is_list(spec) or not spec:
        raise SpecError(path, f"expected a list of user names such as ['alice'] or "
                              f"['group:oncall'], got {spec!r}")
    out: list[str] = []
    for i, p in enumerate(spec):
        name = _text(p, f"{path}[{i}]")
        if name.startswith(GROUP_PREFIX):
            group = name[len(GROUP_PREFIX):]
            if group not in groups:
                known = ", ".join(sorted(groups)) or "no groups"
                raise SpecError(f"{path}[{i}]", f"unknown group {group!r}"
                                                f"{suggest(group, groups)}; [groups] defines "
                                                f"{known}")
            out += groups[group]
        else:
            out.append(name)
    return tuple(dict.fromkeys(out))


def _choice(spec: object, path: str, choices: tuple[str, ...]) -> str:
    if spec not in choices:
        hint = suggest(spec, choices) if isinstance(spec, str) else ""
        raise SpecError(path, f"{spec!r} is not one of {', '.join(choices)}{hint}")
    return spec


def _effects(spec: object, path: str) -> frozenset[str]:
    items: list[object] = list(spec) if is_list(spec) else [spec]
    if not items:
        raise SpecError(path, f"expected an effect class or a list of them ({', '.join(ACTION_EFFECTS)})")
    return frozenset(_choice(e, path, ACTION_EFFECTS) for e in items)


def _check_keys(spec: Mapping[str, object], path: str, allowed: tuple[str, ...], what: str) -> None:
    for key in spec:
        if key not in allowed:
            sub = f"{path}.{key}" if path else str(key)
            raise SpecError(sub, f"unknown key{suggest(str(key), allowed)}; {what} has keys "
                                 f"{', '.join(allowed)}")


def compile_defaults(spec: object, groups: Groups | None = None) -> Defaults:
    """The ``[defaults]`` table; SpecError with paths such as ``defaults.timezone``."""
    if not isinstance(spec, Mapping):
        raise SpecError("defaults", f"expected a table, got {spec!r}")
    _check_keys(spec, "defaults", DEFAULT_KEYS, "[defaults]")
    d = Defaults()
    return Defaults(
        timezone=zone(spec["timezone"], "defaults.timezone") if "timezone" in spec else d.timezone,
        approvers=_people(spec["approvers"], "defaults.approvers", groups or {})
        if "approvers" in spec else (),
        expires=parse_duration(spec["expires"], "defaults.expires") if "expires" in spec else None,
        on_expiry=cast(OnExpiry, _choice(spec.get("on_expiry", "deny"), "defaults.on_expiry", ON_EXPIRY)))


def refuse_nul_in(spec: object, *, skip: tuple[str, ...] = ()) -> None:
    """SpecError at the first text of ``spec`` holding a NUL character (a key or a value;
    not below the keys in ``skip``). PostgreSQL's text cannot hold one: a rule id, reason
    or tool name holding it would fail every run whose decision the store journals."""
    found = nul_in(spec, skip=skip)
    if found is not None:
        raise SpecError(found[0], nul_problem(found[1]))


def compile_rule(spec: object, defaults: Defaults, known_tools: Set[str] | None = None,
                 groups: Groups | None = None) -> Rule:
    """One rule from its spec (``group:NAME`` approvers expanded from ``groups``). Raises
    SpecError naming the key path."""
    # First, so no message below prints a NUL. Argument matchers are not looked into: a rule
    # may look for a NUL in an argument (a path holding one, say), and arguments are stored
    # as JSON bytes, never as text.
    refuse_nul_in(spec, skip=("args",))
    if not isinstance(spec, Mapping):
        raise SpecError("", f"expected a table of keys ({', '.join(RULE_KEYS)}), got {spec!r}")
    _check_keys(spec, "", RULE_KEYS, "a rule")
    if "id" not in spec:
        raise SpecError("id", "required: a unique name for the rule, used in decisions and the journal")
    rid = _text(spec["id"], "id")
    if "decide" not in spec:
        raise SpecError("decide", f"required: one of {', '.join(VERDICTS)}")
    decide = cast(Verdict, _choice(spec["decide"], "decide", VERDICTS))
    rule = Rule(
        id=rid, decide=decide,
        reason=_text(spec["reason"], "reason") if "reason" in spec else None,
        agent=Names.compile(spec["agent"], "agent") if "agent" in spec else None,
        swarm=Names.compile(spec["swarm"], "swarm") if "swarm" in spec else None,
        tool=Names.compile(spec["tool"], "tool") if "tool" in spec else None,
        effect=_effects(spec["effect"], "effect") if "effect" in spec else None,
        args=compile_args(spec["args"], "args") if "args" in spec else (),
        when=Window.compile(spec["when"], "when", defaults.timezone) if "when" in spec else None,
        budget=compile_budget(spec["budget"], "budget") if "budget" in spec else (),
        approvers=_people(spec["approvers"], "approvers", groups or {})
        if "approvers" in spec else (),
        expires=parse_duration(spec["expires"], "expires") if "expires" in spec else None,
        on_expiry=cast(OnExpiry, _choice(spec["on_expiry"], "on_expiry", ON_EXPIRY))
        if "on_expiry" in spec else None)
    _check_meaning(rule, spec, known_tools)
    return rule


def _check_meaning(rule: Rule, spec: Mapping[str, object], known_tools: Set[str] | None) -> None:
    if rule.decide != "approve":
        for key in _APPROVAL_KEYS:
            if key in spec:
                raise SpecError(key, f"only an approve rule waits for a person, and this rule decides "
                                     f"{rule.decide!r}: remove {key} or decide 'approve'")
    if rule.decide == "defer":
        if rule.when is None:
            raise SpecError("when", "a defer rule needs a window: the action is held until it ends, "
                                    "e.g. when = { between = \"00:00-07:00\", tz = \"Europe/Berlin\" }")
        if rule.when.whole_week:
            raise SpecError("when", "the window covers every hour of every day, so a deferred action "
                                    "would never run")
    if known_tools is not None and rule.tool is not None and rule.effect != frozenset({"model"}):
        for name in sorted(rule.tool.exact - known_tools):
            known = ", ".join(sorted(known_tools)) or "none"
            raise SpecError("tool", f"unknown tool {name!r}{suggest(name, known_tools)}; the agents define "
                                    f"{known}")
