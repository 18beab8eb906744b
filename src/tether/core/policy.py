"""Policies: rules the runtime checks before every action, and the decisions they give.

A policy file (``tether.toml`` or ``--policy FILE``)::

    [defaults]
    timezone = "Europe/Berlin"        # for windows without their own tz (else UTC)
    expires = "8h"                    # approvals wait this long, then on_expiry applies

    [[rule]]
    id = "no-email-at-night"
    tool = "send_*"
    effect = "irreversible"
    when = { between = "00:00-07:00", days = ["mon", "tue", "wed", "thu", "fri"] }
    decide = "defer"

    [[rule]]
    id = "big-payments"
    tool = "pay"
    args = { amount = { gt = 100 }, currency = { in = ["EUR", "USD"] } }
    decide = "approve"
    approvers = ["alice", "group:finance"]

    [groups]                          # approvers may name groups as group:NAME
    finance = ["bob", "carol"]

Rules are tried in file order and the first that matches decides. With no match,
``read``, ``reversible`` and ``model`` actions are allowed and ``irreversible`` ones
need approval, so an empty policy is never allow-all. A policy that cannot be read
is refused with a :class:`PolicyError` naming the file and line, or the rule id and
key path. Deciding is pure: the runtime builds an :class:`Action`, calls
:meth:`Policy.decide`, journals the :class:`Decision` and acts on it.

Example:
    >>> policy = rules_from_python([{"id": "no-rm", "tool": "rm_*", "decide": "deny"}])
    >>> policy.decide(Action(run="r1", agent="a", swarm=None, tool="rm_file", effect="irreversible",
    ...                      arguments={}, at=0.0)).verdict
    'deny'
"""

from __future__ import annotations

import functools
import os
import re
import stat
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence, Set
from dataclasses import dataclass
from datetime import datetime
from os import PathLike
from pathlib import Path
from typing import Any, Final

from tether.core import canonical
from tether.core.effect_classes import ACTION_EFFECTS
from tether.core.monitors import MonitorSettings, MonitorSpecError, compile_monitors
from tether.core.policy_match import Action, Names, PolicyError, SpecError
from tether.core.policy_rules import (
    Defaults,
    OnExpiry,
    Rule,
    Verdict,
    compile_defaults,
    compile_groups,
    compile_rule,
    refuse_nul_in,
)
from tether.core.policy_time import zone_name
from tether.core.redaction import DEFAULT as DEFAULT_REDACTION
from tether.core.redaction import RedactionError, Redactor, compile_redaction

__all__ = ["Action", "Decision", "Defaults", "Policy", "PolicyError", "Rule", "builtin_policy", "load_policy",
           "parse_policy", "policy_from_text", "rules_from_python"]

TOP_KEYS: Final = ("rule", "defaults", "groups", "monitors", "redaction")
_CACHE_LIMIT: Final = 4096
_TOML_AT = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")


@dataclass(frozen=True, slots=True)
class Decision:
    """What a policy decided about one action; journaled as ``policy.decided``."""

    verdict: Verdict
    rule: str | None
    """The id of the deciding rule; None when no rule matched and the default applied."""
    reason: str
    """Why, for the journal and, on ``deny``, for the model."""
    until: float | None
    """For ``defer``: when the window ends (epoch seconds), the time to try the action again."""
    approvers: tuple[str, ...]
    """For ``approve``: who may approve; empty means anyone allowed to approve."""
    expires_after: float | None
    """For ``approve``: seconds the request waits; None for no expiry."""
    on_expiry: OnExpiry
    """For ``approve``: what happens when the request expires."""
    policy_hash: str
    """SHA-256 of the policy version that decided."""

    def to_payload(self) -> dict[str, Any]:
        """The decision as JSON-ready data, for the ``policy.decided`` event."""
        return {"verdict": self.verdict, "rule": self.rule, "reason": self.reason, "until": self.until,
                "approvers": list(self.approvers), "expires_after": self.expires_after,
                "on_expiry": self.on_expiry, "policy_hash": self.policy_hash}


_Candidates = tuple[tuple[Rule, Decision | None, tuple[Callable[[Action], bool], ...]], ...]


