"""``tether demo``: watch a night shift of agents, kill it, resume it, audit it."""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tether.audit import verify_store
from tether.cli import model_opts
from tether.cli.args import check_value
from tether.cli.common import console, err_console, handle_errors, make_folder, status
from tether.core.pricing import PriceTable
from tether.demo.agents import DRIFT_AFTER, NIGHT_START, _clock, scripted
from tether.demo.night import NightResult, run_night
from tether.demo.review import BadStep, find_bad_step, router_run
from tether.errors import UsageError
from tether.models.base import Model
from tether.runinfo import run_json
from tether.store.protocol import Store
from tether.store.records import EffectRow


@handle_errors
def demo(folder: Annotated[str, typer.Option(
             "--dir", help="Folder for the demo's store and workspace.",
             metavar="DIR")] = "tether-demo",
         pace: Annotated[float, typer.Option(
             help="Seconds each model call takes, to watch (or kill) the demo mid-way.",
             metavar="SECONDS")] = 0.0,
         model: Annotated[str | None, typer.Option(
             help="A real model behind the agents: any OpenAI-compatible server, from "
                  "OPENAI_BASE_URL (and OPENAI_API_KEY).", metavar="MODEL")] = None,
         model_timeout: model_opts.TimeoutOpt = None,
         model_retries: model_opts.RetriesOpt = None,
         prices: model_opts.PricesOpt = None) -> None:
    """Run a small team of agents through a simulated night on real files.

    Run it again with the same --dir to resume where it stopped: no effect is repeated.
    """
    # Taken as text: typer would read "" as Path("."), the current folder.
    if not folder:
        raise UsageError("--dir '': give the folder for the demo, e.g. --dir tether-demo")
    directory = Path(folder)
    check_value(directory, "--dir", "the folder for the demo's store and workspace")
    table = model_opts.apply(model_timeout, model_retries, prices)
    m: Model
    if model:
        if not os.environ.get("OPENAI_BASE_URL") and not os.environ.get("OPENAI_API_KEY"):
            raise UsageError("--model needs OPENAI_BASE_URL (and OPENAI_API_KEY if the server "
                             "wants one), e.g. OPENAI_BASE_URL=http://localhost:11434/v1")
        from tether.models.openai import OpenAIModel
        m = OpenAIModel(model)
    else:
        m = scripted(pace)
    try:
        _night(directory, m, table, scripted_model=not model)
    except KeyboardInterrupt:
        # Anywhere from here (set-up, the night, the summary): everything done so far is
        # journaled, and the same command picks the night up again.
        err_console.print("interrupted; run the same command again to resume", highlight=False)
        raise typer.Exit(130) from None


def _night(directory: Path, m: Model, table: PriceTable, *, scripted_model: bool) -> None:
    make_folder(directory, "--dir")
    resumed = (directory / "tether.db").exists()
    console.print(("Resuming" if resumed else "Starting") + f" the night shift in {directory}/ "
                  f"(store {directory}/tether.db, files in {directory}/workspace/)")
    night = _drained_on_sigint(directory, m, table)
    try:
        res = asyncio.run(night)
    finally:
        night.close()  # interrupted before it started: no "never awaited" warning
    if res.interrupted:
        raise KeyboardInterrupt
    if res.output_closed:
        # As `tether events | head` does (rich's broken-pipe handling): the reader is gone,
        # so no summary; the night itself ran to its end, journaled, as if read.
        raise typer.Exit(1)
    _summary(res.store, directory, res.clock, scripted_model=scripted_model)


