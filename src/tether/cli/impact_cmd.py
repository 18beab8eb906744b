"""``tether impact``: everything downstream of a step or event, in every run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import orjson
import typer
from rich.markup import escape

from tether.cli.common import console, handle_errors, status, store
from tether.provenance.impact import Affected
from tether.provenance.impact import impact as compute
from tether.store.protocol import Store


@handle_errors
def impact(origin: Annotated[str, typer.Argument(
               help="An event id, or RUN@STEP (run id, name or id prefix; the step of its "
                    "current history).", metavar="ORIGIN")],
           epoch: Annotated[int | None, typer.Option(
               help="With RUN@STEP: an earlier epoch of the run.", metavar="EPOCH")] = None,
           summary: Annotated[bool, typer.Option(
               "--summary", help="One line per affected run (and epoch) instead of every "
                                 "effect; with --json, ignored.")]
           = False,
           json: Annotated[bool, typer.Option("--json", help="Print JSON for tools.")] = False
           ) -> None:
    """Show everything downstream of a step, in every run.

    Its run's later steps and every run that took in its messages, blackboard writes or
    files, with their effects, messages and writes."""
    s = store(readonly=True)
    imp = compute(s, origin, epoch=epoch)
    if json:
        print(orjson.dumps(imp.to_json()).decode())
        return
    run, ep, step = imp.origin
    names = {a.run.id: a.run.name for a in imp.affected}

    def name(rid: str) -> str:
        return names.get(rid) or _name(s, rid)
    console.print(f"impact of {name(run)} ({run}) step {step}, epoch {ep}: {imp.totals()}",
                  highlight=False)
    if summary:
        for a in imp.affected:
            console.print(f"  {a.summary(name)}", markup=False, highlight=False)
        if imp.files():
            console.print(f"  files: {', '.join(imp.files())}", markup=False, highlight=False)
        return
    for a in imp.affected:
        _print(a, name)


def _name(s: Store, run: str) -> str:
    r = s.get_run(run)
    return r.name if r else run


def _print(a: Affected, name: Callable[[str], str]) -> None:
    r = a.run
    span = f"steps {a.first_step}-{a.last_step}" if a.last_step > a.first_step else \
        f"step {a.first_step}"
    old = "" if a.current else f"  (epoch {a.epoch}: rolled back since, now epoch {r.epoch})"
    console.print(f"\n[bold]{escape(r.name)}[/] ({r.id}) {status(r.status)} {span}{old}")
    if a.via is not None:
        link = a.via
        console.print(f"  via {link.kind} from {name(link.src_run)} step {link.src_step} "
                      f"({link.src_event})", highlight=False)
    for e in a.effects:
        console.print(f"  effect  step {e.step} {e.tool} ({e.effect}) {e.status} {e.id}",
                      highlight=False)
    for m in a.messages:
        console.print(f"  message step {m.step} to {name(m.recipient)} {m.status} {m.id}",
                      highlight=False)
    for v in a.board:
        sus = " SUSPECT" if v.suspect else ""
        console.print(f"  board   step {v.step} {v.key!r} v{v.version} {v.status}{sus}",
                      highlight=False)
    for v in a.files:
        sus = " SUSPECT" if v.suspect else ""
        console.print(f"  file    step {v.step} {v.key} v{v.version} {v.status}{sus}",
                      highlight=False)