class Policy:
    """A compiled rule set, indexed by tool name and effect class; immutable once built.

    ``decide`` gives exactly what a scan of the rules in order would give: the index only
    skips rules whose tool or effect cannot match, and keeps the others in rule order.
    """

    __slots__ = ("_any_tool", "_by_effect", "_by_name", "_cache", "_default", "_fixed", "_globbed",
                 "defaults", "format", "groups", "hash", "monitors", "redaction", "rules", "source",
                 "text")

    def __init__(self, rules: Iterable[Rule], *, policy_hash: str, source: str = "<python>",
                 defaults: Defaults | None = None, text: str = "", format: str = "toml",
                 monitors: MonitorSettings | None = None,
                 redaction: Redactor | None = None,
                 groups: Mapping[str, tuple[str, ...]] | None = None) -> None:
        self.rules: tuple[Rule, ...] = tuple(rules)
        self.groups: dict[str, tuple[str, ...]] = dict(groups or {})
        """The ``[groups]`` table (group -> people), expanded in the approvers already."""
        self.monitors = monitors or MonitorSettings()
        """The ``[monitors]`` tables (:mod:`tether.core.monitors.settings`)."""
        self.redaction = redaction or DEFAULT_REDACTION
        """The built-in secret patterns plus the ``[redaction]`` table's
        (:mod:`tether.core.redaction`)."""
        self.hash = policy_hash
        self.source = source
        self.defaults = defaults or Defaults()
        self.text = text
        """What the policy was compiled from (TOML, or canonical JSON for rules given in
        Python): what ``tether policy apply`` records in the store chain."""
        self.format = format
        """``toml`` or ``json``: how :attr:`text` reads (see :func:`policy_from_text`)."""
        seen: dict[str, int] = {}
        for n, r in enumerate(self.rules, 1):
            if r.id in seen:
                raise PolicyError(f"{source}: rule {r.id!r}: id: duplicate id (rule #{seen[r.id]} has it "
                                  f"too); give every rule its own id")
            seen[r.id] = n
        self._fixed = tuple(None if r.decide == "defer" else self._decision(r, None) for r in self.rules)
        by_name: dict[str, list[int]] = {}
        self._globbed: tuple[tuple[int, Names], ...] = tuple(
            (i, r.tool) for i, r in enumerate(self.rules) if r.tool is not None and r.tool.globs is not None)
        self._any_tool = frozenset(i for i, r in enumerate(self.rules) if r.tool is None)
        for i, r in enumerate(self.rules):
            for name in r.tool.exact if r.tool is not None else ():
                by_name.setdefault(name, []).append(i)
        self._by_name = {k: frozenset(v) for k, v in by_name.items()}
        self._by_effect = {e: frozenset(i for i, r in enumerate(self.rules)
                                        if r.effect is None or e in r.effect) for e in ACTION_EFFECTS}
        self._cache: dict[tuple[str, str], _Candidates] = {}
        self._default = {e: self._default_decision(e) for e in ACTION_EFFECTS}

    def decide(self, action: Action) -> Decision:
        """The decision of the first rule that matches ``action``, or the default."""
        cands = self._cache.get((action.tool, action.effect))
        if cands is None:
            cands = self._candidates(action.tool, action.effect)
        for rule, fixed, checks in cands:
            for check in checks:  # Rule.matches_rest, inlined: this loop is the cost of a decision
                if not check(action):
                    break
            else:
                return fixed if fixed is not None else self._defer(rule, action)
        return self._default[action.effect]

    def explain(self, action: Action) -> list[tuple[str, bool, str]]:
        """Every rule in order: its id, whether it matches ``action``, and why (or why not).

        The first matching rule is the one :meth:`decide` uses; later matches are shown
        but never consulted.
        """
        return [(r.id, *r.explain(action)) for r in self.rules]

    def _candidates(self, tool: str, effect: str) -> _Candidates:
        """Rules whose tool and effect conditions admit (tool, effect), in rule order; memoised."""
        pos = set(self._by_name.get(tool, ())) | self._any_tool
        pos.update(i for i, names in self._globbed if names.globs is not None and names.globs.match(tool))
        pos &= self._by_effect[effect]
        cands = tuple((self.rules[i], self._fixed[i], self.rules[i].checks) for i in sorted(pos))
        if len(self._cache) >= _CACHE_LIMIT:  # tool names come from registries, but never grow unbounded
            self._cache.clear()
        self._cache[(tool, effect)] = cands
        return cands

    def _decision(self, rule: Rule, until: float | None, reason: str | None = None) -> Decision:
        d = self.defaults
        approve = rule.decide == "approve"
        return Decision(
            verdict=rule.decide, rule=rule.id, reason=rule.reason or reason or _reason(rule), until=until,
            approvers=(rule.approvers or d.approvers) if approve else (),
            expires_after=(rule.expires if rule.expires is not None else d.expires) if approve else None,
            on_expiry=(rule.on_expiry or d.on_expiry) if approve else "deny", policy_hash=self.hash)

    def _defer(self, rule: Rule, action: Action) -> Decision:
        assert rule.when is not None  # a defer rule without a window is refused at load
        until = rule.when.until(action.at)
        local = datetime.fromtimestamp(until, rule.when.tz)
        return self._decision(rule, until, f"rule {rule.id!r} holds this until its window "
                                           f"({rule.when.text}) ends at {local:%Y-%m-%d %H:%M} "
                                           f"{zone_name(rule.when.tz)}")

    def _default_decision(self, effect: str) -> Decision:
        d = self.defaults
        if effect == "irreversible":
            return Decision("approve", None, "no rule matched; irreversible actions need approval by default",
                            None, d.approvers, d.expires, d.on_expiry, self.hash)
        return Decision("allow", None, f"no rule matched; {effect} actions are allowed by default", None, (),
                        None, "deny", self.hash)

    def __repr__(self) -> str:
        return f"<Policy {self.source}: {len(self.rules)} rules, hash {self.hash[:12]}>"


