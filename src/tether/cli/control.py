"""Commands that change things: run, worker, pause, resume, stop, resolve, budget, backup."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from tether import ops
from tether.cli import model_opts
from tether.cli.args import parse_json, shown
from tether.cli.common import console, handle_errors, make_folder, parse_assignments, print_jsonl, store
from tether.core.policy import load_policy
from tether.errors import StoreError, UsageError
from tether.policies import apply_policy, in_force
from tether.runtime.changes import WorkerStats
from tether.runtime.runs import load_agent, start_run, validate_run
from tether.runtime.storage_health import GIVE_UP_AFTER
from tether.runtime.worker import Worker
from tether.store.protocol import Store

PolicyOpt = Annotated[Path | None, typer.Option(
    help="Policy file (TOML), applied to the store (journaled) before the run starts; default "
         "tether.toml beside the store when it exists.", metavar="FILE")]
WorkerPolicyOpt = Annotated[Path | None, typer.Option(
    help="Policy file (TOML) this worker must run under: refused unless it is the store's "
         "policy in force (or --apply).", metavar="FILE")]


def _apply_beside(s: Store, given: Path | None, who: str) -> None:
    """Apply ``--policy FILE``, else a tether.toml beside the store, through the journaled
    apply (checked first: a broken file stops here, before any run exists)."""
    path = given
    if path is None:
        folder = Path(getattr(s, "path", "tether.db")).parent
        path = folder / "tether.toml" if (folder / "tether.toml").exists() else None
    if path is None:
        return
    event = apply_policy(s, load_policy(path), who=who)
    if event is not None:
        console.print(f"applied {path} to the store: {in_force(s).describe()}",
                      highlight=False, soft_wrap=True)


AsOpt = Annotated[str | None, typer.Option("--as", help="Act as NAME (default $TETHER_USER or "
                                                        "the OS user).", metavar="NAME")]


@handle_errors
def run(agent: Annotated[str, typer.Argument(help="The agent, as module:attr.", metavar="AGENT")],
        goal: Annotated[str, typer.Option(help="What the run should achieve.", metavar="TEXT")],
        name: Annotated[str | None, typer.Option(help="A name for the run.", metavar="NAME")] = None,
        swarm: Annotated[str | None, typer.Option(help="Swarm to join.", metavar="NAME")] = None,
        budget: Annotated[list[str] | None, typer.Option(
            help="Budget cap, repeatable: steps=50, cost_usd_per_day=5 ...", metavar="KEY=NUMBER")] = None,
        workspace: Annotated[Path | None, typer.Option(
            help="Folder the built-in file tools are confined to.", metavar="DIR")] = None,
        detach: Annotated[bool, typer.Option(
            "--detach", help="Only create the run; a `tether worker` will drive it.")] = False,
        policy: PolicyOpt = None,
        pause_every_steps: Annotated[int | None, typer.Option(
            help="Pause point: a human reviews every N steps.", metavar="N")] = None,
        pause_every_minutes: Annotated[float | None, typer.Option(
            help="Pause point: a human reviews every T minutes (run clock).", metavar="MINUTES")] = None,
        pause_before_irreversible: Annotated[bool, typer.Option(
            "--pause-before-irreversible",
            help="Pause point: ask for approval before every irreversible effect.")] = False,
        as_: AsOpt = None,
        model_timeout: model_opts.TimeoutOpt = None,
        model_retries: model_opts.RetriesOpt = None,
        prices: model_opts.PricesOpt = None) -> None:
    """Start a run of an agent and drive it here until it sleeps, pauses or ends.

    Everything is checked first (the agent, the policy, the budget, the state): on an
    error no run is written (at most an empty store file is created). A budget capping
    cost (cost_usd, cost_usd_per_day...) is refused when the agent's model has no price
    (built in, or in --prices FILE)."""
    table = model_opts.apply(model_timeout, model_retries, prices)
    a = load_agent(agent)
    caps = parse_assignments(budget or [], "--budget")
    points = {k: v for k, v in (("every_steps", pause_every_steps),
                                ("every_minutes", pause_every_minutes),
                                ("before_irreversible", pause_before_irreversible)) if v} or None
    init = validate_run(a, goal=goal, budget=caps, pause_points=points, prices=table)
    who = ops.actor(as_)
    if workspace is not None:
        make_folder(workspace, "--workspace", create=False)  # start_run creates it
    s = store(create=True)
    _apply_beside(s, policy, who)
    rid = start_run(s, a, agent_ref=agent, goal=goal, name=name, swarm=swarm, budget=caps,
                    workspace=workspace, actor=who, pause_points=points, prices=table,
                    state=init)
    console.print(f"started run {rid}")
    if detach:
        return
    w = Worker(s, agents={agent: a}, only={rid}, prices=table)
    gate = w.policies.for_swarm(swarm)
    console.print(f"runs under the {gate.describe()}", highlight=False, soft_wrap=True)
    asyncio.run(w.run(until_idle=True, handle_signals=True))
    row = ops.find_run(s, rid)
    console.print(f"run {rid} is {row.status} after step {row.step}"
                  + (f": {row.reason}" if row.reason else ""), highlight=False)
    if row.status == "failed":
        raise typer.Exit(1)  # scripts can tell; the run stays in the store, resumable


@handle_errors
def worker(until_idle: Annotated[bool, typer.Option(
               "--until-idle", help="Exit when nothing is runnable.")] = False,
           concurrency: Annotated[int, typer.Option(help="The most runs driven at once.",
                                                    metavar="N")] = 1000,
           lease_ttl: Annotated[float, typer.Option(help="Lease length in seconds.",
                                                    metavar="SECONDS")] = 30.0,
           policy: WorkerPolicyOpt = None,
           apply: Annotated[bool, typer.Option(
               "--apply", help="Apply --policy FILE to the store (journaled) if it differs.")]
           = False,
           as_: AsOpt = None,
           pipeline: Annotated[int, typer.Option(
               help="Steps' commits in flight per run while the next step runs (0: every "
                    "step durable before the next).", metavar="N")] = 4,
           give_up_after: Annotated[float | None, typer.Option(
               "--give-up-after", metavar="SECONDS",
               help="With --until-idle: exit with an error once the store has failed (a full "
                    "disk, say) for this long (default 60); runs are left as they were.")]
           = None,
           quiet: Annotated[bool, typer.Option(
               "--quiet", "-q", help="Log only the policy it runs under, runs that failed or "
                                     "were abandoned, and the summary.")] = False,
           json: Annotated[bool, typer.Option(
               "--json", help="Log JSON lines: one per run taken or left, a summary last.")]
           = False,
           model_timeout: model_opts.TimeoutOpt = None,
           model_retries: model_opts.RetriesOpt = None,
           prices: model_opts.PricesOpt = None) -> None:
    """Drive every runnable run until interrupted (SIGTERM/SIGINT drain cleanly).

    Logs one line per change of a run's state (taken; left sleeping, waiting, awaiting
    approval, paused, stopped, failed with the reason, or done, with the steps and effects
    it made) and, at exit, how many runs, steps and effects, by final status.

    With TETHER_WEBHOOK_URL and TETHER_WEBHOOK_SECRET set, operators' notifications
    (approval requested or expiring, run paused or stopped, budget exceeded) are POSTed
    there, signed with HMAC-SHA256.
    """
    if apply and policy is None:
        raise UsageError("--apply goes with --policy FILE")
    if quiet and json:
        raise UsageError("--quiet and --json do not go together; --json logs every change")
    table = model_opts.apply(model_timeout, model_retries, prices)
    if give_up_after is not None and not until_idle:
        # A long-lived worker never gives up on the store: it backs off and goes on once
        # storage works again. Ignoring the option would let an operator think it exits.
        raise UsageError("--give-up-after goes with --until-idle; a worker without it never "
                         "gives up on a failing store, it backs off and retries")
    s = store(create=True)
    from tether.cli.worker_log import WorkerLog
    from tether.notify import WebhookConfig
    wanted = load_policy(policy) if policy is not None else None
    if wanted is not None and apply:
        apply_policy(s, wanted, who=ops.actor(as_))
    out = WorkerLog(quiet=quiet, json=json)
    w = Worker(s, concurrency=concurrency, lease_ttl=lease_ttl, policy=wanted,
               webhook=WebhookConfig.from_env(), pipeline=pipeline,
               give_up_after=GIVE_UP_AFTER if give_up_after is None else give_up_after,
               on_change=out.change, prices=table)
    out.start(w.owner, s.url, [x.describe() for x in
                               w.policies.scopes() or [w.policies.for_swarm(None)]])
    try:
        out.summary(asyncio.run(w.run(until_idle=until_idle, handle_signals=True)))
    except StoreError:
        # Gave up on a failing store: what it did before still counts; the error line follows.
        out.summary(WorkerStats(w.runs_driven, dict(w.finished), w.drives.steps,
                                w.drives.effects, dict(w.drives.final)), failed=True)
        raise


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
    s = store()
    for run in runs:
        res = ops.send_command(s, run, kind, args, who=ops.actor(as_), wait=0 if len(runs) > 1
                               else 5.0)
        row = ops.find_run(s, res.run)
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
        runs = [r for r in _targets(None, every, agent, swarm)
                if ops.find_run(store(), r).status in ("paused", "failed")]
        if not runs:
            raise UsageError("no paused or failed run matches")
    _command("resume", runs, as_, {"accept_change": True} if accept_change else None)
    s = store()
    for run in runs:
        row = ops.find_run(s, run)
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
    if chosen[0] in ("undone", "not_undone"):
        if result is not None:
            raise UsageError("--result goes with --done only")
        from tether.provenance.rollback import settle_undo
        eff = settle_undo(store(), effect, happened=chosen[0] == "undone", who=ops.actor(as_))
        console.print(f"the undo of effect {eff.id} ({eff.tool}) is settled as "
                      f"{chosen[0].replace('_', ' ')}; run `tether rollback` again to finish",
                      highlight=False)
        return
    value = None
    if result is not None:
        if chosen[0] != "done":
            raise UsageError("--result goes with --done only")
        value = parse_json(result, "--result", "'\"ok\"' (quote strings) or '{\"id\": 7}'")
    eff = ops.resolve_effect(store(), effect, chosen[0], result=value, who=ops.actor(as_))
    row = ops.find_run(store(), eff.run)
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
    if swarm is not None:
        budget_now = ops.set_swarm_budget(s, swarm, changes, list(unset or [])) \
            if set_ or unset else s.swarm_budget(swarm)
        usage = s.swarm_usage(swarm)
        if json:
            print_jsonl([{"swarm": swarm, "budget": budget_now, "usage": usage}])
            return
        console.print(f"swarm {swarm} budget: "
                      + (", ".join(f"{k}={v:g}" for k, v in budget_now.items()) or "none"))
        console.print("usage: " + ", ".join(f"{k}={v:g}" for k, v in sorted(usage.items())))
        return
    assert run is not None
    if set_ or unset:
        res = ops.set_budget(s, run, changes, list(unset or []), who=ops.actor(as_))
        if not res.applied:
            console.print(f"budget change queued as command {res.command}")
    row = ops.find_run(s, run)
    if json:
        print_jsonl([{"id": row.id, "budget": row.budget, "usage": row.usage}])
        return
    console.print(f"run {row.id} budget: "
                  + (", ".join(f"{k}={v:g}" for k, v in row.budget.items()) or "none"))
    console.print("usage: " + ", ".join(f"{k}={v:g}" for k, v in sorted(row.usage.items())))


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
          json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False) -> None:
    """Show a swarm (runs, shared budget, pause points), or set its pause points.

    A run's own pause points override the swarm's; workers read them when they take a
    run."""
    import time as _time

    from tether.core.pausepoints import PausePoints
    if not name:
        raise UsageError("NAME '': give the swarm's name (`tether runs` shows each run's swarm)")
    s = store()
    changes = {k: v for k, v in (("every_steps", pause_every_steps),
                                 ("every_minutes", pause_every_minutes),
                                 ("before_irreversible", pause_before_irreversible))
               if v is not None}
    if changes:
        points = PausePoints.parse({**s.swarm_pause_points(name), **changes}).to_json()
        s.set_swarm_pause_points(name, points, _time.time())
    runs = s.list_runs(swarm=name)
    budget, points_now = s.swarm_budget(name), s.swarm_pause_points(name)
    if not (runs or budget or points_now):
        _no_such_swarm(s, name)
    info: dict[str, object] = {"swarm": name, "runs": {r.id: r.status for r in runs},
                               "budget": budget, "usage": s.swarm_usage(name),
                               "pause_points": points_now}
    if json:
        print_jsonl([info])
        return
    console.print(f"swarm {name}: {len(runs)} runs "
                  + ", ".join(f"{sum(1 for r in runs if r.status == st)} {st}"
                              for st in sorted({r.status for r in runs})))
    console.print("budget: " + (", ".join(f"{k}={v:g}" for k, v in budget.items()) or "none"))
    pp = {k: v for k, v in points_now.items() if v}
    console.print("pause points: " + (", ".join(f"{k}={v}" for k, v in pp.items()) or "none"))


def _no_such_swarm(s: Store, name: str) -> None:
    """Refuse a swarm the store knows nothing of (no run, budget or pause point), naming
    those it has: a typo must not read as an empty swarm."""
    names = sorted({r.swarm for r in s.list_runs() if r.swarm})
    have = f"swarms with runs: {', '.join(names[:10])}" + ("..." if len(names) > 10 else "") \
        if names else "this store has no swarm yet"
    raise UsageError(f"no swarm named {shown(name)}; {have} (set its pause points with "
                     "`tether swarm NAME --pause-every-steps N` to prepare a new one)")
