"""Monitor alerts from the shell: ``tether alerts`` lists them, ``tether alerts ack`` records
who looked."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from tether.alerts import AlertRow
from tether.cli.common import AsOpt, console, handle_errors, operator, print_jsonl, reader
from tether.errors import UsageError
from tether.reporting import lines as render
from tether.system_clock import SYSTEM_CLOCK

alerts_app = typer.Typer(invoke_without_command=True, no_args_is_help=False,
                         help="List monitor alerts (oldest first, the newest at the bottom); "
                              "`tether alerts ack ID` records who looked.")

_SPAN = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: float) -> float:
    """``--since``: a span back from now (``90s``, ``30m``, ``2h``, ``1d``) or an ISO-8601
    time (UTC unless it says otherwise); seconds since the epoch."""
    m = _SPAN.fullmatch(text.strip())
    if m:
        return now - float(m.group(1)) * _UNIT[m.group(2)]
    try:
        t = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--since {text!r} is neither a span (30m, 2h, 1d) nor an ISO-8601 "
                         "time (2026-12-04T22:00)") from None
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp()


@alerts_app.callback()
@handle_errors
def alerts(ctx: typer.Context,
           since: Annotated[str | None, typer.Option(
               help="Only alerts journaled since TIME: a span back from now (30m, 2h, 1d) or "
                    "an ISO-8601 time.", metavar="TIME")] = None,
           run: Annotated[str | None, typer.Option(help="Only this run's.", metavar="RUN")] = None,
           unacked: Annotated[bool, typer.Option("--unacked", help="Only those nobody acked.")
                              ] = False,
           json: Annotated[bool, typer.Option("--json", help="JSON lines.")] = False) -> None:
    """List monitor alerts, oldest first (the newest at the bottom): run, agent, step,
    monitor, rule, verdict, message, evidence, who acked it."""
    if ctx.invoked_subcommand is not None:
        return
    t = None if since is None else parse_since(since, SYSTEM_CLOCK.now())
    rows = reader().alerts(run=run, since=t, unacked=unacked)
    if json:
        print_jsonl(a.to_json() for a in rows)
        return
    if not rows:
        console.print("no alerts" + (" nobody acked" if unacked else ""))
        return
    print_alerts(rows, title="alerts")
    console.print("ack with `tether alerts ack ID [--note TEXT]`; the evidence with "
                  "`tether events RUN`")


def print_alerts(rows: list[AlertRow], *, title: str, run_column: bool = True) -> None:
    """Alerts as a table, as wide as the terminal allows (the id is never cut)."""
    t = Table(title=title)
    t.add_column("id", no_wrap=True, min_width=26)
    wide = console.width >= 150
    # Narrow: one line per alert; the run as RUN@STEP, the rule leads the message (cut to
    # the room left: --json and a wide terminal have it whole), an acked alert has a ✓.
    cols = ["run", "agent", "step", "monitor", "rule", "verdict", "message", "evidence",
            "acked by"] if wide else ["run", "verdict", "message"]
    if not run_column:
        cols = [c for c in cols if c not in ("run", "agent")]
    for col in cols:
        t.add_column(col, no_wrap=col in ("step", "verdict", "evidence"), overflow="fold",
                     justify="right" if col == "step" else "left")
    table = [_cells(a, wide) for a in rows]
    room = render.room(console.width, table, ("id", *cols), "message")
    for a, r in zip(rows, table, strict=True):
        r["message"] = escape(r["message"] if wide else render.cut(r["message"], room))
        r["verdict"] = _verdict(a.verdict) + ("" if wide or not a.acked_by else " ✓")
        t.add_row(*(r[c] for c in ("id", *cols)))
    console.print(t)


def _cells(a: AlertRow, wide: bool) -> dict[str, str]:
    message = a.message if wide else f"{a.rule}: {a.message}"
    return {"id": a.id, "run": a.name if wide else f"{a.name}@{a.step}", "agent": a.agent,
            "step": str(a.step),
            "monitor": a.monitor, "rule": a.rule, "verdict": a.verdict + ("" if wide else "  "),
            "message": message + (f" [origin: run {a.origin}]" if a.origin else ""),
            "evidence": "\n".join(a.evidence) or "-", "acked by": escape(a.acked_by or "-")}


def _verdict(v: str) -> str:
    style = {"alert": "yellow", "block": "yellow", "pause": "red", "quarantine": "red",
             "stop": "magenta"}.get(v, "white")
    return f"[{style}]{v}[/]"


@alerts_app.command()
@handle_errors
def ack(alert: Annotated[str, typer.Argument(help="Alert id (the `alert` event's id).",
                                             metavar="ALERT")],
        note: Annotated[str | None, typer.Option(help="What you found, for the record.",
                                                 metavar="TEXT")] = None,
        as_: AsOpt = None) -> None:
    """Record that you looked at an alert (journaled in the alerted run's chain); an alert is
    acked once."""
    res = operator(as_).ack_alert(alert, note=note)
    if res.applied:
        console.print(f"acked {alert} (run {res.run})", highlight=False)
    else:
        console.print(f"ack of {alert} queued: run {res.run}'s worker records it at its next "
                      "safe point", highlight=False)
