"""Read-only commands: runs, show, events, state, checkpoints."""

from __future__ import annotations

import functools
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from tether.alerts import AlertRow
from tether.cli.alerts_cmd import print_alerts
from tether.cli.common import console, handle_errors, print_jsonl, reader, status, store, when
from tether.core.events import Event
from tether.errors import UsageError
from tether.ops import Tether
from tether.reporting import lines as render
from tether.runinfo import RunInfo, run_info, run_json
from tether.store.records import RUN_STATUSES, EffectRow, RunRow

JsonOpt = Annotated[bool, typer.Option("--json", help="JSON lines instead of a table.")]


@handle_errors
def runs(json: JsonOpt = False,
         state: Annotated[str | None, typer.Option("--status", help="Only runs in this status.",
                                                   metavar="STATUS")] = None,
         swarm: Annotated[str | None, typer.Option(help="Only runs of this swarm.",
                                                   metavar="NAME")] = None) -> None:
    """List runs, newest first."""
    if state is not None and state not in RUN_STATUSES:
        raise UsageError(f"unknown status {state!r}; one of {', '.join(RUN_STATUSES)}")
    s = store(readonly=True)
    rows = s.list_runs(status=state, swarm=swarm)
    if json:
        print_jsonl(run_json(r) for r in rows)
        return
    t = Table(title=f"runs in {s.url}")
    # The id is what people copy into the next command: never cut it. In a narrow terminal
    # the columns one can do without go, rather than every column being cut to nothing.
    t.add_column("id", no_wrap=True, min_width=26)
    wide = console.width >= 110
    cols = ("name", "agent", "swarm", "status", "step", "tokens", "cost $", "updated") if wide \
        else ("name", "status", "step", "cost $")
    for col in cols:
        t.add_column(col, justify="right" if col in ("step", "tokens", "cost $") else "left",
                     no_wrap=col in ("status", "cost $", "updated"))
    for r in rows:
        j = run_json(r)
        cells = {"name": r.name, "agent": r.agent.rsplit(":", 1)[-1], "swarm": r.swarm or "-",
                 "status": status(r.status), "step": str(r.step), "tokens": str(j["tokens"]),
                 "cost $": f"{j['cost_usd']:.4f}", "updated": when(r.updated)[5:]}
        t.add_row(r.id, *(cells[c] for c in cols))
    console.print(t)


@handle_errors
def show(run: Annotated[str, typer.Argument(help="Run id, name, agent name or id prefix.", metavar="RUN")],
         json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False) -> None:
    """Show one run: status, its result or last error, what it waits for, usage, budget,
    effects, monitor alerts."""
    s = store(readonly=True)
    ops = Tether(s)
    row = ops.run(run)
    if json:
        print_jsonl([ops.show(row.id)])
        return
    info = run_info(s, row)
    alerts = sorted(ops.alerts(run=row.id), key=lambda a: a.acked_by is not None)
    effects = s.effects(run=row.id)
    inbox = len(s.messages(recipient=row.id, status="pending"))
    held = len(s.messages(sender=row.id, status="held"))
    j = run_json(row)
    _print_header(row, inbox, held)
    _print_info(row, info)
    console.print(f"usage: {j['tokens']} tokens, ${j['cost_usd']:.4f}, {j['tool_calls']} tool calls")
    if row.budget:
        console.print("budget: " + ", ".join(f"{k}={v:g}" for k, v in row.budget.items()))
    _print_effects(effects)
    _print_alerts(row, alerts)


def _print_alerts(row: RunRow, alerts: list[AlertRow], most: int = 20) -> None:
    """The run's monitor alerts, those nobody acked first."""
    if not alerts:
        return
    print_alerts(alerts[:most], title=f"alerts ({sum(not a.acked_by for a in alerts)} not acked)",
                 run_column=False)
    if len(alerts) > most:
        console.print(f"{len(alerts) - most} more: `tether alerts --run {row.id}`",
                      highlight=False)


