"""Policies: matching tables, time windows across midnight and DST, defaults, the index, errors, CLI."""

from __future__ import annotations

import hashlib
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tether.cli.policy_cmd import policy_app
from tether.core.policy import (
    Action,
    Decision,
    Policy,
    PolicyError,
    Rule,
    load_policy,
    parse_policy,
    rules_from_python,
)
from tether.core.policy_time import Window
from tether.errors import UsageError

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def utc(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> float:
    return datetime(y, mo, d, h, mi, tzinfo=UTC).timestamp()


def local(tz: ZoneInfo, y: int, mo: int, d: int, h: int = 0, mi: int = 0, *, fold: int = 0) -> float:
    return datetime(y, mo, d, h, mi, tzinfo=tz, fold=fold).timestamp()


def act(**kw: Any) -> Action:
    base: dict[str, Any] = {"run": "r1", "agent": "mailer", "swarm": None, "tool": "send_email",
                            "effect": "irreversible", "arguments": {}, "at": utc(2025, 1, 8, 12, 0),
                            "budget_used": {}}
    return Action(**(base | kw))


def one(**spec: Any) -> Rule:
    return rules_from_python([{"id": "r", "decide": "deny", **spec}]).rules[0]


# -- matching tables --------------------------------------------------------------------------------

MATCHES: list[tuple[dict[str, Any], dict[str, Any], bool]] = [
    ({}, {}, True),
    ({"agent": "mail*"}, {}, True),
    ({"agent": "bot"}, {}, False),
    ({"agent": ["bot", "mail?r"]}, {}, True),
    ({"swarm": "night-*"}, {"swarm": "night-shift"}, True),
    ({"swarm": "night-*"}, {"swarm": None}, False),
    ({"tool": "send_email"}, {}, True),
    ({"tool": "send_*"}, {}, True),
    ({"tool": "Send_*"}, {}, False),
    ({"tool": ["pay", "send_[a-f]mail"]}, {}, True),
    ({"tool": ["pay", "rm"]}, {}, False),
    ({"effect": "irreversible"}, {}, True),
    ({"effect": ["read", "reversible"]}, {}, False),
    ({"effect": "model"}, {"effect": "model", "tool": "gpt-4o"}, True),
    ({"args": {"to": "a@x.org"}}, {"arguments": {"to": "a@x.org"}}, True),
    ({"args": {"to": {"eq": "a@x.org"}}}, {"arguments": {"to": "b@x.org"}}, False),
    ({"args": {"to": {"ne": "a@x.org"}}}, {"arguments": {"to": "b@x.org"}}, True),
    ({"args": {"to": {"ne": "a@x.org"}}}, {"arguments": {}}, False),
    ({"args": {"to": {"glob": "*@x.org"}}}, {"arguments": {"to": "a@x.org"}}, True),
    ({"args": {"to": {"glob": "*@x.org"}}}, {"arguments": {"to": "a@x.org.evil"}}, False),
    ({"args": {"to": {"regex": r".*@x\.org"}}}, {"arguments": {"to": "a@x.org"}}, True),
    ({"args": {"to": {"regex": r".*@x\.org"}}}, {"arguments": {"to": "a@x.org.evil"}}, False),
    ({"args": {"to": {"regex": "a"}}}, {"arguments": {"to": 1}}, False),
    ({"args": {"n": {"gt": 100}}}, {"arguments": {"n": 101}}, True),
    ({"args": {"n": {"gt": 100}}}, {"arguments": {"n": 100}}, False),
    ({"args": {"n": {"gte": 100}}}, {"arguments": {"n": 100.0}}, True),
    ({"args": {"n": {"lt": 1}}}, {"arguments": {"n": 0.5}}, True),
    ({"args": {"n": {"lte": 1}}}, {"arguments": {"n": 2}}, False),
    ({"args": {"n": {"gt": 0, "lt": 10}}}, {"arguments": {"n": 5}}, True),
    ({"args": {"n": {"gt": 0, "lt": 10}}}, {"arguments": {"n": 10}}, False),
    ({"args": {"n": {"gt": 0}}}, {"arguments": {"n": "5"}}, False),
    ({"args": {"n": {"gt": 0}}}, {"arguments": {"n": True}}, False),
    ({"args": {"n": {"lt": 0}}}, {"arguments": {"n": math.nan}}, False),
    ({"args": {"n": {"eq": 1}}}, {"arguments": {"n": True}}, False),
    ({"args": {"n": {"eq": True}}}, {"arguments": {"n": True}}, True),
    ({"args": {"c": {"in": ["EUR", "USD"]}}}, {"arguments": {"c": "EUR"}}, True),
    ({"args": {"c": {"in": ["EUR", "USD"]}}}, {"arguments": {"c": "GBP"}}, False),
    ({"args": {"c": {"in": [1, 2]}}}, {"arguments": {"c": 2}}, True),
    ({"args": {"c": {"in": [1, 2]}}}, {"arguments": {"c": "2"}}, False),
    ({"args": {"c": {"not_in": ["EUR"]}}}, {"arguments": {"c": "GBP"}}, True),
    ({"args": {"c": {"not_in": ["EUR"]}}}, {"arguments": {"c": "EUR"}}, False),
    ({"args": {"c": {"not_in": ["EUR"]}}}, {"arguments": {}}, False),
    ({"args": {"a": 1, "b": 2}}, {"arguments": {"a": 1}}, False),
    ({"budget": {"cost_usd_per_day": {"gte": 0.8}}}, {"budget_used": {"cost_usd_per_day": 0.8}}, True),
    ({"budget": {"cost_usd_per_day": {"gte": 0.8}}}, {"budget_used": {"cost_usd_per_day": 0.5}}, False),
    ({"budget": {"cost_usd_per_day": {"gte": 0.8}}}, {"budget_used": {"tokens": 0.9}}, False),
    ({"when": {"between": "11:00-13:00"}}, {}, True),
    ({"when": {"between": "11:00-13:00", "tz": "Europe/Berlin"}}, {}, False),
    ({"when": {"days": ["wed"]}}, {}, True),
    ({"when": {"days": ["Sat", "sun"]}}, {}, False),
]


@pytest.mark.parametrize(("spec", "action", "expected"), MATCHES)
def test_matching_table(spec: dict[str, Any], action: dict[str, Any], expected: bool) -> None:
    rule = one(**spec)
    assert rule.matches(act(**action)) is expected
    matched, why = rule.explain(act(**action))
    assert matched is expected and why


def test_unknown_action_effect_is_refused() -> None:
    with pytest.raises(PolicyError, match="effect 'write'"):
        act(effect="write")


# -- time windows ----------------------------------------------------------------------------------

def window(between: str, tz: str = "UTC", days: list[str] | None = None) -> Window:
    spec: dict[str, Any] = {"between": between, "tz": tz} | ({"days": days} if days else {})
    w = one(when=spec).when
    assert w is not None
    return w


WINDOWS: list[tuple[str, str, float, float]] = [
    # window, zone, at, until
    ("00:00-07:00", "Europe/Berlin", local(BERLIN, 2025, 1, 8, 3, 0), local(BERLIN, 2025, 1, 8, 7, 0)),
    ("22:00-06:00", "Europe/Berlin", local(BERLIN, 2025, 1, 8, 23, 0), local(BERLIN, 2025, 1, 9, 6, 0)),
    ("22:00-06:00", "Europe/Berlin", local(BERLIN, 2025, 1, 9, 1, 0), local(BERLIN, 2025, 1, 9, 6, 0)),
    ("18:00-24:00", "UTC", utc(2025, 1, 8, 20, 0), utc(2025, 1, 9, 0, 0)),
    # Berlin, clocks go forward 2025-03-30 02:00 CET -> 03:00 CEST (01:00 UTC).
    ("00:00-07:00", "Europe/Berlin", utc(2025, 3, 30, 0, 30), utc(2025, 3, 30, 5, 0)),
    ("01:00-02:30", "Europe/Berlin", utc(2025, 3, 30, 0, 45), utc(2025, 3, 30, 1, 0)),  # ends in the gap
    ("22:00-02:30", "Europe/Berlin", utc(2025, 3, 29, 22, 0), utc(2025, 3, 30, 1, 0)),
    # Berlin, clocks go back 2025-10-26 03:00 CEST -> 02:00 CET (01:00 UTC): 02:00-03:00 twice.
    ("00:00-07:00", "Europe/Berlin", utc(2025, 10, 25, 22, 30), utc(2025, 10, 26, 6, 0)),
    ("00:00-02:30", "Europe/Berlin", utc(2025, 10, 26, 0, 10), utc(2025, 10, 26, 0, 30)),  # first pass
    ("00:00-02:30", "Europe/Berlin", utc(2025, 10, 26, 1, 10), utc(2025, 10, 26, 1, 30)),  # second pass
    # New York, forward 2025-03-09 02:00 EST -> 03:00 EDT (07:00 UTC); back 2025-11-02 02:00 EDT (06:00 UTC).
    ("22:00-07:00", "America/New_York", utc(2025, 3, 9, 4, 0), utc(2025, 3, 9, 11, 0)),
    ("00:00-02:30", "America/New_York", utc(2025, 3, 9, 6, 30), utc(2025, 3, 9, 7, 0)),
    ("22:00-07:00", "America/New_York", utc(2025, 11, 2, 3, 0), utc(2025, 11, 2, 12, 0)),
]


@pytest.mark.parametrize(("between", "tz", "at", "until"), WINDOWS)
def test_window_until(between: str, tz: str, at: float, until: float) -> None:
    w = window(between, tz)
    assert w.contains(at)
    assert w.until(at) == until
    assert not w.contains(until) and w.contains(until - 1)


def test_dst_day_windows_follow_the_wall_clock() -> None:
    night = window("00:00-07:00", "Europe/Berlin")
    assert night.until(utc(2025, 3, 29, 23, 0)) - utc(2025, 3, 29, 23, 0) == 6 * 3600  # spring: 6 h
    assert night.until(utc(2025, 10, 25, 22, 0)) - utc(2025, 10, 25, 22, 0) == 8 * 3600  # autumn: 8 h
    fold = window("00:00-02:30", "Europe/Berlin")
    assert not fold.contains(local(BERLIN, 2025, 10, 26, 2, 40, fold=0))  # first 02:40 (CEST)
    assert fold.contains(local(BERLIN, 2025, 10, 26, 2, 5, fold=1))  # the clock reads 02:05 again


def test_window_days_belong_to_the_start_day() -> None:
    fri_night = window("22:00-06:00", "Europe/Berlin", ["fri"])
    assert fri_night.contains(local(BERLIN, 2025, 1, 10, 23, 0))  # Friday 23:00
    assert fri_night.contains(local(BERLIN, 2025, 1, 11, 3, 0))  # Saturday 03:00
    assert not fri_night.contains(local(BERLIN, 2025, 1, 10, 3, 0))  # Friday 03:00: Thursday's night
    assert not fri_night.contains(local(BERLIN, 2025, 1, 11, 23, 0))
    weekend = window("00:00-24:00", "Europe/Berlin", ["sat", "sun"])
    assert weekend.until(local(BERLIN, 2025, 1, 11, 9, 0)) == local(BERLIN, 2025, 1, 13, 0, 0)


_TRANSITIONS = [utc(2025, 3, 30, 1), utc(2025, 10, 26, 1), utc(2025, 3, 9, 7), utc(2025, 11, 2, 6),
                utc(2025, 4, 5, 15), utc(2025, 10, 4, 15, 30), utc(2025, 6, 1, 0)]
_ZONES = ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "UTC"]  # Lord Howe shifts 30 min


