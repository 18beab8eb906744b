"""Policy decision cost: ``Policy.decide`` on a realistic 100-rule policy.

The policy is what an operator of a billing, support and ops swarm might
write: hard denies, quiet hours in three time zones, budget thresholds,
argument rules per tool (equality, membership, globs, regular expressions,
numeric comparisons) and globs over tool families, compiled once with
:func:`tether.core.policy.rules_from_python`. Timed cases:

* ``pay`` (irreversible), decided by the 98th rule of 100: every rule the
  index leaves for (``pay``, irreversible) before it is tried and fails, some
  only at their argument, budget or time-window test;
* ``translate_text`` (reversible), a tool no rule names: the rules without a
  tool condition are tried and the default decides;
* informational: a tool never seen before, so the index's per-(tool, effect)
  memo misses and the candidate rules are computed (one glob regex per glob
  rule); and building the :class:`Action` itself, which the runtime does once
  per tool call.

Every action in a case is distinct (its own instant, amount and budget
state), more distinct instants than the window module's 1,024-entry cache
holds, so no decision reuses the local-time conversion of an earlier one.
Time per call = a batch's wall time (``perf_counter_ns``) ÷ its calls; the
figures are the median and the 99th percentile over batches.
"""

from __future__ import annotations

import gc
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from bench.stats import percentile
from tether.core.policy import Action, Policy, rules_from_python

BERLIN = ZoneInfo("Europe/Berlin")
DISTINCT = 4096
"""Distinct actions per case, cycled: more instants than the window cache (1,024) holds."""

_EU = "eu-*"
_US = "us-*"
_MAIL_FREE = r"[^@]+@(gmail|yahoo|outlook|hotmail|proton)\.(com|me)"


def _deny_rules() -> list[dict[str, Any]]:
    return [
        {"id": "deny-drop-table", "tool": "drop_table", "decide": "deny"},
        {"id": "deny-system-paths", "tool": ["delete_file", "write_file"],
         "args": {"path": {"regex": r"/(etc|usr|bin|boot|var/lib)(/.*)?"}}, "decide": "deny",
         "reason": "system paths are off limits"},
        {"id": "deny-sudo", "tool": "shell", "args": {"cmd": {"regex": r"(.*\s)?sudo\s.*"}},
         "decide": "deny"},
        {"id": "deny-private-nets", "tool": ["http_post", "http_put"],
         "args": {"url": {"regex": r"https?://(10|127|192\.168)\.[0-9.]+(:\d+)?/.*"}}, "decide": "deny"},
        {"id": "deny-free-mail", "tool": "send_*", "agent": "support-*",
         "args": {"to": {"regex": _MAIL_FREE}}, "decide": "deny"},
        {"id": "deny-sanctioned", "tool": ["pay", "refund"],
         "args": {"country": {"in": ["KP", "IR", "SY", "CU"]}}, "decide": "deny"},
        {"id": "deny-spent", "effect": ["reversible", "irreversible"],
         "budget": {"cost_usd": {"gte": 1.0}}, "decide": "deny"},
        {"id": "deny-model-tokens", "effect": "model", "budget": {"tokens": {"gte": 1.0}}, "decide": "deny"},
        {"id": "deny-interns", "agent": ["intern-*", "trial-*"], "effect": "irreversible", "decide": "deny"},
        {"id": "deny-sandbox-out", "swarm": "sandbox-*", "effect": "irreversible", "decide": "deny"},
        {"id": "deny-prod-friday", "tool": "deploy", "args": {"env": "prod"},
         "when": {"between": "12:00-24:00", "days": ["fri"], "tz": "Europe/Berlin"}, "decide": "deny"},
        {"id": "deny-huge-payment", "tool": "pay", "args": {"amount": {"gt": 50_000}}, "decide": "deny"},
    ]


