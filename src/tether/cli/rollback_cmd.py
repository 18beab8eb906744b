"""``tether rollback`` and ``tether quarantine``: undo a run's work, or contain it first."""

from __future__ import annotations

from typing import Annotated

import orjson
import typer

from tether.cli.common import console, handle_errors, operator
from tether.provenance.cascade import CascadePlan
from tether.provenance.plan import RollbackPlan
from tether.store.records import RunRow


@handle_errors
def rollback(run: Annotated[str, typer.Argument(help="Run id, name, agent name or id prefix.",
                                                metavar="RUN")],
             to: Annotated[int, typer.Option("--to", help="The step to go back to.", metavar="STEP")],
             plan: Annotated[bool, typer.Option(
                 "--plan", help="Print what would be undone, retracted, reverted, left and "
                                "restored; change nothing.")] = False,
             cascade: Annotated[bool, typer.Option(
                 "--cascade", help="Also roll back every run the steps after --to reached "
                                   "(messages, blackboard, files), each to just before its "
                                   "first affected step.")] = False,
             accept_irreversible: Annotated[bool, typer.Option(
                 "--accept-irreversible",
                 help="Go past irreversible or in-doubt effects after the step (they stay).")]
             = False,
             force: Annotated[bool, typer.Option(
                 "--force", help="Undo even where a file changed since the effect (overwrites it).")]
             = False,
             json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")]
             = False,
             as_: Annotated[str | None, typer.Option("--as", help="Act as NAME.",
                                                     metavar="NAME")] = None) -> None:
    """Roll a run (--cascade: and everything it reached) back to a step.

    Undoes its reversible effects after the step, newest first, puts the messages it
    received back in its inbox, retracts its undelivered ones, reverts its blackboard
    writes and restores that step's state in a new epoch (history is kept). Run it again
    to finish an interrupted rollback."""
    # long: typer reads the options from the signature (21 lines of it); the body is short
    t = operator(as_)
    if cascade:
        cp = t.cascade_plan(run, to) if plan else t.cascade(
            run, to, accept_irreversible=accept_irreversible, force=force)
        if json:
            print(orjson.dumps({"done": not plan, **cp.to_json()}).decode())
        elif plan or cp.idle:
            _print_lines(cp.lines())
        else:
            _cascaded(cp)
        return
    p = t.rollback_plan(run, to) if plan else t.rollback(
        run, to, accept_irreversible=accept_irreversible, force=force)
    if json:
        print(orjson.dumps({"done": not plan, **p.to_json()}).decode())
    elif plan:
        _print_lines(p.lines())
    else:
        _rolled_back(t.run(p.run.id), p, to)


def _print_lines(lines: list[str]) -> None:
    for line in lines:
        console.print(line, highlight=False)


def _cascaded(cp: CascadePlan) -> None:
    """What a cascade rollback did, and how to go on."""
    runs = [p for p in cp.plans if not p.idle]
    console.print(f"cascade rollback done: {len(runs)} run(s) rolled back, "
                  f"{sum(len(p.undo) for p in runs)} effects undone, "
                  f"{sum(len(p.retract) for p in runs)} messages retracted, "
                  f"{sum(len(p.revert) for p in runs)} blackboard writes reverted, "
                  f"{sum(len(p.left) for p in runs)} effects left"
                  + (f", {len(cp.blocked)} run(s) blocked (left as they are)"
                     if cp.blocked else "") + ".", highlight=False)
    for p in runs:
        console.print(f"  {p.run.name} ({p.run.id}): back to step {p.to_step}, paused",
                      highlight=False)
    console.print(f"`tether resume {' '.join(p.run.name for p in runs)}` goes on from there.",
                  highlight=False)


def _rolled_back(row: RunRow, p: RollbackPlan, to: int) -> None:
    """What a rollback of one run did, and what it left in other runs."""
    extra = ""
    if p.affects:
        extra = (f" {len({a.run for a in p.affects})} other run(s) took in work of the steps "
                 f"undone and were left as they are: see `tether impact {row.id}@{to + 1} "
                 f"--epoch {p.run.epoch}`, or roll back with --cascade.")
    console.print(f"rolled back run {row.id} to step {to}: {len(p.undo)} effects undone, "
                  f"{len(p.retract)} messages retracted, {len(p.revert)} blackboard writes "
                  f"reverted, {len(p.left)} effects left; now epoch {row.epoch}, "
                  f"{row.status}. `tether resume {row.id}` goes on from step {to}.{extra}",
                  highlight=False)


@handle_errors
def quarantine(run: Annotated[str, typer.Argument(help="Run id, name, agent name or id prefix.",
                                                  metavar="RUN")],
               release: Annotated[bool, typer.Option(
                   "--release", help="Lift the quarantine: deliver held messages, clear the "
                                     "suspect marks.")] = False,
               reason: Annotated[str, typer.Option(help="Why (journaled).", metavar="TEXT")] = "",
               json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
               = False,
               as_: Annotated[str | None, typer.Option("--as", help="Act as NAME.", metavar="NAME")] = None
               ) -> None:
    """Contain a run: pause it, hold its messages, mark its writes suspect.

    Its undelivered messages are held, and its blackboard and file versions are marked
    suspect (blackboard readers are told). Journaled; --release lifts it."""
    t = operator(as_)
    r = t.release(run) if release else t.quarantine(run, reason=reason)
    if json:
        print(orjson.dumps(r.to_json()).decode())
        return
    if release:
        console.print(f"released run {r.run}: {len(r.held)} held message(s) back in their "
                      "recipients' inboxes, "
                      f"{len(r.suspect)} write(s) no longer suspect", highlight=False)
    else:
        row = t.run(r.run)
        console.print(f"quarantined run {r.run} ({row.status}): {len(r.held)} message(s) held, "
                      f"{len(r.suspect)} write(s) marked suspect; `tether impact {r.run}@1` "
                      "shows what it reached", highlight=False)