async def _drained_on_sigint(directory: Path, m: Model, table: PriceTable) -> NightResult:
    """The night, which Ctrl-C drains as it does a worker's (every run stops at its next safe
    point). asyncio's own Ctrl-C only cancels the main task, and a cancellation landing in a
    step was taken as that step's stop while the night went on."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, stop.set)
    try:
        return await run_night(directory, model=m, console=console, prices=table, stop=stop)
    finally:
        loop.remove_signal_handler(signal.SIGINT)


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


def _say(text: str) -> None:
    """A command to copy: printed as it is, on one line however narrow the terminal."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def _summary(store: object, directory: Path, clock: float, *,
             scripted_model: bool = True) -> None:
    from tether.store.sqlite import SQLiteStore
    assert isinstance(store, SQLiteStore)
    doubt = _runs_table(store, clock)
    rep = verify_store(store)
    verdict = "[green]chains intact[/green]" if rep.ok else f"[red]{rep.first_bad}[/red]"
    console.print(f"audit: {verdict} ({rep.events} events in {rep.batches} commit batches)")
    _outbox(directory / "workspace")
    _waiting_for_people(store, directory, doubt)
    s = f"{_prog()} --store {shlex.quote(f'{directory}/tether.db')}"
    bad = find_bad_step(store)
    if bad is not None:
        _bad_step(bad, s, scripted_model)
    else:
        _rolled_back(store, s)
    _write_report(store, directory)
    console.print("\n[bold]Try next[/bold]")
    _say(f"  {s} report             the night on one page (--format md|html)")
    _say(f"  {s} runs               every run, its status and cost")
    _say(f"  {s} events triage      the journal of one run")
    _say(f"  {s} state triage --step 3   any step's state, restored")
    _say(f"  {s} audit verify       walk every hash chain")
    _say(f"  {_prog()} demo --dir {directory}-2 --pace 0.5")
    console.print("      watch it; Ctrl-C or kill -9 it mid-way and run it again: it resumes "
                  "where it stopped and repeats no effect")


def _write_report(store: Store, directory: Path) -> None:
    """The night report, as a page to open and as Markdown, beside the store."""
    import datetime as dt

    from tether.reporting.overnight import gather
    from tether.reporting.render import render
    night = gather(store, NIGHT_START, None)
    for fmt, name in (("html", "night-report.html"), ("md", "night-report.md")):
        (directory / name).write_text(render(night, fmt, dt.UTC), encoding="utf-8")
    console.print(f"\nnight report: {directory}/night-report.html (and .md): "
                  f"{len(night.waiting)} things wait for a human, {len(night.alerts)} alerts, "
                  f"{len(night.approvals)} approvals asked")


def _runs_table(store: Store, clock: float) -> list[EffectRow]:
    """Print the night's runs with their totals; return the effects left in doubt."""
    order = ["librarian", "ingest", "triage", "reporter", "router", "dispatcher"]
    rows = sorted(store.list_runs(), key=lambda r: (
        r.created, order.index(r.name) if r.name in order else len(order), r.id))
    t = Table(title=f"the night shift at {_clock(clock)} (simulated)")
    for col in ("run", "agent", "status", "steps", "effects", "tokens", "cost $"):
        t.add_column(col, justify="right" if col in ("steps", "effects", "tokens", "cost $")
                     else "left")
    tot_steps = tot_eff = tot_tok = 0
    tot_cost = 0.0
    doubt: list[EffectRow] = []
    for r in rows:
        j = run_json(r)
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
    return doubt


def _outbox(ws: Path) -> None:
    """The irreversible effects of the night, as files: each must be there exactly once."""
    sent = ws / "outbox" / "sent.mbox"
    if sent.exists():
        console.print(f"sent (irreversible, exactly once): {sent} "
                      f"({sent.read_text().count('From tether-demo')} message)")
    pages = ws / "outbox" / "pages.log"
    if pages.exists():
        console.print(f"paged (irreversible, approved, exactly once): {pages} "
                      f"({pages.read_text().count('PAGE:')} page)")


def _waiting_for_people(store: Store, directory: Path, doubt: list[EffectRow]) -> None:
    """Pending approvals and in-doubt effects, each with the commands that settle it."""
    for a in store.approvals(status="pending"):
        console.print(f"\n[magenta]approval pending[/magenta]: {a.id}: run {a.run[-6:]} wants to "
                      f"run {a.tool} ({a.reason}).")
        _say(f"  {_prog()} --store {directory}/tether.db approvals")
        _say(f"  {_prog()} --store {directory}/tether.db approve {a.id}")
        _say(f"  {_prog()} demo --dir {directory}      # the run goes on and pages, once")
    for e in doubt:
        console.print(f"[yellow]in doubt[/yellow]: effect {e.id} ({e.tool}) of run {e.run}: "
                      f"look at the workspace, then `tether --store {directory}/tether.db resolve "
                      f"{e.id} --done` (or --not-done / --retry) and rerun the demo")


