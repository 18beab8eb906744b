"""``tether messages`` and ``tether board``: what a swarm's runs said to each other and wrote."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from tether.cli.common import console, handle_errors, print_jsonl, run_namer, store, when
from tether.errors import UsageError
from tether.ops import Tether
from tether.reporting import lines as render
from tether.runtime.swarm import board_ns
from tether.store.protocol import Store
from tether.store.records import MESSAGE_STATUSES, VersionRow


@handle_errors
def messages(run: Annotated[str | None, typer.Argument(
                 help="Only messages this run (id, name or prefix) sent or received.", metavar="RUN")] = None,
             state: Annotated[str | None, typer.Option(
                 "--status", help="pending, delivered, retracted or held.", metavar="STATUS")] = None,
             json: Annotated[bool, typer.Option("--json", help="JSON lines.")] = False) -> None:
    """List messages between runs, oldest first, with their delivery status."""
    if state is not None and state not in MESSAGE_STATUSES:
        raise UsageError(f"unknown message status {state!r}; one of "
                         f"{', '.join(MESSAGE_STATUSES)}")
    s = store(readonly=True)
    if run is None:
        rows = s.messages(status=state)
    else:
        rid = Tether(s).run(run).id
        rows = sorted(s.messages(sender=rid, status=state) + s.messages(recipient=rid,
                                                                         status=state),
                      key=lambda m: m.id)
    if json:
        print_jsonl({"id": m.id, "sender": m.sender, "recipient": m.recipient,
                     "epoch": m.epoch, "step": m.step, "topic": m.topic, "body": m.body,
                     "status": m.status, "created": m.created, "received": m.received}
                    for m in rows)
        return
    t = Table(title="messages")
    wide = console.width >= 120  # narrow: drop what one can do without, keep ids whole
    cols = ("id", "from", "step", "to", "topic", "status", "sent", "body") if wide else (
        "id", "from", "to", "status", "body")
    for col in cols:
        t.add_column(col, overflow="fold", no_wrap=col in ("id", "status"))
    name = run_namer(s)
    table = [{"id": m.id, "from": name(m.sender), "step": str(m.step), "to": name(m.recipient),
              "topic": m.topic or "-", "status": m.status, "sent": when(m.created)[5:],
              "body": render.compact(m.body)} for m in rows]
    # One line per message: the body is cut to the room the other columns leave (60 at
    # most; `--json` has it whole).
    room = min(60, render.room(console.width, table, cols, "body")) if table else 60
    for cells in table:
        t.add_row(*(escape(render.cut(cells[c], room) if c == "body" else cells[c])
                    for c in cols))
    console.print(t)


@handle_errors
def board(key: Annotated[str | None, typer.Argument(help="Only this key, with its history.", metavar="KEY")]
          = None,
          swarm: Annotated[str | None, typer.Option(
              help="Only this swarm's board (default: every swarm's; '-' for runs with no "
                   "swarm).", metavar="NAME")] = None,
          json: Annotated[bool, typer.Option("--json", help="JSON lines.")] = False) -> None:
    """Show the swarms' blackboards: each key's value and who wrote it.

    With KEY: every version of it, reverted ones too, with suspect marks."""
    s = store(readonly=True)
    if swarm is None:
        rows = [v for v in s.versions(key=key) if v.ns.startswith("board:")]
    else:
        rows = s.versions(ns=board_ns(None if swarm == "-" else swarm), key=key)
    if key is None:  # each key's live version only
        current = {(v.ns, v.key): v for v in rows if v.status == "live"}
        rows = [v for v in rows if current.get((v.ns, v.key)) is v]
    if json:
        print_jsonl({"swarm": v.ns.removeprefix("board:") or None, "key": v.key,
                     "version": v.version, "value": v.value, "run": v.run, "epoch": v.epoch,
                     "step": v.step, "event": v.event, "status": v.status,
                     "suspect": v.suspect, "created": v.created} for v in rows)
        return
    where = "any swarm" if swarm is None else f"swarm {swarm}"
    if not rows:
        swarms = sorted({r.swarm for r in s.list_runs() if r.swarm})
        console.print(f"nothing on the board of {where}" + (f" under {key!r}" if key else "")
                      + (f" (swarms in this store: {', '.join(swarms)})" if swarms else ""),
                      highlight=False)
        return
    _print_board(s, rows, where, every_swarm=swarm is None)


def _print_board(s: Store, rows: list[VersionRow], where: str, *, every_swarm: bool) -> None:
    """The versions as a table, as wide as the terminal lets the values be."""
    t = Table(title=f"blackboard of {where}")
    name = run_namer(s)
    table = []
    for v in rows:
        table.append({"swarm": v.ns.removeprefix("board:") or "-", "key": v.key,
                      "version": str(v.version), "value": render.compact(v.value),
                      "written by": name(v.run), "step": str(v.step),
                      "status": v.status + (" suspect" if v.suspect else "")})
    # Every column while the values keep room (20 characters, or their length); else the
    # version and step go (and the swarm, when one was asked for), one line per version.
    cols: tuple[str, ...] = ("swarm", "key", "version", "value", "written by", "step", "status")
    if render.room(console.width, table, cols, "value", least=0) < min(
            20, max(len(r["value"]) for r in table)):
        cols = (("swarm",) if every_swarm else ()) + ("key", "value", "written by", "status")
    for col in cols:
        t.add_column(col, overflow="fold", no_wrap=col == "status")
    room = min(60, render.room(console.width, table, cols, "value"))
    for cells in table:
        t.add_row(*(escape(render.cut(cells[c], room)) if c == "value" else
                    escape(cells[c]).replace(" suspect", " [red]suspect[/]") if c == "status"
                    else escape(cells[c]) for c in cols))
    console.print(t)