def _quiet_rules() -> list[dict[str, Any]]:
    berlin_night = {"between": "00:00-07:00", "tz": "Europe/Berlin"}
    return [
        {"id": "quiet-email-eu", "tool": "send_email", "swarm": _EU, "when": berlin_night, "decide": "defer"},
        {"id": "quiet-sms", "tool": "send_sms", "when": {"between": "21:00-08:00"}, "decide": "defer"},
        {"id": "quiet-slack-us", "tool": "send_slack", "swarm": _US,
         "when": {"between": "20:00-08:00", "tz": "America/New_York"}, "decide": "defer"},
        {"id": "quiet-deploy-weekend", "tool": "deploy",
         "when": {"days": ["sat", "sun"], "tz": "Europe/Berlin"}, "decide": "defer"},
        {"id": "quiet-pay-night", "tool": "pay", "when": {"between": "23:00-06:00"}, "decide": "defer"},
        {"id": "quiet-pay-apac", "tool": "pay", "swarm": "apac-*",
         "when": {"between": "00:00-08:00", "tz": "Asia/Tokyo"}, "decide": "defer"},
        {"id": "quiet-refund-weekend", "tool": "refund", "when": {"days": ["sat", "sun"]}, "decide": "defer"},
        {"id": "quiet-irreversible-us", "effect": "irreversible", "swarm": _US,
         "when": {"between": "00:00-06:00", "tz": "America/New_York"}, "decide": "defer"},
        {"id": "quiet-irreversible-eu", "effect": "irreversible", "swarm": _EU, "when": berlin_night,
         "decide": "defer"},
        {"id": "quiet-close-account", "tool": "close_account",
         "when": {"between": "18:00-09:00", "tz": "Europe/London"}, "decide": "defer"},
    ]


def _budget_rules() -> list[dict[str, Any]]:
    return [
        {"id": "approve-spend-80", "effect": "irreversible", "budget": {"cost_usd": {"gte": 0.8}},
         "decide": "approve", "approvers": ["finance-oncall"]},
        {"id": "approve-daily-spend-90", "effect": "irreversible",
         "budget": {"cost_usd_per_day": {"gte": 0.9}}, "decide": "approve"},
        {"id": "approve-tool-calls-95", "budget": {"tool_calls": {"gte": 0.95}}, "decide": "approve",
         "expires": "1h"},
        {"id": "approve-steps-95", "effect": ["reversible", "irreversible"],
         "budget": {"steps": {"gte": 0.95}}, "decide": "approve"},
        {"id": "deny-model-hourly", "effect": "model", "budget": {"tokens_per_hour": {"gte": 1.0}},
         "decide": "deny"},
    ]


