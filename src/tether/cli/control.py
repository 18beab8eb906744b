"""Commands that change runs: pause, resume, stop, resolve, budget; a swarm's settings;
backup."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tether.cli.args import parse_json, shown
from tether.cli.common import AsOpt, console, handle_errors, operator, parse_assignments, print_jsonl, store
from tether.errors import UsageError
from tether.ops import Tether
from tether.runtime.operator import actor
from tether.store.protocol import Store
from tether.store.records import RunRow


def _targets(run: str | None, every: bool, agent: str | None, swarm: str | None) -> list[str]:
    chosen = sum(1 for x in (run, agent, swarm) if x is not None) + int(every)
    if chosen != 1:
        raise UsageError("name one RUN, or one of --all, --agent NAME, --swarm NAME")
    if run is not None:
        return [run]
    rows = [r for r in store().list_runs() if r.status in ("running", "sleeping", "waiting",
                                                            "paused", "awaiting_approval", "failed")]
    if agent is not None:
        rows = [r for r in rows if r.agent == agent or r.agent.rsplit(":", 1)[-1] == agent]
    if swarm is not None:
        rows = [r for r in rows if r.swarm == swarm]
    if not rows:
        raise UsageError("no live run matches")
    return [r.id for r in rows]


def _command(kind: str, runs: list[str], as_: str | None,
             args: dict[str, object] | None = None) -> None:
    t = operator(as_)
    for run in runs:
        res = t.command(run, kind, args, wait=0 if len(runs) > 1 else 5.0)
        row = t.run(res.run)
        if res.applied and res.outcome != "applied":
            console.print(f"{kind}: nothing to do for run {res.run} ({res.outcome})")
        elif res.applied:
            console.print(f"{kind}: run {res.run} is now {row.status} (applied by {res.by})")
        else:
            console.print(f"{kind}: queued as command {res.command}; the worker that owns run "
                          f"{res.run} applies it at its next safe point")


RunArg = Annotated[str | None, typer.Argument(help="Run id, name, agent name or id prefix.", metavar="RUN")]
AllOpt = Annotated[bool, typer.Option("--all", help="Every live run.")]
AgentOpt = Annotated[str | None, typer.Option(help="Every live run of this agent.", metavar="AGENT")]
SwarmOpt = Annotated[str | None, typer.Option(help="Every live run of this swarm.", metavar="NAME")]


@handle_errors
def pause(run: RunArg = None, every: AllOpt = False, agent: AgentOpt = None,
          swarm: SwarmOpt = None, as_: AsOpt = None) -> None:
    """Pause runs at their next safe point (an in-flight call finishes first)."""
    _command("pause", _targets(run, every, agent, swarm), as_)


@handle_errors
def resume(runs: Annotated[list[str] | None, typer.Argument(
               help="Run ids, names or id prefixes (several: e.g. after a cascade rollback).", metavar="RUN")]
           = None,
           every: AllOpt = False, agent: AgentOpt = None, swarm: SwarmOpt = None,
           accept_change: Annotated[bool, typer.Option(
               "--accept-change",
               help="Go on although the agent's definition changed since the run last ran.")]
           = False,
           as_: AsOpt = None) -> None:
    """Resume paused or failed runs (a failed step is re-run from its checkpoint)."""
    if runs and (every or agent or swarm):
        raise UsageError("name RUNs, or one of --all, --agent NAME, --swarm NAME")
    if not runs:
        t = Tether(store())
        runs = [r for r in _targets(None, every, agent, swarm)
                if t.run(r).status in ("paused", "failed")]
        if not runs:
            raise UsageError("no paused or failed run matches")
    _command("resume", runs, as_, {"accept_change": True} if accept_change else None)
    t = Tether(store())
    for run in runs:
        row = t.run(run)
        if row.spec.get("quarantined"):
            console.print(f"note: run {row.name} ({row.id}) is still quarantined: what it sends "
                          "is held and what it writes is marked suspect until `tether "
                          f"quarantine {row.id} --release`", highlight=False)


@handle_errors
def stop(run: RunArg = None, every: AllOpt = False, agent: AgentOpt = None,
         swarm: SwarmOpt = None, as_: AsOpt = None) -> None:
    """Stop runs now, for good.

    An in-flight async call is cancelled; a sync tool still running in a thread has its
    result discarded and its effect marked in doubt."""
    _command("stop", _targets(run, every, agent, swarm), as_)


@handle_errors
def resolve(effect: Annotated[str, typer.Argument(help="Effect id (its intent event id).", metavar="EFFECT")],
            done: Annotated[bool, typer.Option("--done", help="It happened.")] = False,
            not_done: Annotated[bool, typer.Option(
                "--not-done", help="It did not happen; do not retry (the model is told).")] = False,
            retry: Annotated[bool, typer.Option("--retry", help="Run it again, once.")] = False,
            undone: Annotated[bool, typer.Option(
                "--undone", help="An interrupted rollback's undo of it did take effect.")]
            = False,
            not_undone: Annotated[bool, typer.Option(
                "--not-undone", help="An interrupted rollback's undo of it did not take "
                                     "effect (the next rollback runs it again).")] = False,
            result: Annotated[str | None, typer.Option(
                help="With --done: the result (JSON) the agent should see.", metavar="JSON")] = None,
            as_: AsOpt = None) -> None:
    """Settle an in-doubt effect, or a half-done undo.

    --done / --not-done / --retry settle an effect that may or may not have happened (the
    run resumes when none is left in doubt). --undone / --not-undone settle an undo an
    interrupted rollback started and did not finish."""
    chosen = [n for n, v in (("done", done), ("not_done", not_done), ("retry", retry),
                             ("undone", undone), ("not_undone", not_undone)) if v]
    if len(chosen) != 1:
        raise UsageError("say exactly one of --done, --not-done, --retry, --undone or "
                         "--not-undone")
    if result is not None and chosen[0] != "done":
        raise UsageError("--result goes with --done only")
    t = operator(as_)
    if chosen[0] in ("undone", "not_undone"):
        eff = t.settle_undo(effect, happened=chosen[0] == "undone")
        console.print(f"the undo of effect {eff.id} ({eff.tool}) is settled as "
                      f"{chosen[0].replace('_', ' ')}; run `tether rollback` again to finish",
                      highlight=False)
        return
    value = None if result is None else parse_json(
        result, "--result", "'\"ok\"' (quote strings) or '{\"id\": 7}'")
    eff = t.resolve(effect, chosen[0], result=value)
    row = t.run(eff.run)
    console.print(f"effect {eff.id} ({eff.tool}) resolved as {chosen[0]}; run {eff.run} is "
                  f"{row.status}")


@handle_errors
def budget(run: Annotated[str | None, typer.Argument(help="Run id, name, agent name or id prefix.",
                                                     metavar="RUN")] = None,
           swarm: Annotated[str | None, typer.Option(
               help="Show or change a swarm's shared budget instead of a run's.", metavar="NAME")] = None,
           set_: Annotated[list[str] | None, typer.Option(
               "--set", help="KEY=NUMBER, repeatable, e.g. cost_usd_per_day=5.",
               metavar="KEY=NUMBER")] = None,
           unset: Annotated[list[str] | None, typer.Option(help="Remove a cap.", metavar="KEY")] = None,
           json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
           as_: AsOpt = None) -> None:
    """Show a run's (or swarm's) budget and usage, or change it (journaled for runs)."""
    s = store(readonly=not (set_ or unset))
    changes = parse_assignments(set_ or [], "--set")
    if (run is None) == (swarm is None):
        raise UsageError("name a RUN or --swarm NAME (one of them)")
    t = Tether(s, who=actor(as_, s) if set_ or unset else None)
    if swarm is not None:
        budget_now = t.set_swarm_budget(swarm, changes, unset) if set_ or unset \
            else s.swarm_budget(swarm)
        _print_budget(f"swarm {swarm}", {"swarm": swarm}, budget_now, s.swarm_usage(swarm), json)
        return
    assert run is not None
    if set_ or unset:
        res = t.set_budget(run, changes, unset)
        if not res.applied:
            console.print(f"budget change queued as command {res.command}")
    row = t.run(run)
    _print_budget(f"run {row.id}", {"id": row.id}, row.budget, row.usage, json)


def _print_budget(title: str, key: dict[str, str], caps: dict[str, float],
                  usage: dict[str, float], json: bool) -> None:
    if json:
        print_jsonl([{**key, "budget": caps, "usage": usage}])
        return
    console.print(f"{title} budget: " + (", ".join(f"{k}={v:g}" for k, v in caps.items())
                                         or "none"))
    console.print("usage: " + ", ".join(f"{k}={v:g}" for k, v in sorted(usage.items())))


@handle_errors
def backup(path: Annotated[Path, typer.Argument(help="Where to write the copy (must not exist).",
                                                metavar="PATH")]
           ) -> None:
    """Write a consistent online copy of the store."""
    s = store(readonly=True)  # a read-only store can be backed up too
    s.backup(str(path))
    console.print(f"backed up {s.url} to {path}")


@handle_errors
def swarm(name: Annotated[str, typer.Argument(help="The swarm's name.", metavar="SWARM")],
          pause_every_steps: Annotated[int | None, typer.Option(
              help="Pause point for every run of the swarm: review every N steps.", metavar="N")] = None,
          pause_every_minutes: Annotated[float | None, typer.Option(
              help="Pause point: review every T minutes (run clock).", metavar="MINUTES")] = None,
          pause_before_irreversible: Annotated[bool | None, typer.Option(
              "--pause-before-irreversible/--no-pause-before-irreversible",
              help="Pause point: ask before every irreversible effect.")] = None,
          pause_on_alert: Annotated[bool | None, typer.Option(
              "--pause-on-alert/--no-pause-on-alert",
              help="Pause point: pause at any monitor alert (off by default).")] = None,
          json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
          as_: AsOpt = None) -> None:
    """Show a swarm (runs, shared budget, pause points), or set its pause points
    (journaled in the store chain with who set them).

    A run's own pause points override the swarm's; workers read them when they take a
    run."""
    if not name:
        raise UsageError("NAME '': give the swarm's name (`tether runs` shows each run's swarm)")
    s = store()
    changes = {k: v for k, v in (("every_steps", pause_every_steps),
                                 ("every_minutes", pause_every_minutes),
                                 ("before_irreversible", pause_before_irreversible),
                                 ("on_alert", pause_on_alert))
               if v is not None}
    if changes:
        Tether(s, who=actor(as_, s)).set_swarm_pause_points(name, changes)
    runs = s.list_runs(swarm=name)
    budget, points_now = s.swarm_budget(name), s.swarm_pause_points(name)
    if not (runs or budget or points_now):
        _no_such_swarm(s, name)
    info: dict[str, object] = {"swarm": name, "runs": {r.id: r.status for r in runs},
                               "budget": budget, "usage": s.swarm_usage(name),
                               "pause_points": points_now}
    if json:
        print_jsonl([info])
    else:
        _print_swarm(name, runs, budget, points_now)


def _print_swarm(name: str, runs: list[RunRow], budget: dict[str, float],
                 points: dict[str, object]) -> None:
    console.print(f"swarm {name}: {len(runs)} runs "
                  + ", ".join(f"{sum(1 for r in runs if r.status == st)} {st}"
                              for st in sorted({r.status for r in runs})))
    console.print("budget: " + (", ".join(f"{k}={v:g}" for k, v in budget.items()) or "none"))
    pp = {k: v for k, v in points.items() if v}
    console.print("pause points: " + (", ".join(f"{k}={v}" for k, v in pp.items()) or "none"))


def _no_such_swarm(s: Store, name: str) -> None:
    """Refuse a swarm the store knows nothing of (no run, budget or pause point), naming
    those it has: a typo must not read as an empty swarm."""
    names = sorted({r.swarm for r in s.list_runs() if r.swarm})
    have = f"swarms with runs: {', '.join(names[:10])}" + ("..." if len(names) > 10 else "") \
        if names else "this store has no swarm yet"
    raise UsageError(f"no swarm named {shown(name)}; {have} (set its pause points with "
                     "`tether swarm NAME --pause-every-steps N` to prepare a new one)")
