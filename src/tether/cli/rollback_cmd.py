"""``tether rollback``: undo a run's effects after a step and restore its state there."""

from __future__ import annotations

from typing import Annotated

import typer

from tether import ops
from tether.cli.common import console, handle_errors, store
from tether.provenance import rollback as rb


@handle_errors
def rollback(run: Annotated[str, typer.Argument(help="Run id, name or id prefix.")],
             to: Annotated[int, typer.Option("--to", help="The step to go back to.")],
             plan: Annotated[bool, typer.Option(
                 "--plan", help="Print what would be undone, left and restored; change nothing."
             )] = False,
             accept_irreversible: Annotated[bool, typer.Option(
                 help="Go past irreversible or in-doubt effects after the step (they stay).")]
             = False,
             force: Annotated[bool, typer.Option(
                 help="Undo even where a file changed since the effect (overwrites it).")]
             = False,
             as_: Annotated[str | None, typer.Option("--as", help="Act as NAME.")] = None) -> None:
    """Roll a run back to a step: undo its reversible effects after it, newest first, and
    restore that step's state in a new epoch (history is kept). Run it again to resume an
    interrupted rollback."""
    s = store()
    if plan:
        for line in rb.plan(s, run, to).lines():
            console.print(line, highlight=False)
        return
    p = rb.rollback(s, run, to, accept_irreversible=accept_irreversible, force=force,
                    who=ops.actor(as_))
    row = ops.find_run(s, p.run.id)
    console.print(f"rolled back run {row.id} to step {to}: {len(p.undo)} effects undone, "
                  f"{len(p.irreversible) + len(p.in_doubt)} left; now epoch {row.epoch}, "
                  f"{row.status}. `tether resume {row.id}` goes on from step {to}.")
