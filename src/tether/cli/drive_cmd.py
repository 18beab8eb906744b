"""Commands that drive runs: ``tether run`` (start one and drive it here) and ``tether
worker`` (drive every runnable run of the store)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from tether.cli import model_opts
from tether.cli.common import (
    AsOpt,
    claimed_actor,
    console,
    handle_errors,
    make_folder,
    parse_assignments,
    store,
)
from tether.core.policy import Policy, load_policy
from tether.core.pricing import PriceTable
from tether.core.redaction import DEFAULT as BUILTIN_REDACTION
from tether.errors import StoreError, UsageError
from tether.ops import Tether
from tether.policies import apply_policy, in_force
from tether.runtime.agent import AgentLike
from tether.runtime.changes import WorkerStats
from tether.runtime.committer import OnCommit
from tether.runtime.operator import actor
from tether.runtime.runs import load_agent, start_redactor, start_run, validate_run
from tether.runtime.storage_health import GIVE_UP_AFTER
from tether.runtime.worker import Worker
from tether.sealing import SealSchedule, load_signer
from tether.store.protocol import Store

PolicyOpt = Annotated[Path | None, typer.Option(
    help="Policy file (TOML), applied to the store (journaled) before the run starts; default "
         "tether.toml beside a SQLite store when it exists (a PostgreSQL store has none).",
    metavar="FILE")]
WorkerPolicyOpt = Annotated[Path | None, typer.Option(
    help="Policy file (TOML) this worker must run under: refused unless it is the store's "
         "policy in force (or --apply).", metavar="FILE")]


def _apply_beside(s: Store, given: Path | None, who: str) -> None:
    """Apply ``--policy FILE``, else a tether.toml beside the store, through the journaled
    apply (checked first: a broken file stops here, before any run exists)."""
    path = given
    file = getattr(s, "path", None)
    if path is None and file is not None:
        # A store in a database (PostgreSQL) has no folder: no file is "beside" it, and the
        # folder the command runs in must not stand in for one; only --policy FILE.
        folder = Path(file).parent
        path = folder / "tether.toml" if (folder / "tether.toml").exists() else None
    if path is None:
        return
    event = apply_policy(s, load_policy(path), who=who)
    if event is not None:
        console.print(f"applied {path} to the store: {in_force(s).describe()}",
                      highlight=False, soft_wrap=True)


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
        pause_on_alert: Annotated[bool, typer.Option(
            "--pause-on-alert",
            help="Pause point: pause at any monitor alert (off by default: monitors "
                 "escalate by their own stages).")] = False,
        as_: AsOpt = None,
        model_timeout: model_opts.TimeoutOpt = None,
        model_retries: model_opts.RetriesOpt = None,
        prices: model_opts.PricesOpt = None) -> None:
    """Start a run of an agent and drive it here until it sleeps, pauses or ends.

    Everything is checked first (the agent, the policy, the budget, the state): on an
    error no run is written (at most an empty store file is created). A budget capping
    cost (cost_usd, cost_usd_per_day...) is refused when the agent's model has no price
    (built in, or in --prices FILE)."""
    # long: typer reads the options from the signature (26 lines of it); the body is short
    table = model_opts.apply(model_timeout, model_retries, prices)
    a = load_agent(agent)
    caps = parse_assignments(budget or [], "--budget")
    points = {k: v for k, v in (("every_steps", pause_every_steps),
                                ("every_minutes", pause_every_minutes),
                                ("before_irreversible", pause_before_irreversible),
                                ("on_alert", pause_on_alert)) if v} or None
    init = validate_run(a, goal=goal, budget=caps, pause_points=points, prices=table)
    if workspace is not None:
        make_folder(workspace, "--workspace", create=False)  # start_run creates it
    claimed = claimed_actor(as_)  # a refused name leaves no store behind
    s = store(create=True)
    who = claimed or actor(None, s)
    _apply_beside(s, policy, who)
    red = start_redactor(s, swarm)
    # The state was made from the goal as the built-in patterns redact it; a policy pattern
    # that also matches the goal means making it again from the goal the run will have.
    same = red.redact(goal) == BUILTIN_REDACTION.redact(goal)
    rid = start_run(s, a, agent_ref=agent, goal=goal, name=name, swarm=swarm, budget=caps,
                    workspace=workspace, actor=who, pause_points=points, prices=table,
                    state=init if same else None, redactor=red)
    console.print(f"started run {rid}")
    if not detach:
        _drive_one(s, rid, agent, a, swarm, table)


def _drive_one(s: Store, rid: str, ref: str, agent: AgentLike, swarm: str | None,
               table: PriceTable | None) -> None:
    """Drive the new run here until it rests; exit 1 if it failed (scripts can tell; the
    run stays in the store, resumable)."""
    w = Worker(s, agents={ref: agent}, only={rid}, prices=table)
    gate = w.policies.for_swarm(swarm)
    console.print(f"runs under the {gate.describe()}", highlight=False, soft_wrap=True)
    asyncio.run(w.run(until_idle=True, handle_signals=True))
    row = Tether(s).run(rid)
    console.print(f"run {rid} is {row.status} after step {row.step}"
                  + (f": {row.reason}" if row.reason else ""), highlight=False)
    if row.status == "failed":
        raise typer.Exit(1)


@handle_errors
def worker(until_idle: Annotated[bool, typer.Option(
               "--until-idle", help="Exit when no run is runnable or held by another live "
                                    "worker (workers started together end together).")] = False,
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
           prices: model_opts.PricesOpt = None,
           seal_key: Annotated[Path | None, typer.Option(
               "--seal-key", metavar="KEYFILE",
               help="Seal the store with this key (PREFIX.key of tether audit keygen): a signed checkpoint "
                    "every --seal-every events or --seal-seconds, and as the worker stops.")]
           = None,
           seal_every: Annotated[int, typer.Option(
               "--seal-every", metavar="N", help="With --seal-key: seal after N new events.")]
           = 10_000,
           seal_seconds: Annotated[float, typer.Option(
               "--seal-seconds", metavar="SECONDS",
               help="With --seal-key: seal when there are new events this long after the "
                    "last seal.")] = 300.0,
           otel: Annotated[bool | None, typer.Option(
               "--otel/--no-otel", help="Send spans of what is committed over OTLP/HTTP "
               "(default: on when $OTEL_EXPORTER_OTLP_ENDPOINT or "
               "$OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set); extra tether[otel].")] = None,
           metrics_port: Annotated[int | None, typer.Option(
               help="Serve Prometheus metrics on 127.0.0.1:PORT/metrics; extra "
                    "tether[metrics].", metavar="PORT")] = None) -> None:
    """Drive every runnable run until interrupted (SIGTERM/SIGINT drain cleanly).

    Logs one line per change of a run's state (taken; left sleeping, waiting, awaiting
    approval, paused, stopped, failed with the reason, or done, with the steps and effects
    it made) and, at exit, how many runs, steps and effects, by final status.

    With TETHER_WEBHOOK_URL and TETHER_WEBHOOK_SECRET set, operators' notifications
    (approval requested or expiring, run paused or stopped, budget exceeded) are POSTed
    there, signed with HMAC-SHA256.
    """
    # long: typer reads the options from the signature (25 lines of it); the body is short
    _check_worker_options(policy, apply, quiet, json, until_idle, give_up_after)
    sealing = _seal_schedule(seal_key, seal_every, seal_seconds)
    table = model_opts.apply(model_timeout, model_retries, prices)
    wanted = load_policy(policy) if policy is not None else None
    claimed = claimed_actor(as_) if wanted is not None and apply else None
    s = store(create=True)
    if wanted is not None and apply:
        apply_policy(s, wanted, who=claimed or actor(None, s))
    from tether.cli.telemetry_cmd import worker_sink
    sink, server = worker_sink(s, otel, metrics_port)
    try:
        _drive_all(s, wanted, table, until_idle=until_idle, quiet=quiet, json=json,
                   concurrency=concurrency, lease_ttl=lease_ttl, pipeline=pipeline,
                   give_up_after=GIVE_UP_AFTER if give_up_after is None else give_up_after,
                   seal=sealing, on_commit=sink)
    finally:
        if sink is not None:
            sink.close()  # what the last commits made is sent before the worker exits
        if server is not None:
            server.shutdown()
            server.server_close()


def _seal_schedule(key: Path | None, every: int, seconds: float) -> SealSchedule | None:
    """The worker's sealing schedule, the key read now (a bad key fails before any run)."""
    if key is None:
        return None
    return SealSchedule(load_signer(key), events=every, seconds=seconds)