def _print_header(row: RunRow, inbox: int, held: int) -> None:
    """Who the run is, where it came from, whether it is contained, why it is as it is."""
    console.print(f"[bold]{row.name}[/bold]  {row.id}  {status(row.status)}")
    console.print(f"agent {row.agent}   swarm {row.swarm or '-'}   epoch {row.epoch}   "
                  f"step {row.step}")
    console.print(f"goal: {row.goal}")
    lineage = row.spec.get("forked_from")
    if lineage:
        console.print(f"forked from run {lineage['run']} at step {lineage['step']} "
                      f"(epoch {lineage['epoch']})" + (f" with {', '.join(lineage['edits'])} "
                                                       "changed" if lineage["edits"] else ""))
    mark = row.spec.get("imported")
    if mark:
        console.print(f"imported (read-only) from {mark.get('source')}, record {mark.get('record')}",
                      markup=False)
    q = row.spec.get("quarantined")
    if q:
        console.print(f"[red]quarantined[/] by {q.get('by')}" + (f": {q['reason']}" if
                      q.get("reason") else "") + f"; {held} outgoing message(s) held, its writes "
                      f"are suspect; `tether quarantine {row.id} --release` lifts it",
                      highlight=False)
    if inbox:
        console.print(f"inbox: {inbox} message(s) waiting", highlight=False)
    if row.reason and row.status != "awaiting_approval":  # _print_info says what it waits for
        console.print(f"reason: {escape(row.reason)}", highlight=False)


def _print_effects(effects: list[EffectRow]) -> None:
    """The run's effects as a table, then how to settle each one in doubt."""
    if effects:
        t = Table(title="effects")
        for col in ("id", "step", "tool", "class", "status"):
            t.add_column(col)
        for e in effects:
            st = f"[red]{e.status}[/]" if e.status == "in_doubt" else e.status
            t.add_row(e.id, str(e.step), e.tool, e.effect, st)
        console.print(t)
    for e in effects:
        if e.status == "in_doubt":
            console.print(f"[yellow]in doubt:[/] {e.id} ({e.tool}); check it, then "
                          f"`tether resolve {e.id} --done|--not-done|--retry`")


def _print_info(row: RunRow, info: RunInfo) -> None:
    """The result, the last error and what the run waits for, in words."""
    say = functools.partial(console.print, highlight=False, soft_wrap=True)
    if info.done:
        say(f"[blue]result[/]: {escape(render.compact(info.result))}")
    e = info.last_error
    if e is not None and not (row.status == "failed" and e["error"] in row.reason):
        style = "red" if row.status in ("failed", "paused") else "dim"
        say(f"[{style}]last error[/] (step {e['step']}, event {e['seq']} {e['kind']}): "
            f"{escape(e['error'])}")
    w = info.waiting_for
    for a in w.get("approvals", []):
        expiry = f"expires {when(a['expires_at'])} ({a['on_expiry']})" if a["expires_at"] \
            else "no expiry"
        say(f"[yellow]waiting for approval[/] {a['id']}: {escape(a['tool'])} at step {a['step']}, "
            f"{expiry}; `tether approve {a['id']}` or `tether deny {a['id']} --reason TEXT`")
    if "wake_at" in w:
        why = f" ({escape(w['deferred'])})" if w.get("deferred") else ""
        say(f"[cyan]sleeping[/] until {when(w['wake_at'])} (run clock){why}")
    if w.get("messages"):
        say("[cyan]waiting for messages[/] " + (f"until {when(w['deadline'])} (run clock)"
                                               if w["deadline"] else "(no deadline)"))


