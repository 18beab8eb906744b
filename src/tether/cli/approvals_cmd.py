"""Approvals from the shell: list, approve, deny."""

from __future__ import annotations

import json as jsonlib
from typing import Annotated

import typer
from rich.table import Table

from tether import approvals as ap
from tether import ops
from tether.cli.args import parse_json
from tether.cli.common import console, handle_errors, print_jsonl, store, when
from tether.errors import UsageError

AsOpt = Annotated[str | None, typer.Option("--as", help="Decide as NAME (default $TETHER_USER or "
                                                        "the OS user).")]


@handle_errors
def approvals(json: Annotated[bool, typer.Option("--json", help="JSON lines.")] = False,
              every: Annotated[bool, typer.Option("--all", help="Decided ones too.")] = False,
              run: Annotated[str | None, typer.Option(help="Only this run's.")] = None) -> None:
    """List approval requests (pending ones unless --all); expired ones are settled first."""
    # Settling expired requests writes: done when the store can be written, and left to the
    # workers (which settle them too) when it is read-only, e.g. a backup.
    s = store(readonly=None)
    if not getattr(s, "readonly", False):
        ap.expire_due(s)
    run_id = ops.find_run(s, run).id if run else None
    rows = s.approvals(run=run_id, status=None if every else "pending")
    if json:
        print_jsonl(ap.approval_json(a) for a in rows)
        return
    if not rows:
        console.print("no pending approvals" if not every else "no approvals")
        return
    t = Table(title="approvals")
    t.add_column("id", no_wrap=True, min_width=26)
    for col in ("run", "step", "tool", "arguments", "status", "rule", "requested", "expires"):
        t.add_column(col, overflow="fold")
    for a in rows:
        args = jsonlib.dumps(a.arguments)
        shown = args if len(args) < 60 else args[:57] + "..."
        t.add_row(a.id, a.run[-6:], str(a.step), a.tool, shown,
                  a.status, a.rule or "(default)", when(a.requested_at), when(a.expires_at))
    console.print(t)
    console.print("approve with `tether approve ID`, deny with `tether deny ID --reason TEXT`")


@handle_errors
def approve(approval: Annotated[str, typer.Argument(help="Approval id.")],
            note: Annotated[str | None, typer.Option(help="Why, for the record.")] = None,
            args: Annotated[str | None, typer.Option(
                "--args", help="Run with these arguments instead (JSON object), checked "
                               "against the tool's schema first.")] = None,
            always: Annotated[bool, typer.Option(
                "--always", help="Always allow this tool for this run from now on.")] = False,
            as_: AsOpt = None) -> None:
    """Approve a proposed action; the run goes on and runs it (at most once)."""
    edited = None
    if args is not None:
        edited = parse_json(args, "--args", "'{\"to\": \"a@example.com\"}'")
        if not isinstance(edited, dict):
            raise UsageError("--args must be a JSON object of the tool's arguments")
    row = ap.decide(store(), approval, approve=True, who=ops.actor(as_), note=note,
                    arguments=edited, always=always)
    console.print(f"approved {row.id}: run {row.run} will run {row.tool}"
                  + (" with the edited arguments" if edited is not None else "")
                  + (" (always allowed for this run from now on)" if always else ""))


@handle_errors
def deny(approval: Annotated[str, typer.Argument(help="Approval id.")],
         reason: Annotated[str, typer.Option(help="Why; the agent's model is told.")] = "",
         as_: AsOpt = None) -> None:
    """Deny a proposed action; the model is told why and the run goes on."""
    row = ap.decide(store(), approval, approve=False, who=ops.actor(as_), note=reason)
    console.print(f"denied {row.id}: run {row.run} goes on without {row.tool}")
