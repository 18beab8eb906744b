"""``tether policy``: put a policy in force for the store, show it, check files and explain decisions."""

from __future__ import annotations

import json as jsonlib
import math
import time
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from tether.cli.args import parse_json_object
from tether.cli.common import console, handle_errors, parse_assignments, print_jsonl
from tether.core.effect_classes import ACTION_EFFECTS
from tether.core.policy import Action, Decision, Policy, load_policy
from tether.core.policy_rules import GROUP_PREFIX
from tether.core.policy_time import zone_name
from tether.errors import UsageError

policy_app = typer.Typer(no_args_is_help=True,
                         help="The store's policy: apply, show or clear it; check and explain files.")

VERDICT_STYLE = {"allow": "green", "deny": "red", "approve": "yellow", "defer": "cyan"}


@policy_app.command("check")
@handle_errors
def check(file: Annotated[Path, typer.Argument(help="The policy file (TOML).", metavar="FILE")],
          tool: Annotated[list[str] | None, typer.Option(
              "--tool", help="A tool the agents define, repeatable: a rule naming any other exact tool "
                             "name is refused.", metavar="TOOL")] = None) -> None:
    """Validate a policy file: print its rule count and hash, or what is wrong (exit status 2)."""
    policy = load_policy(file, known_tools=set(tool) if tool else None)
    console.print(f"ok: {len(policy.rules)} rules, hash {policy.hash}", highlight=False, soft_wrap=True)


def _arguments(text: str) -> dict[str, Any]:
    return parse_json_object(text, "--args", "'{\"to\": \"a@example.com\"}'")


def _instant(text: str | None, tz: tzinfo) -> float:
    if text is None:
        return time.time()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if math.isfinite(seconds):
            return seconds
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--at {text!r}: expected an ISO time such as 2025-03-30T02:30 (read in the "
                         f"policy's time zone, {zone_name(tz)}) or 2025-03-30T02:30+02:00") from None
    return (dt if dt.tzinfo is not None else dt.replace(tzinfo=tz)).timestamp()


def _local(t: float, tz: tzinfo) -> str:
    return f"{datetime.fromtimestamp(t, tz):%Y-%m-%d %H:%M} {zone_name(tz)}"


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def _print_decision(decision: Decision, tz: tzinfo) -> None:
    style = VERDICT_STYLE[decision.verdict]
    by = f"rule {decision.rule!r}" if decision.rule is not None else "the default"
    console.print(f"decision: [{style}]{decision.verdict}[/] by {escape(by)}: {escape(decision.reason)}",
                  highlight=False, soft_wrap=True)
    if decision.until is not None:
        console.print(f"  until {_local(decision.until, tz)}", highlight=False, soft_wrap=True)
    if decision.verdict == "approve":
        who = ", ".join(decision.approvers) or "anyone allowed to approve"
        wait = "no expiry" if decision.expires_after is None else (
            f"expires after {_duration(decision.expires_after)}, then {decision.on_expiry}")
        console.print(f"  approvers: {escape(who)}; {wait}", highlight=False, soft_wrap=True)


@policy_app.command("explain")
@handle_errors
def explain(agent: Annotated[str, typer.Option(help="The agent's name.", metavar="NAME")],
            tool: Annotated[str, typer.Option(help="The tool's name (the model's, for a model call).",
                                              metavar="TOOL")],
            effect: Annotated[str, typer.Option(
                help="read, reversible, irreversible or model; an undeclared tool is irreversible.",
                metavar="CLASS")
            ] = "irreversible",
            args: Annotated[str, typer.Option("--args", help="The arguments, as a JSON object.",
                                              metavar="JSON")] = "{}",
            swarm: Annotated[str | None, typer.Option(help="The swarm the run belongs to.",
                                                      metavar="NAME")] = None,
            at: Annotated[str | None, typer.Option(
                help="When (ISO time; without an offset, in the policy's default time zone). "
                     "Default: now.", metavar="TIME")] = None,
            budget: Annotated[list[str] | None, typer.Option(
                help="Fraction of a budget cap used, repeatable: cost_usd_per_day=0.8.",
                metavar="KEY=FRACTION")] = None,
            policy: Annotated[Path | None, typer.Option(
                help="A policy file; default: the store's policy in force (for --swarm).",
                metavar="FILE")] = None,
            json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False) -> None:
    """Show which rule decides an action and why, without running anything."""
    # long: most lines are the option signature (typer reads it); the body is ~25 lines
    if effect not in ACTION_EFFECTS:
        raise UsageError(f"--effect {effect!r}: use one of {', '.join(ACTION_EFFECTS)}")
    pol = load_policy(policy) if policy is not None else _store_policy(swarm)
    tz = pol.defaults.timezone
    action = Action(run="explain", agent=agent, swarm=swarm, tool=tool, effect=effect,
                    arguments=_arguments(args), at=_instant(at, tz),
                    budget_used=parse_assignments(budget or [], "--budget"))
    rows = pol.explain(action)
    decision = pol.decide(action)
    first = next((rid for rid, matched, _ in rows if matched), None)
    if json:
        print_jsonl([{"policy": pol.source, "hash": pol.hash,
                      "groups": {k: list(v) for k, v in pol.groups.items()},
                      "action": {"agent": agent, "swarm": swarm, "tool": tool, "effect": effect,
                                 "arguments": action.arguments, "at": action.at,
                                 "budget_used": dict(action.budget_used)},
                      "rules": [{"id": rid, "matched": m, "decides": rid == first, "why": why}
                                for rid, m, why in rows],
                      "decision": decision.to_payload()}])
        return
    _print_explained(pol, action, rows, first, tz)
    _print_decision(decision, tz)


