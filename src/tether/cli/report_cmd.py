"""``tether report`` (what happened overnight) and ``tether audit query`` (the journal's
events an operator asks for), both over a time window on the runs' own clocks."""

from __future__ import annotations

import datetime as dt
import functools
from pathlib import Path
from typing import Annotated

import typer

from tether.cli.common import console, handle_errors, print_jsonl, reader
from tether.errors import UsageError
from tether.ops import Tether
from tether.reporting import lines as event_render
from tether.reporting.query import Query, describe, zone
from tether.reporting.query import window as query_window
from tether.reporting.render import FORMATS, render

SinceOpt = Annotated[str | None, typer.Option(
    help="Start of the window: an ISO-8601 date and time (in --tz) or a span back from the "
         "newest event (8h, 90m, 2d).", metavar="TIME")]
UntilOpt = Annotated[str | None, typer.Option(
    help="End of the window (excluded), same forms as --since; default: after the newest "
         "event.", metavar="TIME")]
TzOpt = Annotated[str | None, typer.Option(
    "--tz", help="Time zone for times given and shown (IANA name, e.g. Europe/Paris; "
                 "default UTC).", metavar="ZONE")]


def window(t: Tether, since: str | None, until: str | None, tz: dt.tzinfo
           ) -> tuple[float | None, float | None]:
    """The window's bounds; spans count back from the newest event (the runs' clocks)."""
    return query_window(t.store, since, until, tz)


@handle_errors
def report(since: SinceOpt = "24h", until: UntilOpt = None, tz: TzOpt = None,
           format_: Annotated[str, typer.Option(
               "--format", help="text (the terminal), md (Markdown) or html (one "
                                "self-contained file with a timeline picture).",
               metavar="FORMAT")] = "text",
           out: Annotated[Path | None, typer.Option(
               help="Write the report to FILE instead of printing it.", metavar="FILE")
           ] = None) -> None:
    """What happened overnight: what waits for a human first, then per swarm and agent the
    decisions, effects done and undone, approvals and who decided them, alerts and what
    followed, spending against caps, rollbacks and quarantines.

    The window is on the runs' own clocks (the journal's times); by default the 24 hours
    up to the newest event."""
    if format_ not in FORMATS:
        raise UsageError(f"--format {format_!r}: choose one of {', '.join(FORMATS)}")
    zone_ = zone(tz)
    t = reader()
    lo, hi = window(t, since, until, zone_)
    text = render(t.night(lo, hi), format_, zone_)
    if out is None:
        typer.echo(text, nl=False)
        return
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot write it ({exc.strerror}); choose a path in "
                         "a folder you can write") from None
    console.print(f"wrote the report ({format_}) to {out}")


@handle_errors
def query(since: SinceOpt = None, until: UntilOpt = None, tz: TzOpt = None,
          run: Annotated[list[str] | None, typer.Option(
              help="Only this run's events (id, name or prefix); repeatable.",
              metavar="RUN")] = None,
          agent: Annotated[str | None, typer.Option(
              help="Only runs of this agent (its name or module:attr).", metavar="AGENT")
          ] = None,
          swarm: Annotated[str | None, typer.Option(help="Only runs of this swarm.",
                                                    metavar="SWARM")] = None,
          kind: Annotated[list[str] | None, typer.Option(
              help="Only events of this kind (e.g. policy.decided); repeatable.",
              metavar="KIND")] = None,
          tool: Annotated[str | None, typer.Option(help="Only events about this tool.",
                                                   metavar="TOOL")] = None,
          effect: Annotated[str | None, typer.Option(
              help="Only events about effects of this class (read, reversible, compensable, "
                   "irreversible).", metavar="CLASS")] = None,
          actor: Annotated[str | None, typer.Option(
              help="Only events by this actor (human:ada, ada, or a prefix such as human:).",
              metavar="ACTOR")] = None,
          alert: Annotated[str | None, typer.Option(
              help="An alert's id (the alert, its evidence and what it caused) or a "
                   "monitor's name (its alerts).", metavar="ID|MONITOR")] = None,
          limit: Annotated[int | None, typer.Option(help="At most N events.", metavar="N",
                                                    min=1)] = None,
          json: Annotated[bool, typer.Option("--json", help="JSON lines: every field of "
                                             "every event, with its run's name.")] = False
          ) -> None:
    # long: typer reads the options from the signature (34 lines of it); the body is short
    """The journal's events in a time window (the runs' own clocks), narrowed by run,
    agent, swarm, kind, tool, effect class, actor or alert; oldest first.

    For example: what was decided between 01:00 and 04:00 and who allowed it:
    `tether audit query --since 2026-12-04T01:00 --until 2026-12-04T04:00 --kind
    policy.decided --kind approval.decided`."""
    zone_ = zone(tz)
    t = reader()
    lo, hi = window(t, since, until, zone_)
    q = Query(since=lo, until=hi, runs=tuple(run or ()), agent=agent, swarm=swarm,
              kinds=tuple(kind or ()), tool=tool, effect=effect, actor=actor, alert=alert,
              limit=limit)
    evs = t.query(q)
    names = functools.cache(lambda rid: (t.store.get_run(rid) or _Nameless(rid)).name)
    if json:
        print_jsonl({**e.to_json(), "run_name": names(e.run)} for e in evs)
        return
    say = functools.partial(console.print, markup=False, highlight=False, soft_wrap=True)
    say(f"events {describe(q, zone_)}: {len(evs)}")
    for e in evs:
        when = dt.datetime.fromisoformat(e.time.replace("Z", "+00:00")).astimezone(zone_)
        head = f"{when:%Y-%m-%d %H:%M:%S}  {names(e.run)}@{e.step}  {e.kind}  {e.actor}  "
        say(head + event_render.cut(event_render.summary(e), max(console.width - len(head), 40)))


class _Nameless:
    def __init__(self, rid: str) -> None:
        self.name = rid