@settings(max_examples=60, deadline=None)
@given(base=st.sampled_from(_TRANSITIONS), offset=st.integers(-30 * 3600, 30 * 3600),
       start=st.integers(0, 95), length=st.integers(1, 95), tz=st.sampled_from(_ZONES),
       days=st.sets(st.sampled_from(["mon", "tue", "wed", "thu", "fri", "sat", "sun"]), min_size=1))
def test_until_is_the_first_instant_outside_the_window(base: float, offset: int, start: int, length: int,
                                                       tz: str, days: set[str]) -> None:
    end = (start + length) % 96
    w = window(f"{start // 4:02d}:{start % 4 * 15:02d}-{end // 4:02d}:{end % 4 * 15:02d}", tz, sorted(days))
    at = base + offset
    if not w.contains(at):
        return
    until = w.until(at)
    t = math.floor(at / 60) * 60 + 60  # windows end on whole minutes: scan minute by minute
    while w.contains(t):
        t += 60
    assert until == t


# -- decisions, defaults, first match --------------------------------------------------------------

def test_defaults_allow_read_reversible_model_and_ask_for_irreversible() -> None:
    p = rules_from_python([])
    for effect, verdict in [("read", "allow"), ("reversible", "allow"), ("model", "allow"),
                            ("irreversible", "approve")]:
        d = p.decide(act(effect=effect))
        assert (d.verdict, d.rule, d.policy_hash) == (verdict, None, p.hash)
        assert "default" in d.reason