def _print_explained(pol: Policy, action: Action, rows: list[tuple[str, bool, str]],
                     first: str | None, tz: tzinfo) -> None:
    """The policy, the action, and each rule: whether it matched, why, which one decides."""
    console.print(f"policy {escape(pol.source)}: {len(pol.rules)} rules, hash {pol.hash[:12]}",
                  highlight=False, soft_wrap=True)
    _print_groups(pol)
    console.print(f"action: agent {escape(action.agent)}"
                  + (f", swarm {escape(action.swarm)}" if action.swarm else "")
                  + f", tool {escape(action.tool)} ({action.effect}), at {_local(action.at, tz)}, "
                    f"args {escape(jsonlib.dumps(action.arguments))}", highlight=False, soft_wrap=True)
    for rid, matched, why in rows:
        mark = "[green]match[/]" if matched else "[dim]no[/]   "
        note = (" [bold](decides)[/]" if rid == first else " (not consulted: an earlier rule decides)") \
            if matched else ""
        console.print(f"  {mark} {escape(rid)}: {escape(why)}{note}", highlight=False, soft_wrap=True)
    if not rows:
        console.print("  (no rules)")


SwarmOpt = Annotated[str | None, typer.Option(
    "--swarm", help="For the runs of this swarm only (default: the whole store).", metavar="NAME")]


@policy_app.command("apply")
@handle_errors
def apply(file: Annotated[Path, typer.Argument(help="The policy file (TOML).", metavar="FILE")],
          swarm: SwarmOpt = None,
          as_: Annotated[str | None, typer.Option("--as", help="Act as NAME (default $TETHER_USER "
                                                               "or the OS user).",
                                                  metavar="NAME")] = None) -> None:
    """Check a policy file, then put it in force for the store (or a swarm), journaled.

    Every worker of the store picks it up at its next scheduling pass."""
    from tether.cli.common import claimed_actor, store
    from tether.policies import apply_policy, in_force
    from tether.runtime.operator import actor
    pol = load_policy(file)
    claimed = claimed_actor(as_)  # a refused name leaves no store behind
    s = store(create=True)
    event = apply_policy(s, pol, who=claimed or actor(None, s), swarm=swarm)
    now = in_force(s, swarm)
    if event is None:
        console.print(f"unchanged: {escape(now.describe())}", highlight=False, soft_wrap=True)
        return
    console.print(f"applied {escape(str(file))} ({len(pol.rules)} rules, hash {pol.hash}) as store "
                  f"event #{event.n}; every worker of {escape(s.url)} uses it from its next "
                  "scheduling pass", highlight=False, soft_wrap=True)


@policy_app.command("clear")
@handle_errors
def clear(swarm: SwarmOpt = None,
          as_: Annotated[str | None, typer.Option("--as", help="Act as NAME.",
                                                  metavar="NAME")] = None) -> None:
    """Take the applied policy out of force (journaled): a swarm's runs fall back to the
    store's policy, the store's to the built-in defaults (irreversible needs approval)."""
    from tether.cli.common import store
    from tether.policies import clear_policy, in_force
    from tether.runtime.operator import actor
    s = store()
    event = clear_policy(s, who=actor(as_, s), swarm=swarm)
    if event is None:
        raise UsageError(f"no policy is applied to {'swarm ' + swarm if swarm else 'the store'}; "
                         "see `tether policy show`")
    console.print(f"cleared as store event #{event.n}; now: {escape(in_force(s, swarm).describe())}",
                  highlight=False, soft_wrap=True)


@policy_app.command("show")
@handle_errors
def show(swarm: SwarmOpt = None,
         text: Annotated[bool, typer.Option("--text", help="Print the policy's text too.")] = False,
         history: Annotated[bool, typer.Option(
             "--history", help="Every policy change instead, oldest first.")] = False,
         json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False) -> None:
    """Show the policy in force: its hash, who applied it and when (or the built-in defaults).

    An applied policy that cannot be used (it does not compile: written by another tether,
    or changed outside it) is shown as such, with why and how to fix it, and exits with
    status 1 so that scripts notice: no worker of the store starts until it is replaced."""
    from tether.cli.common import store
    from tether.runtime.policybook import PolicyBook
    s = store(readonly=True)
    if history:
        _history(s, swarm, json=json)
        return
    book = PolicyBook()
    book.refresh(s)
    bad, shown = _shown(book, swarm)
    if json:
        print_jsonl([_unusable_json(x) for x in bad] + [_in_force_json(x) for x in shown])
    else:
        for x in bad:
            _print_unusable(x)
        for x in shown:
            console.print(escape(x.describe()), highlight=False, soft_wrap=True)
            console.print(f"  hash {x.policy.hash}, {len(x.policy.rules)} rules", highlight=False)
            _print_groups(x.policy)
            if text:
                console.print(x.policy.text, markup=False, highlight=False, soft_wrap=True)
    if bad:
        raise typer.Exit(1)