def _reason(rule: Rule) -> str:
    return {"allow": f"allowed by policy rule {rule.id!r}",
            "deny": f"denied by policy rule {rule.id!r}; do not retry this action as it is",
            "approve": f"policy rule {rule.id!r} requires a person's approval",
            "defer": f"policy rule {rule.id!r} holds this until its window ends"}[rule.decide]


def _label(spec: object, n: int) -> str:
    rid = spec.get("id") if isinstance(spec, Mapping) else None
    return f"rule {rid!r}" if isinstance(rid, str) and rid.strip() else f"rule #{n}"


def _build(data: Mapping[str, Any], *, policy_hash: str, source: str,
           known_tools: Set[str] | None, text: str = "", format: str = "toml") -> Policy:
    for key in data:
        if key not in TOP_KEYS:
            hint = " (rules are [[rule]] tables)" if key in ("rules", "policy", "policies") else ""
            raise PolicyError(f"{source}: {key}: unknown top-level key{hint}; a policy has [[rule]] "
                              f"tables, an optional [defaults] table, a [groups] table, "
                              f"[monitors] tables and a [redaction] table")
    try:
        monitors = compile_monitors(data.get("monitors"))
        redaction = compile_redaction(data.get("redaction"))
    except (MonitorSpecError, RedactionError) as exc:
        raise PolicyError(f"{source}: {exc}") from None
    try:
        groups = compile_groups(data.get("groups"))
        defaults = compile_defaults(data.get("defaults", {}), groups)
    except SpecError as exc:
        raise PolicyError(f"{source}: {exc}") from None
    specs = data.get("rule", [])
    if not isinstance(specs, Sequence) or isinstance(specs, str | Mapping):
        raise PolicyError(f"{source}: rule: expected [[rule]] tables (an array of tables), got "
                          f"{type(specs).__name__}; write [[rule]], not [rule]")
    rules = []
    for n, spec in enumerate(specs, 1):
        try:
            rules.append(compile_rule(spec, defaults, known_tools, groups))
        except SpecError as exc:
            raise PolicyError(f"{source}: {_label(spec, n)}: {exc}") from None
    return Policy(rules, policy_hash=policy_hash, source=source, defaults=defaults, text=text,
                  format=format, monitors=monitors, redaction=redaction, groups=groups)


def parse_policy(text: str, *, source: str, known_tools: Set[str] | None = None) -> Policy:
    """Compile a policy from TOML text; ``source`` names it in errors (usually the file path).

    Args:
        text: the TOML.
        source: the file name, or another label, for messages.
        known_tools: when given, a rule naming an exact tool not in it is refused.

    Raises:
        PolicyError: a syntax error (with line and column) or a meaning error (with rule id and key path).
    """
    try:
        data = tomllib.loads(text)
    except RecursionError:
        raise PolicyError(f"{source}: tables or arrays nested too deeply to read; a policy needs "
                          "a few levels at most") from None
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = _TOML_AT.search(msg)
        where = f"{source}, line {m[1]}, column {m[2]}" if m else source
        raise PolicyError(f"{where}: invalid TOML: {msg[: m.start()] if m else msg}") from None
    return _compile(data, policy_hash=canonical.sha256_hex(text.encode()), source=source,
                    known_tools=known_tools, text=text, format="toml")