@handle_errors
def events(run: Annotated[str, typer.Argument(help="Run id, name, agent name or id prefix.",
                                              metavar="RUN")],
           json: JsonOpt = False,
           kind: Annotated[str | None, typer.Option(
               help="Only events of this kind, e.g. effect.intent.", metavar="KIND")] = None,
           after: Annotated[int, typer.Option(help="Only events after this seq.",
                                              metavar="SEQ")] = 0,
           limit: Annotated[int | None, typer.Option(help="At most this many events.",
                                                     metavar="N")] = None,
           full: Annotated[bool, typer.Option(
               "--full", help="Every payload whole (indented JSON) under its line.")] = False
           ) -> None:
    """List a run's journal events in order, one line each: seq, time, kind, a summary.

    The summary is cut to the terminal's width; --full prints each payload whole, --json
    every field of every event."""
    from tether.core.events import KINDS
    if kind is not None and kind not in KINDS:
        close = sorted(k for k in KINDS if k.split(".")[0] == kind.split(".")[0]) or sorted(KINDS)
        raise UsageError(f"unknown event kind {kind!r}; for example {', '.join(close[:8])} "
                         "(docs/events.md lists them all)")
    t = reader()
    row = t.run(run)
    evs = t.events(row.id, after=after, kind=kind, limit=limit)
    if json:
        print_jsonl(e.to_json() for e in evs)
        return
    _print_events(f"events of {row.name} ({row.id})", evs, full)


def _print_events(title: str, evs: list[Event], full: bool) -> None:
    width = console.width
    wide = width >= 120  # narrow: seq, time, kind and the summary; wide adds date, step, actor
    say = functools.partial(console.print, markup=False, highlight=False, soft_wrap=True)
    say(title)
    say(render.header(width, wide=wide))
    for e in evs:
        say(render.event_line(e, width, wide=wide))
        if full:
            for line in render.full_payload(e).splitlines():
                say("      " + line)
    if not evs:
        say("(no events)")


@handle_errors
def state(run: Annotated[str, typer.Argument(help="Run id, name, agent name or id prefix.", metavar="RUN")],
          step: Annotated[int | None, typer.Option(help="Step to restore (default: latest).", metavar="STEP")]
          = None,
          diff_from: Annotated[int | None, typer.Option(
              "--diff-from", help="Print what changed since this step instead: one JSON line "
                                  "per key path (path, op, before, after).", metavar="STEP")]
          = None) -> None:
    """Print a run's state (JSON) after a step, restored from its checkpoints."""
    if diff_from is not None:
        print_jsonl(c.to_json() for c in reader().state_diff(run, diff_from, step))
        return
    print_jsonl([reader().state(run, step).state])


@handle_errors
def checkpoints(run: Annotated[str, typer.Argument(help="Run id, name, agent name or id prefix.",
                                                   metavar="RUN")],
                json: JsonOpt = False) -> None:
    """List a run's checkpoints, one line each: epoch, step, kind, bytes, history.

    A checkpoint is the run's state after a step (0: the start state): a keyframe (key)
    or a delta against the step before. Those a rollback abandoned are kept, marked
    "abandoned"; `tether state RUN --step N` restores a step of the current history."""
    t = reader()
    row = t.run(run)
    cks = t.checkpoints(row.id)
    if json:
        print_jsonl({"run": row.id, **c.to_json()} for c in cks)
        return
    say = functools.partial(console.print, markup=False, highlight=False, soft_wrap=True)
    current = sum(1 for c in cks if c.current)
    say(f"checkpoints of {row.name} ({row.id}): {current} in its current history (epoch "
        f"{row.epoch}, step {row.step})" + (f", {len(cks) - current} abandoned by rollbacks"
                                          if len(cks) > current else ""))
    say(f"{'epoch':>5}  {'step':>6}  {'kind':<5}  {'bytes':>9}  history")
    for c in cks:
        say(f"{c.epoch:>5}  {c.step:>6}  {c.kind:<5}  {c.size:>9}  "
            + ("current" if c.current else "abandoned"))
    if not cks:
        say("(no checkpoints)")
