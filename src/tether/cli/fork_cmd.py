"""``tether fork``: a new run from a step of another, optionally with edited state."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from tether.cli.args import parse_json
from tether.cli.common import console, handle_errors, operator
from tether.errors import UsageError


@handle_errors
def fork(run: Annotated[str, typer.Argument(help="Run id, name, agent name or id prefix.", metavar="RUN")],
         at: Annotated[int, typer.Option("--at", help="The step to fork from.", metavar="STEP")],
         set_: Annotated[list[str] | None, typer.Option(
             "--set", help="KEY=JSON: change a state key in the child, repeatable.",
             metavar="KEY=JSON")] = None,
         shared_workspace: Annotated[bool, typer.Option(
             "--shared-workspace",
             help="Share the parent's workspace instead of a copy rewound to the step.")]
         = False,
         name: Annotated[str | None, typer.Option(help="Name of the new run.",
                                                  metavar="NAME")] = None,
         plan: Annotated[bool, typer.Option(
             "--plan", help="Show what the child may repeat (the parent's irreversible effects "
                            "after the step) and the policy that gates it; change nothing.")]
         = False,
         as_: Annotated[str | None, typer.Option("--as", help="Act as NAME.",
                                                 metavar="NAME")] = None) -> None:
    """Start a new run from a step of another ("what if it had known X").

    The lineage is recorded. Drive it with `tether worker`."""
    edits: dict[str, Any] = {}
    for item in set_ or []:
        key, sep, raw = item.partition("=")
        if not sep:
            raise UsageError(f"--set {item!r}: expected KEY=JSON, e.g. hint='\"check the logs\"'")
        edits[key] = parse_json(raw, f"--set {key}", "hint='\"check the logs\"' (quote strings)")
    t = operator(as_)
    if plan:
        for line in t.fork_plan(run, at):
            console.print(line, markup=False, highlight=False, soft_wrap=True)
        return
    row = t.fork(run, at, edits=edits, shared_workspace=shared_workspace, name=name)
    console.print(f"forked run {row.parent} at step {at} into {row.name} ({row.id}); "
                  f"workspace {row.spec.get('workspace') or '-'}; drive it with `tether worker`")