def _check_worker_options(policy: Path | None, apply: bool, quiet: bool, json: bool,
                          until_idle: bool, give_up_after: float | None) -> None:
    if apply and policy is None:
        raise UsageError("--apply goes with --policy FILE")
    if quiet and json:
        raise UsageError("--quiet and --json do not go together; --json logs every change")
    if give_up_after is not None and not until_idle:
        # A long-lived worker never gives up on the store: it backs off and goes on once
        # storage works again. Ignoring the option would let an operator think it exits.
        raise UsageError("--give-up-after goes with --until-idle; a worker without it never "
                         "gives up on a failing store, it backs off and retries")


def _drive_all(s: Store, wanted: Policy | None, table: PriceTable | None, *, until_idle: bool,
               quiet: bool, json: bool, concurrency: int, lease_ttl: float, pipeline: int,
               give_up_after: float, seal: SealSchedule | None = None,
               on_commit: OnCommit | None = None) -> None:
    """Run a worker on the store, logging each change of a run and a summary at the end."""
    from tether.cli.worker_log import WorkerLog
    from tether.notify import WebhookConfig
    out = WorkerLog(quiet=quiet, json=json)
    w = Worker(s, concurrency=concurrency, lease_ttl=lease_ttl, policy=wanted,
               webhook=WebhookConfig.from_env(), pipeline=pipeline,
               give_up_after=give_up_after, on_change=out.change, prices=table, seal=seal,
               on_commit=on_commit)
    out.start(w.owner, s.url, [x.describe() for x in
                               w.policies.scopes() or [w.policies.for_swarm(None)]])
    try:
        out.summary(asyncio.run(w.run(until_idle=until_idle, handle_signals=True)))
    except StoreError:
        # Gave up on a failing store: what it did before still counts; the error line follows.
        out.summary(WorkerStats(w.runs_driven, dict(w.finished), w.drives.steps,
                                w.drives.effects, dict(w.drives.final)), failed=True)
        raise
