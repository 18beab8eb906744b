"""Approvals from the shell: list, approve, deny."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from tether import approvals as ap
from tether.cli.args import parse_json_object
from tether.cli.common import console, handle_errors, operator, print_jsonl, run_namer, store, when
from tether.ops import Tether
from tether.reporting import lines as render
from tether.store.protocol import Store
from tether.store.records import ApprovalRow

CLOCKS = {"requested": "requested (run clock)", "expires": "expires (wall clock)"}
"""The time columns' headers, naming their clocks: a request is asked at its
``approval.requested`` event's time, the run's clock; it expires in people's time."""

AsOpt = Annotated[str | None, typer.Option("--as", help="Decide as NAME (default $TETHER_USER or "
                                                        "the OS user).", metavar="NAME")]


@handle_errors
def approvals(json: Annotated[bool, typer.Option("--json", help="JSON lines.")] = False,
              every: Annotated[bool, typer.Option("--all", help="Decided ones too.")] = False,
              run: Annotated[str | None, typer.Option(help="Only this run's.",
                                                      metavar="RUN")] = None) -> None:
    """List approval requests (pending ones unless --all); expired ones are settled first."""
    # Settling expired requests writes: done when the store can be written, and left to the
    # workers (which settle them too) when it is read-only, e.g. a backup.
    ops = Tether(store(readonly=None))
    rows = ops.approvals(run=run, pending=not every)
    if json:
        print_jsonl(ap.approval_view(ops.store, a) for a in rows)
        return
    if not rows:
        console.print("no pending approvals" if not every else "no approvals")
        return
    _print_approvals(ops.store, rows, every)
    console.print("approve with `tether approve ID`, deny with `tether deny ID --reason TEXT`")


def _print_approvals(s: Store, rows: list[ApprovalRow], every: bool) -> None:
    """The requests as a table, as wide as the terminal allows. When a request was asked
    is on its run's clock (the journal's time, as the night report and the dashboard show
    it); when it expires, on the wall clock (people's time), each header saying which."""
    t = Table(title="approvals")
    # The id is what people copy into `tether approve`: never cut it. In a narrow terminal
    # the columns one can do without go, rather than every column being cut to nothing.
    t.add_column("id", no_wrap=True, min_width=26)
    wide = console.width >= 150
    cols = ["run", "step", "tool", "arguments", "status", "rule", "requested", "expires"] \
        if wide else ["run", "tool", "arguments", "expires"]
    if not wide and every:
        cols[-1] = "status"  # decided requests expire no more: their outcome matters
    for col in cols:
        # Narrow, the expiry is the only time shown and its clock's name would take the
        # arguments' room: `--json`, a wide terminal and the dashboard say which clock.
        t.add_column(CLOCKS.get(col, col) if wide else col, overflow="fold",
                     no_wrap=col in ("status", "requested", "expires"))
    name = run_namer(s)
    asked = ap.asked_times(s, [a.id for a in rows])
    table: list[dict[str, str]] = []
    for a in rows:
        table.append({"id": a.id, "run": name(a.run), "step": str(a.step), "tool": a.tool,
                      "arguments": render.arguments(a.arguments), "status": a.status,
                      "rule": a.rule or "(default)",
                      "requested": _short(render.journal_at(asked[a.id])),
                      "expires": _short(when(a.expires_at)) if a.expires_at else "never"})
    # Narrow: one line per request, the arguments cut to the room left (`--json` has them
    # whole); rich would otherwise fold every column to a letter a line.
    room = render.room(console.width, table, ("id", *cols), "arguments")
    for r in table:
        args = r["arguments"] if wide else render.cut(r["arguments"], room)
        t.add_row(*(escape(args if c == "arguments" else r[c]) for c in ("id", *cols)))
    console.print(t)


def _short(time_text: str) -> str:
    # A listing's times without the year (a request is days old at most); "-" as it is.
    return time_text[5:] if time_text[:4].isdigit() else time_text


@handle_errors
def approve(approval: Annotated[str, typer.Argument(help="Approval id.", metavar="APPROVAL")],
            note: Annotated[str | None, typer.Option(help="Why, for the record.", metavar="TEXT")] = None,
            args: Annotated[str | None, typer.Option(
                "--args", help="Run with these arguments instead (JSON object), checked "
                               "against the tool's schema first.", metavar="JSON")] = None,
            always: Annotated[bool, typer.Option(
                "--always", help="Always allow this tool for this run from now on.")] = False,
            as_: AsOpt = None) -> None:
    """Approve a proposed action; the run goes on and runs it (at most once)."""
    edited = None
    if args is not None:
        edited = parse_json_object(args, "--args", "'{\"to\": \"a@example.com\"}'")
    row = operator(as_).approve(approval, note=note, arguments=edited, always=always)
    console.print(f"approved {row.id}: run {row.run} will run {row.tool}"
                  + (" with the edited arguments" if edited is not None else "")
                  + (" (always allowed for this run from now on)" if always else ""))


@handle_errors
def deny(approval: Annotated[str, typer.Argument(help="Approval id.", metavar="APPROVAL")],
         reason: Annotated[str, typer.Option(help="Why; the agent's model is told.", metavar="TEXT")] = "",
         as_: AsOpt = None) -> None:
    """Deny a proposed action; the model is told why and the run goes on."""
    row = operator(as_).deny(approval, reason)
    console.print(f"denied {row.id}: run {row.run} goes on without {row.tool}")