def test_defaults_table_sets_approvals_and_time_zone() -> None:
    p = parse_policy('[defaults]\ntimezone = "Europe/Berlin"\nexpires = "2h"\napprovers = ["alice"]\n'
                     'on_expiry = "escalate"\n[[rule]]\nid = "q"\ntool = "pay"\n'
                     'when = { between = "00:00-07:00" }\ndecide = "approve"\n', source="t.toml")
    d = p.decide(act())
    assert (d.approvers, d.expires_after, d.on_expiry) == (("alice",), 7200.0, "escalate")
    d = p.decide(act(tool="pay", at=local(BERLIN, 2025, 1, 8, 6, 30)))  # 05:30 UTC: Berlin quiet hours
    assert d.rule == "q" and d.approvers == ("alice",)
    assert p.decide(act(tool="pay", at=utc(2025, 1, 8, 6, 30))).rule is None


def test_first_match_wins_and_decisions_carry_the_rule() -> None:
    p = rules_from_python([
        {"id": "big-pay", "tool": "pay", "args": {"amount": {"gt": 100}}, "decide": "approve",
         "approvers": ["bob"], "expires": "30m", "on_expiry": "allow"},
        {"id": "pay-ok", "tool": "pay", "decide": "allow"},
        {"id": "no-send", "tool": "send_*", "decide": "deny", "reason": "mail is off today"},
        {"id": "all", "decide": "deny"},
    ])
    assert p.decide(act(tool="pay", arguments={"amount": 500})) == Decision(
        "approve", "big-pay", "policy rule 'big-pay' requires a person's approval", None, ("bob",), 1800.0,
        "allow", p.hash)
    assert p.decide(act(tool="pay", arguments={"amount": 5})).rule == "pay-ok"
    d = p.decide(act(tool="send_sms"))
    assert (d.verdict, d.reason) == ("deny", "mail is off today")
    assert p.decide(act(tool="rm", effect="read")).rule == "all"
    rows = p.explain(act(tool="pay", arguments={"amount": 5}))
    assert [(rid, m) for rid, m, _ in rows] == [("big-pay", False), ("pay-ok", True), ("no-send", False),
                                               ("all", True)]
    assert "args.amount = 5 fails gt 100" in rows[0][2]
    assert p.decide(act(tool="pay", arguments={"amount": 5})).to_payload()["rule"] == "pay-ok"