def _tool_rules() -> list[dict[str, Any]]:
    """Per-tool argument rules, grouped by tool as an operator writes them."""
    corp = r"[^@]+@(corp|mail\.corp)\.example"
    rules: list[dict[str, Any]] = [
        # mail and messaging
        {"id": "email-internal", "tool": "send_email", "args": {"to": {"regex": corp}}, "decide": "allow"},
        {"id": "email-secrets", "tool": "send_email",
         "args": {"subject": {"regex": r"(?i).*(password|token).*"}}, "decide": "deny"},
        {"id": "email-bulk", "tool": "send_email", "args": {"recipients": {"gt": 20}}, "decide": "approve"},
        {"id": "email-attachments", "tool": "send_email", "args": {"attachments": {"gte": 3}},
         "decide": "approve"},
        {"id": "sms-premium", "tool": "send_sms", "args": {"to": {"glob": "+900*"}}, "decide": "deny"},
        {"id": "sms-ops", "tool": "send_sms", "agent": "ops-*", "decide": "allow"},
        {"id": "slack-public", "tool": "send_slack", "args": {"channel": {"in": ["#general", "#announce"]}},
         "decide": "approve"},
        {"id": "slack-internal", "tool": "send_slack", "decide": "allow"},
        # files and shell
        {"id": "files-tmp", "tool": ["write_file", "delete_file"], "args": {"path": {"glob": "/tmp/*"}},
         "decide": "allow"},
        {"id": "files-workspace", "tool": "write_file", "args": {"path": {"glob": "/srv/work/*"}},
         "decide": "allow"},
        {"id": "files-delete-many", "tool": "delete_file", "args": {"recursive": True}, "decide": "approve"},
        {"id": "shell-readonly", "tool": "shell",
         "args": {"cmd": {"regex": r"(ls|cat|grep|head|tail|wc)(\s.*)?"}}, "decide": "allow"},
        {"id": "shell-other", "tool": "shell", "decide": "approve"},
        # databases
        {"id": "db-sensitive-tables", "tool": "db_*",
         "args": {"table": {"in": ["users", "payments", "keys"]}}, "decide": "approve"},
        {"id": "db-write-large", "tool": "db_write", "args": {"rows": {"gt": 1000}}, "decide": "approve"},
        {"id": "db-write-staging", "tool": "db_write", "args": {"database": {"glob": "staging-*"}},
         "decide": "allow"},
        {"id": "db-query", "tool": "db_query", "decide": "allow"},
        # http
        {"id": "http-partner", "tool": "http_*", "args": {"url": {"glob": "https://api.partner.example/*"}},
         "decide": "allow"},
        {"id": "http-post-large", "tool": "http_post", "args": {"bytes": {"gt": 1_000_000}},
         "decide": "approve"},
        # deploys and accounts
        {"id": "deploy-staging", "tool": "deploy", "args": {"env": {"in": ["dev", "staging"]}},
         "decide": "allow"},
        {"id": "deploy-prod-ci-only", "tool": "deploy", "agent": "release-*",
         "args": {"env": "prod"}, "decide": "approve", "approvers": ["release-manager"]},
        {"id": "close-account-vip", "tool": "close_account", "args": {"tier": {"in": ["gold", "platinum"]}},
         "decide": "deny"},
        {"id": "close-account", "tool": "close_account", "decide": "approve", "expires": "24h",
         "on_expiry": "deny"},
        # tickets and calendars
        {"id": "ticket-priority", "tool": ["create_ticket", "update_ticket"],
         "args": {"priority": {"in": ["p0", "p1"]}}, "decide": "approve"},
        {"id": "calendar-external", "tool": "calendar_*", "args": {"attendees": {"gt": 50}},
         "decide": "approve"},
        {"id": "calendar-ok", "tool": "calendar_*", "decide": "allow"},
    ]
    # Payments and refunds: the rules a billing team accumulates, one per vendor, currency or
    # threshold; for a payment of 101-900 EUR to a known vendor none of these decides.
    rules += [
        {"id": "pay-currency-exotic", "tool": "pay",
         "args": {"currency": {"not_in": ["EUR", "USD", "GBP", "CHF"]}}, "decide": "approve"},
        {"id": "pay-iban-offshore", "tool": "pay",
         "args": {"iban": {"regex": r"(KY|VG|BS|PA)\d{2}[A-Z0-9]+"}}, "decide": "deny"},
        {"id": "pay-memo-crypto", "tool": "pay",
         "args": {"memo": {"regex": r"(?i).*(bitcoin|btc|usdt|wallet).*"}}, "decide": "deny"},
        {"id": "pay-vendor-new", "tool": "pay", "args": {"vendor_age_days": {"lt": 30}}, "decide": "approve"},
        {"id": "pay-round-large", "tool": "pay", "args": {"amount": {"gte": 10_000}, "currency": "EUR"},
         "decide": "approve", "approvers": ["cfo"]},
        {"id": "pay-usd-large", "tool": "pay", "args": {"amount": {"gt": 5_000}, "currency": "USD"},
         "decide": "approve"},
        {"id": "pay-gbp", "tool": "pay", "args": {"currency": "GBP", "amount": {"gt": 500}},
         "decide": "approve"},
        {"id": "pay-chf", "tool": "pay", "args": {"currency": "CHF", "amount": {"gt": 500}},
         "decide": "approve"},
        {"id": "pay-split", "tool": "pay", "args": {"installment": {"gte": 2}}, "decide": "approve"},
        {"id": "pay-agent-support", "tool": "pay", "agent": "support-*", "decide": "deny"},
        {"id": "pay-agent-ops", "tool": "pay", "agent": "ops-*", "decide": "deny"},
        {"id": "pay-swarm-us-night", "tool": "pay", "swarm": _US,
         "when": {"between": "18:00-09:00", "tz": "America/New_York"}, "decide": "defer"},
        {"id": "pay-month-end", "tool": "pay", "args": {"memo": {"glob": "*month-end*"}},
         "decide": "approve"},
        {"id": "pay-budget-half", "tool": "pay", "budget": {"cost_usd_per_day": {"gte": 0.5}},
         "decide": "approve"},
    ]
    for i, vendor in enumerate(("globex", "initech", "umbrella", "hooli", "vandelay", "wonka",
                                "tyrell", "cyberdyne", "soylent", "oscorp")):
        rules.append({"id": f"pay-vendor-{vendor}", "tool": "pay",
                      "args": {"vendor": vendor, "amount": {"gt": 1000 * (i + 1)}}, "decide": "approve",
                      "approvers": [f"owner-{vendor}"]})
    rules += [
        {"id": "refund-large", "tool": "refund", "args": {"amount": {"gt": 500}}, "decide": "approve"},
        {"id": "refund-repeat", "tool": "refund", "args": {"refunds_30d": {"gte": 3}}, "decide": "deny"},
        {"id": "refund-small", "tool": "refund", "args": {"amount": {"lte": 50}}, "decide": "allow"},
        {"id": "refund-other", "tool": "refund", "decide": "approve"},
    ]
    return rules


