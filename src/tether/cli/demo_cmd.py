"""``tether demo``: watch a night shift of agents, kill it, resume it, audit it."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tether import ops
from tether.audit import verify_store
from tether.cli.common import console, handle_errors, status
from tether.demo.agents import _clock, scripted
from tether.demo.night import run_night
from tether.errors import UsageError
from tether.models.base import Model


@handle_errors
def demo(directory: Annotated[Path, typer.Option(
             "--dir", help="Folder for the demo's store and workspace.")] = Path("tether-demo"),
         pace: Annotated[float, typer.Option(
             help="Seconds each model call takes, to watch (or kill) the demo mid-way.")] = 0.0,
         model: Annotated[str | None, typer.Option(
             help="A real model behind the agents: any OpenAI-compatible server, from "
                  "OPENAI_BASE_URL (and OPENAI_API_KEY).")] = None) -> None:
    """Run a small team of agents through a simulated night on real files.

    Run it again with the same --dir to resume where it stopped: no effect is repeated.
    """
    if pace < 0:
        raise UsageError("--pace must be zero or more seconds")
    m: Model
    if model:
        if not os.environ.get("OPENAI_BASE_URL") and not os.environ.get("OPENAI_API_KEY"):
            raise UsageError("--model needs OPENAI_BASE_URL (and OPENAI_API_KEY if the server "
                             "wants one), e.g. OPENAI_BASE_URL=http://localhost:11434/v1")
        from tether.models.openai import OpenAIModel
        m = OpenAIModel(model)
    else:
        m = scripted(pace)
    resumed = (directory / "tether.db").exists()
    console.print(("Resuming" if resumed else "Starting") + f" the night shift in {directory}/ "
                  f"(store {directory}/tether.db, files in {directory}/workspace/)")
    res = asyncio.run(run_night(directory, model=m, console=console))
    _summary(res.store, directory, res.clock)


def _prog() -> str:
    """How the user can call tether again: plain ``tether`` if it is on PATH, else the
    path they ran (``make demo`` runs ``.venv/bin/tether``)."""
    argv0 = Path(sys.argv[0])
    found = shutil.which("tether")
    if found and argv0.name == "tether" and Path(found).resolve() == argv0.resolve():
        return "tether"
    if argv0.name == "tether":
        try:
            return str(argv0.resolve().relative_to(Path.cwd()))
        except ValueError:
            return str(argv0)
    return "tether"


def _summary(store: object, directory: Path, clock: float) -> None:
    from tether.store.sqlite import SQLiteStore
    assert isinstance(store, SQLiteStore)
    rows = sorted(store.list_runs(), key=lambda r: r.created)
    t = Table(title=f"the night shift at {_clock(clock)} (simulated)")
    for col in ("run", "agent", "status", "steps", "effects", "tokens", "cost $"):
        t.add_column(col, justify="right" if col in ("steps", "effects", "tokens", "cost $")
                     else "left")
    tot_steps = tot_eff = tot_tok = 0
    tot_cost = 0.0
    doubt = []
    for r in rows:
        j = ops.run_json(r)
        effs = store.effects(run=r.id)
        doubt += [e for e in effs if e.status == "in_doubt"]
        n_eff = sum(1 for e in effs if e.status in ("done", "resolved_done"))
        t.add_row(f"{r.name} {r.id[-6:]}", r.agent.rsplit(":", 1)[-1], status(r.status),
                  str(r.step), str(n_eff), str(j["tokens"]), f"{j['cost_usd']:.5f}")
        tot_steps += r.step
        tot_eff += n_eff
        tot_tok += j["tokens"]
        tot_cost += j["cost_usd"]
    t.add_row("total", "", "", str(tot_steps), str(tot_eff), str(tot_tok), f"{tot_cost:.5f}",
              style="bold")
    console.print(t)
    rep = verify_store(store)
    verdict = "[green]chains intact[/green]" if rep.ok else f"[red]{rep.first_bad}[/red]"
    console.print(f"audit: {verdict} ({rep.events} events in {rep.batches} commit batches)")
    ws = directory / "workspace"
    sent = ws / "outbox" / "sent.mbox"
    if sent.exists():
        console.print(f"sent (irreversible, exactly once): {sent} "
                      f"({sent.read_text().count('From tether-demo')} message)")
    pages = ws / "outbox" / "pages.log"
    if pages.exists():
        console.print(f"paged (irreversible, approved, exactly once): {pages} "
                      f"({pages.read_text().count('PAGE:')} page)")
    pending = store.approvals(status="pending")
    for a in pending:
        console.print(f"\n[magenta]approval pending[/magenta]: {a.id}: run {a.run[-6:]} wants to "
                      f"run {a.tool} ({a.reason}).")
        console.print(f"  {_prog()} --store {directory}/tether.db approvals")
        console.print(f"  {_prog()} --store {directory}/tether.db approve {a.id}")
        console.print(f"  {_prog()} demo --dir {directory}      # the run goes on and pages, once")
    for e in doubt:
        console.print(f"[yellow]in doubt[/yellow]: effect {e.id} ({e.tool}) of run {e.run}: "
                      f"look at the workspace, then `tether --store {directory}/tether.db resolve "
                      f"{e.id} --done` (or --not-done / --retry) and rerun the demo")
    s = f"{_prog()} --store {directory}/tether.db"
    console.print("\n[bold]Try next[/bold]")
    console.print(f"  {s} runs               every run, its status and cost")
    console.print(f"  {s} events triage      the journal of one run")
    console.print(f"  {s} state triage --step 3   any step's state, restored")
    console.print(f"  {s} audit verify       walk every hash chain")
    console.print(f"  {_prog()} demo --dir {directory}-2 --pace 0.5")
    console.print("      watch it; Ctrl-C or kill -9 it mid-way and run it again: it resumes "
                  "where it stopped and repeats no effect")