def test_defer_until_window_end() -> None:
    p = rules_from_python([{"id": "quiet", "effect": "irreversible", "decide": "defer",
                            "when": {"between": "22:00-07:00", "tz": "America/New_York"}}])
    d = p.decide(act(at=utc(2025, 3, 9, 4, 0)))  # 23:00 EST, the night clocks go forward
    assert (d.verdict, d.rule, d.until) == ("defer", "quiet", utc(2025, 3, 9, 11, 0))
    assert "07:00 America/New_York" in d.reason
    assert p.decide(act(at=utc(2025, 3, 9, 12, 0))).verdict == "approve"  # the default again


# -- Hypothesis: the index equals a linear scan; irreversible is never allowed by default --------------

_TOOLS = ["send_email", "send_sms", "pay", "read_file", "rm", "gpt"]
_EFFECTS = ["read", "reversible", "irreversible", "model"]
_conds: dict[str, st.SearchStrategy[Any]] = {
    "tool": st.one_of(st.sampled_from([*_TOOLS, "send_*", "*", "r?", "[pr]*", "nothing"]),
                      st.lists(st.sampled_from([*_TOOLS, "send_*", "r*"]), min_size=1, max_size=3)),
    "effect": st.one_of(st.sampled_from(_EFFECTS), st.lists(st.sampled_from(_EFFECTS), min_size=1)),
    "agent": st.sampled_from(["a1", "a*", "bot", ["a2", "bot"]]),
    "swarm": st.sampled_from(["s1", "s*"]),
    "args": st.sampled_from([{"n": {"gt": 5}}, {"to": {"glob": "*@x"}}, {"n": {"in": [1, 2, 3]}},
                             {"n": {"ne": 2}}, {"to": "a@x"}]),
    "budget": st.sampled_from([{"cost_usd_per_day": {"gte": 0.5}}, {"tokens": {"lt": 0.3}}]),
    "when": st.sampled_from([{"between": "22:00-06:00", "tz": "Europe/Berlin"},
                             {"between": "09:00-17:00", "days": ["mon", "fri"]}]),
}