def _store_policy(swarm: str | None) -> Policy:
    """The store's policy in force for ``swarm``; refused while an applied one cannot be used:
    no worker runs under the fallback it would otherwise show (they refuse to start)."""
    from tether.cli.common import store
    from tether.runtime.policybook import PolicyBook
    book = PolicyBook()
    book.refresh(store(readonly=True))
    bad = book.unusable()
    if bad:
        x = bad[0]
        raise UsageError(f"the policy applied {x.scope.replace(':', ' ')} (store event "
                         f"#{x.event.n}) cannot be used: {x.error}; workers of this store "
                         f"refuse to start until it is replaced, so nothing is decided by it. "
                         f"Fix: `{x.fix}` with a good policy file, or explain against a file "
                         "with --policy FILE")
    return book.for_swarm(swarm).policy


def _shown(book: Any, swarm: str | None) -> tuple[list[Any], list[Any]]:
    """Every unusable policy (whatever ``swarm``: one stops every worker of the store), and
    the usable ones in force (the built-in defaults only when no policy is applied)."""
    bad = book.unusable()
    broken = {x.scope for x in bad}
    good = book.scopes() if swarm is None else [book.for_swarm(swarm)]
    shown = [x for x in good if x.event is not None and x.scope not in broken]
    return bad, shown if shown or bad else [book.for_swarm(swarm)]


def _print_unusable(x: Any) -> None:
    e = x.event
    where = "store-wide" if e.scope == "store" else f"for {e.scope.replace(':', ' ')}"
    source = (e.payload or {}).get("source") if isinstance(e.payload, dict) else None
    console.print(
        f"policy applied {where} by {e.actor} at {e.time} (store event #{e.n}"
        + (f", from {source}" if source else "") + f") CANNOT BE USED: {x.error}. Workers of "
        "this store refuse to start until it is replaced (a running one keeps the policy it "
        f"had); fix: `{x.fix}` with a good policy file (`tether policy check FILE` first)",
        markup=False, highlight=False, soft_wrap=True)


def _unusable_json(x: Any) -> dict[str, Any]:
    e = x.event
    return {"scope": x.scope, "status": "unusable", "error": x.error,
            "workers": "refuse to start", "fix": x.fix, "applied_by": e.actor,
            "applied_at": e.time, "event": e.n,
            "source": (e.payload or {}).get("source") if isinstance(e.payload, dict) else None}


def _print_groups(pol: Policy) -> None:
    """The policy's ``[groups]``: who an approvers entry ``group:NAME`` stands for."""
    for name, people in sorted(pol.groups.items()):
        console.print(f"  {GROUP_PREFIX}{escape(name)} = {escape(', '.join(people)) or '(nobody)'}",
                      highlight=False, soft_wrap=True)


def _history(s: Any, swarm: str | None, *, json: bool) -> None:
    """The store chain's policy events (for ``swarm``: its scope and the store's)."""
    from tether.core.settings import STORE_SCOPE, swarm_scope
    scopes = {STORE_SCOPE, swarm_scope(swarm)}
    events = [e for e in s.store_events() if e.setting == "policy"
              and (swarm is None or e.scope in scopes)]
    if json:
        print_jsonl([{k: v for k, v in e.to_json().items() if k != "payload"}
                     | {"policy_hash": (e.payload or {}).get("hash"),
                        "source": (e.payload or {}).get("source")} for e in events])
        return
    for e in events:
        p = e.payload if isinstance(e.payload, dict) else {}
        what = f"{str(p.get('hash'))[:12]} from {p.get('source')}" if e.kind == "policy.applied" \
            else "cleared"
        console.print(f"#{e.n} {e.time} {e.scope}: {what} by {e.actor}", markup=False,
                      highlight=False, soft_wrap=True)
    if not events:
        console.print("no policy was ever applied: the built-in defaults are in force")


def _in_force_json(x: Any) -> dict[str, Any]:
    e = x.event
    return {"scope": x.scope, "status": "in force", "hash": x.policy.hash, "rules": len(x.policy.rules),
            "applied_by": e.actor if e else None, "applied_at": e.time if e else None,
            "source": (e.payload or {}).get("source") if e else None,
            "event": e.n if e else None, "groups": {k: list(v) for k, v in x.policy.groups.items()},
            "text": x.policy.text, "format": x.policy.format}