def _bad_step(bad: BadStep, s: str, scripted_model: bool) -> None:
    """What the router's invariant caught at night (the alert and its evidence), what the
    bad step reached, and the commands that undo it."""
    r, p = bad.run, bad.payload
    name = (p.get("figures") or {}).get("invariant", p.get("rule"))
    acted = ("and quarantined it there (tether.toml: \\[monitors.agent.router.invariants])"
             if bad.quarantined else f"(verdict {p.get('verdict')})")
    console.print(f"\n[bold red]caught live[/bold red]: the invariant {name!r} broke at "
                  f"{r.name} step {bad.step} ({bad.at}), {acted}", highlight=False)
    item = bad.offending
    if item:
        why = (f"; the scripted model loses the thread once the router's conversation holds "
               f"{DRIFT_AFTER} tickets, and repeats its previous answer") if scripted_model else ""
        console.print(f"  it routed \"{item.get('text')}\" to {item.get('team')}, a team the "
                      f"ticket does not mention{why}", markup=False, highlight=False)
    console.print(f"  evidence: {', '.join(bad.evidence)} of {r.name} step {bad.step}",
                  markup=False, highlight=False)
    _say(f"  {s} events {shlex.quote(r.name)} --kind alert --full      # the alert: what it "
         "saw, before and now")
    _say(f"  {s} alerts      # every alert of the night; `alerts ack ID` records who looked")
    _reached(bad, s)
    _undo(bad, s)


def _reached(bad: BadStep, s: str) -> None:
    r = bad.run
    files = bad.impact.files()
    console.print(f"what it reached: {bad.impact.totals()}", highlight=False)
    names = {a.run.id: a.run.name for a in bad.impact.affected}
    for a in bad.impact.affected:
        console.print(f"  {a.summary(lambda rid: names.get(rid, rid))}", markup=False,
                      highlight=False)
    if files:
        console.print(f"  files: {', '.join(files)}", markup=False, highlight=False)
    if all(a.run.id == r.id for a in bad.impact.affected):
        console.print(f"  its answers never left {r.name}: it sends a step after it decides, "
                      "and the invariant is checked in between, so nothing downstream got "
                      "them", markup=False, highlight=False)
    _say(f"  {s} impact {shlex.quote(r.name)}@{bad.step}      # all of it, effect by effect")


def _undo(bad: BadStep, s: str) -> None:
    r, k = bad.run, bad.to_step
    flags = ""
    if bad.irreversible:
        flags = " --accept-irreversible"
        console.print("  [yellow]cannot be undone[/yellow] (the rollback goes past it and leaves "
                      "it as it is, hence --accept-irreversible): " + "; ".join(bad.irreversible),
                      highlight=False)
    if bad.conflicts:
        console.print("  [yellow]changed since[/yellow] (the rollback refuses to overwrite them; "
                      "look first, then add --force): " + ", ".join(bad.conflicts),
                      highlight=False)
    others = [p for p in bad.plan.plans if p.run.id != r.id and not p.idle]
    back = "".join(f", {p.run.name} to step {p.to_step}" for p in others)
    note = ("every reversible effect is undone, the rest stays" if bad.irreversible else
            "no irreversible effect on the way, so every file it wrote comes back byte for byte"
            if bad.impact.files() else "it made no effect, so this only takes back its state")
    console.print(f"undo it wherever it reached ({r.name} back to step {k}{back}; {note}; the "
                  "journal keeps the history):", markup=False, highlight=False)
    cmd = f"{s} rollback {shlex.quote(r.name)} --to {k} --cascade{flags}"
    _say(f"  {cmd} --plan    # what it would do; changes nothing")
    _say(f"  {cmd}           # do it")


def _rolled_back(store: Store, s: str) -> None:
    """After the cascade: say where the router stands, and that its fault is still there."""
    row = router_run(store)
    if row is None or row.epoch == 0 or row.status != "paused":
        return
    console.print(f"\n{row.name} was rolled back to step {row.step} (epoch {row.epoch}) and is "
                  f"paused; `{s} resume {row.name}` would go on, and route the same way again: "
                  "the model is still at fault", highlight=False)