@st.composite
def rule_sets(draw: st.DrawFn) -> list[dict[str, Any]]:
    out = []
    for i in range(draw(st.integers(0, 12))):
        keys = draw(st.sets(st.sampled_from(sorted(_conds)), max_size=4))
        spec: dict[str, Any] = {"id": f"r{i}"} | {k: draw(_conds[k]) for k in keys}
        spec["decide"] = draw(st.sampled_from(["allow", "deny", "approve", "defer"] if "when" in spec
                                              else ["allow", "deny", "approve"]))
        out.append(spec)
    return out


actions = st.builds(
    act, tool=st.sampled_from([*_TOOLS, "other"]), effect=st.sampled_from(_EFFECTS),
    agent=st.sampled_from(["a1", "a2", "bot"]), swarm=st.sampled_from([None, "s1", "t"]),
    arguments=st.fixed_dictionaries({}, optional={"n": st.integers(0, 9),
                                                  "to": st.sampled_from(["a@x", "b"])}),
    budget_used=st.fixed_dictionaries({}, optional={"cost_usd_per_day": st.floats(0, 1)}),
    at=st.floats(utc(2025, 1, 1), utc(2026, 1, 1)))


@settings(max_examples=150, deadline=None)
@given(specs=rule_sets(), batch=st.lists(actions, min_size=1, max_size=8))
def test_indexed_decide_equals_a_linear_scan(specs: list[dict[str, Any]], batch: list[Action]) -> None:
    p = rules_from_python(specs)
    for a in batch * 2:  # twice, so that memoised candidate lists are used too
        first = next((r for r in p.rules if r.matches(a)), None)
        d = p.decide(a)
        assert d.rule == (first.id if first else None)
        if first is not None:
            assert d.verdict == first.decide
        explained = next((rid for rid, m, _ in p.explain(a) if m), None)
        assert explained == d.rule


@settings(max_examples=150, deadline=None)
@given(specs=rule_sets(), a=actions)
def test_irreversible_is_allowed_only_by_an_explicit_allow_rule(specs: list[dict[str, Any]],
                                                                  a: Action) -> None:
    p = rules_from_python(specs)
    a = act(**{f: getattr(a, f) for f in ("tool", "agent", "swarm", "arguments", "at", "budget_used")})
    d = p.decide(a)
    if d.verdict == "allow":
        rule = next(r for r in p.rules if r.id == d.rule)
        assert rule.decide == "allow" and rule.matches(a)
    if d.rule is None:
        assert d.verdict == "approve"