def _tail_rules() -> list[dict[str, Any]]:
    """The rules the timed cases reach: the matching one is the 98th of 100."""
    return [
        {"id": "read-ok", "effect": "read", "agent": ["*-bot", "ops-*"], "decide": "allow"},
        {"id": "pay-big", "tool": "pay", "args": {"amount": {"gt": 100}, "currency": {"in": ["EUR", "USD"]}},
         "decide": "approve", "approvers": ["alice", "bob"], "expires": "8h"},
        {"id": "pay-small", "tool": "pay", "decide": "allow"},
        {"id": "irreversible-approve", "effect": "irreversible", "decide": "approve"},
    ]


def _fill(rules: list[dict[str, Any]], total: int) -> list[dict[str, Any]]:
    """Pad with per-agent allow rules for reads (as a team lists its agents) up to ``total``."""
    teams = ("research", "billing", "support", "ops", "sales", "legal", "hr", "data", "infra", "qa")
    tools = ("search_docs", "get_customer", "get_invoice", "read_file", "list_dir")
    extra = []
    for i in range(total - len(rules)):
        extra.append({"id": f"reads-{teams[i % len(teams)]}-{i}", "agent": f"{teams[i % len(teams)]}-*",
                      "tool": tools[i % len(tools)], "effect": "read", "decide": "allow"})
    return extra


def policy_specs(total: int = 100) -> list[dict[str, Any]]:
    """The rule specs, in order, ``total`` of them."""
    head = _deny_rules() + _quiet_rules() + _budget_rules() + _tool_rules()
    tail = _tail_rules()
    return head + _fill(head + tail, total) + tail


def build_policy(total: int = 100) -> Policy:
    return rules_from_python(policy_specs(total), defaults={"timezone": "Europe/Berlin", "expires": "8h"})


def _office_hours(rng: random.Random) -> float:
    """A random instant on a Tuesday to Thursday between 09:00 and 17:00 in Berlin, in 2025-2026."""
    week = datetime(2025, 1, 7, 9, 0, tzinfo=BERLIN) + timedelta(weeks=rng.randrange(100),
                                                                 days=rng.randrange(3))
    return (week + timedelta(seconds=rng.uniform(0, 8 * 3600))).timestamp()


def _budget(rng: random.Random) -> dict[str, float]:
    return {"cost_usd": rng.uniform(0, 0.5), "cost_usd_per_day": rng.uniform(0, 0.4),
            "tool_calls": rng.uniform(0, 0.6), "steps": rng.uniform(0, 0.6), "tokens": rng.uniform(0, 0.6)}


def pay_action(rng: random.Random, tool: str = "pay") -> Action:
    return Action(run=f"01JRUN{rng.randrange(10**6):06d}", agent="billing-bot", swarm="eu-billing", tool=tool,
                  effect="irreversible", at=_office_hours(rng), budget_used=_budget(rng),
                  arguments={"amount": round(rng.uniform(101, 900), 2), "currency": "EUR",
                             "vendor": rng.choice(("acme", "globex", "initech")), "country": "DE",
                             "iban": "DE89370400440532013000",
                             "memo": f"invoice 2026-{rng.randrange(9999):04d}",
                             "vendor_age_days": 400, "installment": 1})