def _compile(data: Mapping[str, Any], *, policy_hash: str, source: str,
             known_tools: Set[str] | None, text: str, format: str) -> Policy:
    """:func:`_build`, with a NUL character in a text, or a value nested too deeply for the
    compiler, refused, not raised."""
    try:
        refuse_nul_in(data, skip=("rule",))  # compile_rule looks into each rule
        return _build(data, policy_hash=policy_hash, source=source, known_tools=known_tools,
                      text=text, format=format)
    except SpecError as exc:
        raise PolicyError(f"{source}: {exc}") from None
    except RecursionError:
        raise PolicyError(f"{source}: a value is nested too deeply to check; a policy needs a "
                          "few levels at most") from None


def policy_from_text(text: str, format: str, *, source: str) -> Policy:
    """Compile a policy from the text and format a store chain recorded (:attr:`Policy.text`).

    Raises:
        PolicyError: the text does not compile (or the format is unknown).
    """
    if format == "toml":
        return parse_policy(text, source=source)
    if format != "json":
        raise PolicyError(f"{source}: unknown policy format {format!r}; expected toml or json")
    try:
        data = canonical.loads(text)
    except (ValueError, RecursionError):
        raise PolicyError(f"{source}: the recorded rules are not valid JSON") from None
    if not isinstance(data, dict):
        raise PolicyError(f"{source}: the recorded rules are not a JSON object")
    rules, defaults, groups = data.get("rule", []), data.get("defaults"), data.get("groups")
    if not isinstance(rules, list) or not all(x is None or isinstance(x, dict)
                                              for x in (defaults, groups)):
        raise PolicyError(f"{source}: expected a list of rule tables, a defaults table and a "
                          "groups table")
    return rules_from_python(rules, defaults=defaults, groups=groups, source=source)


@functools.cache
def builtin_policy() -> Policy:
    """The policy in force where none was applied: no rules, so the defaults decide
    (``read``, ``reversible`` and ``model`` allowed; ``irreversible`` needs approval)."""
    return rules_from_python([], source="<built-in defaults>")


def load_policy(path: str | PathLike[str], *, known_tools: Set[str] | None = None) -> Policy:
    """Read and compile a policy file; its hash is the SHA-256 of the file's bytes."""
    p = Path(path)
    raw = _read_policy_file(p)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise PolicyError(f"{p}, line {line}: not UTF-8 text; save the policy file as UTF-8") from None
    return parse_policy(text, source=str(p), known_tools=known_tools)


MAX_POLICY_BYTES = 1 << 20
"""Largest policy file read (1 MiB): thousands of rules; a bigger one is not a policy."""


def _read_policy_file(p: Path) -> bytes:
    """The file's bytes, refusing anything but a regular file of at most MAX_POLICY_BYTES.

    Opened without blocking and checked by its descriptor before a byte is read: a FIFO
    would block the read forever and /dev/zero would fill memory."""
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise PolicyError(f"{p}: no such policy file; create it or pass --policy FILE") from None
    except OSError as exc:
        raise PolicyError(f"{p}: cannot read the policy file: {exc.strerror or exc}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise PolicyError(f"{p}: not a regular file (a folder, FIFO or device); give a "
                              "policy file (TOML)")
        with os.fdopen(os.dup(fd), "rb") as f:
            raw = f.read(MAX_POLICY_BYTES + 1)
    except OSError as exc:
        raise PolicyError(f"{p}: cannot read the policy file: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(raw) > MAX_POLICY_BYTES:
        raise PolicyError(f"{p}: larger than {MAX_POLICY_BYTES >> 20} MiB; a policy file is "
                          "a few rules, give one of at most 1 MiB")
    return raw


def rules_from_python(rules: Sequence[Mapping[str, Any]], *, defaults: Mapping[str, Any] | None = None,
                      known_tools: Set[str] | None = None, source: str = "<python>",
                      groups: Mapping[str, Sequence[str]] | None = None) -> Policy:
    """Compile rules given in Python, with the same keys as a file's ``[[rule]]`` tables.

    The hash is the SHA-256 of the canonical JSON of ``{"rule": rules, "defaults": defaults}``
    (and ``"groups": groups`` when given), so the same rules always have the same hash.
    """
    data: dict[str, Any] = {"rule": list(rules)}
    if defaults is not None:
        data["defaults"] = dict(defaults)
    if groups is not None:
        data["groups"] = dict(groups)
    try:
        text = canonical.dumps(data).decode()
    except TypeError as exc:
        raise PolicyError(f"{source}: rules given in Python must hold only strings, numbers, booleans, "
                          f"lists and dicts, nested a few levels, as TOML would: {exc}") from None
    return _compile(data, policy_hash=canonical.sha256_hex(text.encode()), source=source,
                    known_tools=known_tools, text=text, format="json")