# -- loading and errors -----------------------------------------------------------------------------

GOOD = """\
[defaults]
timezone = "Europe/Berlin"

[[rule]]
id = "no-email-at-night"
tool = "send_*"
effect = "irreversible"
when = { between = "00:00-07:00", days = ["mon", "tue", "wed", "thu", "fri"] }
decide = "defer"

[[rule]]
id = "big-payments"
tool = "pay"
args = { amount = { gt = 100 } }
decide = "approve"
approvers = ["alice"]
expires = "2h"
"""


def test_load_policy_hashes_the_file_bytes(tmp_path: Path) -> None:
    f = tmp_path / "tether.toml"
    f.write_bytes(GOOD.replace("\n", "\r\n").encode())
    p = load_policy(f)
    assert p.hash == hashlib.sha256(f.read_bytes()).hexdigest()
    assert [r.id for r in p.rules] == ["no-email-at-night", "big-payments"]
    assert isinstance(p, Policy) and p.source == str(f)
    assert parse_policy(GOOD, source="x").hash == hashlib.sha256(GOOD.encode()).hexdigest()


def test_python_rules_hash_is_canonical() -> None:
    a = rules_from_python([{"id": "x", "tool": "pay", "decide": "deny"}])
    b = rules_from_python([{"decide": "deny", "tool": "pay", "id": "x"}])
    c = rules_from_python([{"id": "x", "tool": "pay", "decide": "allow"}])
    assert a.hash == b.hash != c.hash
    with pytest.raises(PolicyError, match="only strings, numbers"):
        rules_from_python([{"id": "x", "decide": "deny", "args": {"a": {"in": {1, 2}}}}])


def _rule(body: str) -> str:
    return f'[[rule]]\nid = "x"\n{body}\n'