def translate_action(rng: random.Random) -> Action:
    return Action(run=f"01JRUN{rng.randrange(10**6):06d}", agent="support-bot", swarm="eu-support",
                  tool="translate_text", effect="reversible", at=_office_hours(rng), budget_used=_budget(rng),
                  arguments={"text": "Ihre Rechnung ist unterwegs.",
                             "target": rng.choice(("en", "fr", "it"))})


@dataclass(frozen=True, slots=True)
class PolicySample:
    """Per-call times of one case."""

    case: str
    short: str
    """The case in a few words, for the targets table."""
    decided_by: str
    """The deciding rule and its position, or the default."""
    candidates: int
    """Rules whose tool and effect conditions admit the case's action (what the index leaves)."""
    per_call: tuple[float, ...]
    """Seconds per call, one value per batch, sorted."""
    target: bool
    """Whether the case is one the target applies to."""

    def q(self, q: float) -> float:
        return percentile(self.per_call, q)


def _candidates(policy: Policy, a: Action) -> int:
    return sum(1 for r in policy.rules if (r.tool is None or r.tool.match(a.tool))
               and (r.effect is None or a.effect in r.effect))


def _decided_by(policy: Policy, actions: Sequence[Action]) -> str:
    ids = {policy.decide(a).rule for a in actions}
    if len(ids) != 1:
        raise RuntimeError(f"the case's actions are decided by different rules: {sorted(map(str, ids))}")
    rid = ids.pop()
    if rid is None:
        return f"no rule: default ({policy.decide(actions[0]).verdict})"
    pos = [r.id for r in policy.rules].index(rid) + 1
    return f"rule {pos} of {len(policy.rules)} (`{rid}`, {policy.decide(actions[0]).verdict})"


def _time(fn: Callable[[Any], object], items: Sequence[Any], batches: int, batch: int) -> tuple[float, ...]:
    """Seconds per call of ``fn`` over ``items`` (cycled), one figure per batch of ``batch`` calls."""
    out = []
    n = len(items)
    clock = time.perf_counter_ns
    for b in range(batches):
        start = (b * batch) % n
        chunk = items[start:start + batch]
        if len(chunk) < batch:
            chunk = list(chunk) + list(items[: batch - len(chunk)])
        t0 = clock()
        for a in chunk:
            fn(a)
        out.append((clock() - t0) / 1e9 / batch)
    return tuple(sorted(out))


def run_policy(batches: int, batch: int = 100, seed: int = 7) -> list[PolicySample]:
    """Every case, ``batches`` batches of ``batch`` calls each."""
    policy = build_policy()
    if len(policy.rules) != 100:
        raise RuntimeError(f"the policy has {len(policy.rules)} rules, not 100")
    rng = random.Random(seed)
    pays = [pay_action(rng) for _ in range(DISTINCT)]
    translates = [translate_action(rng) for _ in range(DISTINCT)]
    out = []
    gc.collect()
    for case, short, actions in (
            (f"`pay` (irreversible, {len(pays[0].arguments)} arguments), matched late", "`pay`, matched late",
             pays),
            ("`translate_text` (reversible), no rule names the tool", "no rule for the tool", translates)):
        by = _decided_by(policy, actions)
        _time(policy.decide, actions, max(batches // 10, 1), batch)  # warm the index memo
        out.append(PolicySample(case, short, by, _candidates(policy, actions[0]),
                                _time(policy.decide, actions, batches, batch), True))
    # Informational: a tool name the index has not seen (memo miss), and building the Action.
    fresh = [pay_action(rng, tool=f"pay_v{i}") for i in range(max(batches // 10, 1) * batch + 50)]
    by = _decided_by(policy, fresh[-50:])  # decided outside the timed calls, which see new names
    out.append(PolicySample("an unseen tool name (index memo miss; informational)", "unseen tool", by,
                            _candidates(policy, fresh[0]),
                            _time(policy.decide, fresh[:-50], max(batches // 10, 1), batch), False))
    specs = [(a.run, a.agent, a.swarm, a.tool, a.effect, a.arguments, a.at, a.budget_used) for a in pays]
    out.append(PolicySample("building the `Action` (runtime, per call; informational)", "Action", "—", 0,
                            _time(lambda s: Action(*s), specs, batches, batch), False))
    return out
