"""``tether impact``: everything downstream of a step or event, in every run."""

from __future__ import annotations

from typing import Annotated

import orjson
import typer

from tether.cli.common import console, handle_errors, status, store
from tether.provenance.impact import Affected
from tether.provenance.impact import impact as compute


@handle_errors
def impact(origin: Annotated[str, typer.Argument(
               help="An event id, or RUN@STEP (run id, name or id prefix; its current epoch).")],
           epoch: Annotated[int | None, typer.Option(
               help="With RUN@STEP: an earlier epoch of the run.")] = None,
           json: Annotated[bool, typer.Option("--json", help="Print JSON for tools.")] = False
           ) -> None:
    """Show everything downstream of a step: its run's later steps and every run that took in
    its messages, blackboard writes or files, with their effects, messages and writes."""
    imp = compute(store(), origin, epoch=epoch)
    if json:
        print(orjson.dumps(imp.to_json()).decode())
        return
    run, ep, step = imp.origin
    others = len(imp.runs()) - 1
    console.print(f"impact of run {run} step {step} (epoch {ep}): {others} other run(s) "
                  "affected", highlight=False)
    for a in imp.affected:
        _print(a)


def _print(a: Affected) -> None:
    r = a.run
    span = f"steps {a.first_step}-{a.last_step}" if a.last_step > a.first_step else \
        f"step {a.first_step}"
    old = "" if a.current else f"  (epoch {a.epoch}: rolled back since, now epoch {r.epoch})"
    console.print(f"\n[bold]{r.name}[/] ({r.id}) {status(r.status)} {span}{old}")
    if a.via is not None:
        link = a.via
        console.print(f"  via {link.kind}: run {link.src_run} step {link.src_step} "
                      f"({link.src_event})", highlight=False)
    for e in a.effects:
        console.print(f"  effect  step {e.step} {e.tool} [{e.effect}] {e.status} ({e.id})",
                      highlight=False)
    for m in a.messages:
        console.print(f"  message step {m.step} to {m.recipient} {m.status} ({m.id})",
                      highlight=False)
    for v in a.board:
        sus = " SUSPECT" if v.suspect else ""
        console.print(f"  board   step {v.step} {v.key!r} v{v.version} {v.status}{sus}",
                      highlight=False)
    for v in a.files:
        console.print(f"  file    step {v.step} {v.key} v{v.version} {v.status}",
                      highlight=False)