BAD: list[tuple[str, list[str]]] = [
    ('[[rule]]\nid = "x"\ndecide = \n', ["p.toml, line 3", "invalid TOML"]),
    ('[[rule]]\nid = "no-email-at-night"\ndecide = "defer"\n'
     'when = { between = "00:00-07:00", tz = "Europe/Berlinn" }\n',
     ["rule 'no-email-at-night': when.tz: unknown time zone 'Europe/Berlinn'", "'Europe/Berlin'"]),
    (_rule('decide = "deny"\nargs = { amount = { greater = 5 } }'),
     ["rule 'x': args.amount: unknown predicate 'greater'"]),
    (_rule('decide = "deny"\ndecid = "allow"'), ["rule 'x': decid: unknown key", "did you mean 'decide'"]),
    (_rule('decide = "block"'), ["rule 'x': decide: 'block' is not one of allow, deny, approve, defer"]),
    (_rule('decide = "deny"') + _rule('decide = "allow"'), ["rule 'x': id: duplicate id"]),
    (_rule('decide = "deny"\nargs = { to = { regex = "(" } }'), ["rule 'x': args.to.regex: bad regular"]),
    (_rule('decide = "defer"'), ["rule 'x': when: a defer rule needs a window"]),
    (_rule('decide = "defer"\nwhen = { between = "00:00-24:00" }'), ["rule 'x': when: ", "never run"]),
    ('[[rule]]\ndecide = "deny"\n', ["rule #1: id: required"]),
    (_rule(""), ["rule 'x': decide: required"]),
    ('[rule]\nid = "x"\ndecide = "deny"\n', ["write [[rule]], not [rule]"]),
    ('[[rules]]\nid = "x"\ndecide = "deny"\n', ["rules: unknown top-level key"]),
    ('[defaults]\ntimezone = "Mars/Base"\n', ["defaults.timezone: unknown time zone 'Mars/Base'"]),
    ('[defaults]\nzone = "UTC"\n', ["defaults.zone: unknown key"]),
    (_rule('decide = "deny"\nexpires = "1h"'), ["rule 'x': expires: only an approve rule"]),
    (_rule('decide = "approve"\nexpires = "1 fortnight"'), ["rule 'x': expires: expected a duration"]),
    (_rule('decide = "approve"\nexpires = 0'), ["rule 'x': expires: must be a positive"]),
    (_rule('decide = "approve"\non_expiry = "explode"'), ["rule 'x': on_expiry: 'explode' is not one of"]),
    (_rule('decide = "approve"\napprovers = "alice"'), ["rule 'x': approvers: expected a list"]),
    (_rule('decide = "deny"\nbudget = { cost_per_day = { gte = 0.8 } }'),
     ["rule 'x': budget.cost_per_day: unknown budget key"]),
    (_rule('decide = "deny"\nbudget = { cost_usd_per_day = { glob = "x" } }'),
     ["rule 'x': budget.cost_usd_per_day: unknown predicate 'glob'"]),
    (_rule('decide = "deny"\nbudget = { cost_usd_per_day = 0.8 }'),
     ["rule 'x': budget.cost_usd_per_day: expected a table of predicates"]),
    (_rule('decide = "deny"\nwhen = { between = "7-9" }'), ["rule 'x': when.between: expected 'HH:MM"]),
    (_rule('decide = "deny"\nwhen = { between = "07:00-07:00" }'), ["when.between: ", "empty window"]),
    (_rule('decide = "deny"\nwhen = { between = "07:00-25:00" }'), ["when.between: '25:00' is not a time"]),
    (_rule('decide = "deny"\nwhen = { days = ["mo"] }'), ["rule 'x': when.days: unknown day 'mo'"]),
    (_rule('decide = "deny"\nwhen = { at = "x" }'), ["rule 'x': when.at: unknown key"]),
    (_rule('decide = "deny"\neffect = "write"'), ["rule 'x': effect: 'write' is not one of"]),
    (_rule('decide = "deny"\ntool = ""'), ["rule 'x': tool: expected a name or glob"]),
    (_rule('decide = "deny"\nargs = { n = [1, 2] }'), ["rule 'x': args.n: ", "{ in = [...] }"]),
    (_rule('decide = "deny"\nargs = { n = { gt = "a" } }'), ["rule 'x': args.n.gt: expected a number"]),
    (_rule('decide = "deny"\nargs = { n = { in = 3 } }'), ["rule 'x': args.n.in: expected a list"]),
    (_rule('decide = "deny"\nargs = { n = {} }'), ["rule 'x': args.n: expected a table of predicates"]),
    ('[[rule]]\nid = 5\ndecide = "deny"\n', ["rule #1: id: expected a non-empty string"]),
]


@pytest.mark.parametrize(("text", "needles"), BAD)
def test_bad_policies_are_refused_with_where_and_why(text: str, needles: list[str]) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, source="p.toml")
    assert isinstance(info.value, UsageError)
    assert str(info.value).startswith("p.toml")
    for needle in needles:
        assert needle in str(info.value)


def test_known_tools() -> None:
    known = {"send_email", "pay"}
    with pytest.raises(PolicyError, match=r"rule 'x': tool: unknown tool 'send_emial' \(did you mean "
                                          r"'send_email'\?\)"):
        parse_policy(_rule('tool = "send_emial"\ndecide = "deny"'), source="p.toml", known_tools=known)
    parse_policy(_rule('tool = ["send_*", "pay"]\ndecide = "deny"'), source="p.toml", known_tools=known)
    parse_policy(_rule('tool = "gpt-4o"\neffect = "model"\ndecide = "deny"'), source="p", known_tools=known)
    with pytest.raises(PolicyError, match="unknown tool 'rm'"):
        rules_from_python([{"id": "x", "tool": ["pay", "rm"], "decide": "deny"}], known_tools=known)


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="no such policy file"):
        load_policy(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b'[[rule]]\nid = "x"\nreason = "\xff"\n')
    with pytest.raises(PolicyError, match=r"bad\.toml, line 3: not UTF-8"):
        load_policy(bad)
    bad.write_text('[[rule]]\nid = "x"\ndecide = "deny"\n\nwhen = { between = "1:00-2:00" \n')
    with pytest.raises(PolicyError, match=r"bad\.toml, line 5, column \d+: invalid TOML"):
        load_policy(bad)


# -- CLI ---------------------------------------------------------------------------------------------

runner = CliRunner()


def policy(*args: str) -> tuple[int, str]:
    res = runner.invoke(policy_app, list(args))
    return res.exit_code, res.output


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    f = tmp_path / "tether.toml"
    f.write_text(GOOD)
    return f


def test_cli_check(policy_file: Path, tmp_path: Path) -> None:
    code, out = policy("check", str(policy_file))
    assert code == 0
    assert out.strip() == f"ok: 2 rules, hash {hashlib.sha256(GOOD.encode()).hexdigest()}"
    code, out = policy("check", str(policy_file), "--tool", "pay")
    assert code == 0
    broken = tmp_path / "broken.toml"
    broken.write_text(GOOD.replace('tz = "Europe/Berlin"', "").replace('"Europe/Berlin"', '"Europe/Berlinn"'))
    code, out = policy("check", str(broken))
    assert code == 2 and "defaults.timezone: unknown time zone 'Europe/Berlinn'" in out
    broken.write_text(GOOD.replace('decide = "approve"', 'decide = '))
    code, out = policy("check", str(broken))
    assert code == 2 and "line 15" in out


def test_cli_explain_text(policy_file: Path) -> None:
    code, out = policy("explain", "--agent", "mailer", "--tool", "send_email", "--at", "2025-03-31T03:00",
                       "--policy", str(policy_file))
    assert code == 0, out
    assert "match no-email-at-night" in out and "(decides)" in out
    assert "decision: defer by rule 'no-email-at-night'" in out
    assert "until 2025-03-31 07:00 Europe/Berlin" in out
    code, out = policy("explain", "--agent", "a", "--tool", "pay", "--args", '{"amount": 250}',
                       "--policy", str(policy_file))
    assert code == 0 and "args.amount = 250 satisfies gt 100" in out
    assert "approvers: alice; expires after 2h, then deny" in out


def test_cli_explain_json(policy_file: Path) -> None:
    code, out = policy("explain", "--agent", "a", "--tool", "pay", "--args", '{"amount": 5}', "--effect",
                       "reversible", "--at", "2025-03-31T03:00+00:00", "--policy", str(policy_file), "--json")
    assert code == 0, out
    doc = json.loads(out)
    assert doc["decision"]["verdict"] == "allow" and doc["decision"]["rule"] is None
    assert [r["matched"] for r in doc["rules"]] == [False, False]
    assert doc["action"]["at"] == utc(2025, 3, 31, 3, 0)
    assert doc["hash"] == hashlib.sha256(GOOD.encode()).hexdigest()


@pytest.mark.parametrize(("args", "needle"), [
    (["--args", "[1]"], "--args must be a JSON object"),
    (["--args", "{nope"], "--args is not valid JSON"),
    (["--effect", "write"], "--effect 'write'"),
    (["--at", "tomorrow"], "--at 'tomorrow'"),
    (["--budget", "cost_usd_per_day"], "expected KEY=NUMBER"),
])
def test_cli_explain_bad_input(policy_file: Path, args: list[str], needle: str) -> None:
    code, out = policy("explain", "--agent", "a", "--tool", "pay", "--policy", str(policy_file), *args)
    assert code == 2 and needle in out


def test_cli_explain_missing_policy(tmp_path: Path) -> None:
    code, out = policy("explain", "--agent", "a", "--tool", "pay", "--policy", str(tmp_path / "none.toml"))
    assert code == 2 and "no such policy file" in out


def test_action_time_must_be_finite() -> None:
    with pytest.raises(PolicyError, match="time nan"):
        act(at=math.nan)
