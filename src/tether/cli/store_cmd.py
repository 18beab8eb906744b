"""``tether store copy``: move a store to another backend, file or schema, verified
(docs/postgres.md#moving-a-store). The copying is :mod:`tether.copying`'s; this parses,
shows progress and prints what it found."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.progress import Progress, TaskID

from tether.cli import verify_helper
from tether.cli.common import (
    STORE_FORMS,
    check_store_url,
    console,
    err_console,
    handle_errors,
    print_jsonl,
)
from tether.copying import CopyReport, copy_store, undo_command
from tether.core.note import Verifier
from tether.sealing import load_verifier
from tether.store.urls import without_password

LARGE = 10_000
"""Rows from which a table's copy gets progress lines when stderr is not a terminal (a
log): a line as it starts and at each quarter."""


@handle_errors
def copy(source: Annotated[str, typer.Argument(
             metavar="SRC", help=f"The store to copy: {STORE_FORMS}. Only read (but a SQLite "
                                  "file of an older schema version is migrated first, in "
                                  "place, as by any command, when it may be written).")],
         destination: Annotated[str, typer.Argument(
             metavar="DST", help="Where to copy it: a SQLite path that does not exist yet (or "
                                 "an empty store), or an empty PostgreSQL schema "
                                 "(postgresql://host/db?schema=NEW_NAME; created).")],
         key: Annotated[Path | None, typer.Option(
             "--key", metavar="PUBFILE",
             help="The verifier (public) key, PREFIX.pub: check the signatures of the copy's "
                  "signed checkpoints too.")] = None,
         json: Annotated[bool, typer.Option("--json", help="One JSON object instead of "
                                                           "text.")] = False) -> None:
    """Copy a whole store into a new one (SQLite to PostgreSQL, back, or between files or
    schemas), then verify the copy.

    Every table but the leases is copied as stored (events and their hash chains, the
    batch chain, signed checkpoints, settings and policies, runs, effects, approvals,
    messages, tokens, erasures, the fingerprint key), the source read in one snapshot and
    the destination written in one transaction: a copy that fails or is killed leaves the
    destination empty. Refused while a worker holds a run of the source (stop the workers
    first; the copy is undone, before it commits, if the source changed while it was
    read), into a store that holds rows, or across schema versions. Afterwards the copy
    is verified (as `tether audit verify`) and its rows counted against the source's:
    exit 0 when both agree, 1 otherwise. See docs/postgres.md#moving-a-store.
    """
    for url in (source, destination):
        check_store_url(url)
    verifier = load_verifier(key) if key is not None else None
    rep = _copied(source, destination, verifier)
    if json:
        print_jsonl([rep.to_json()])
    else:
        _print(rep)
    if not rep.ok:
        raise typer.Exit(1)


class _Progress:
    """Progress of each table and of the verify: a live bar on a terminal, else lines on
    stderr for large tables (never on stdout, which --json keeps for its one object)."""

    def __init__(self) -> None:
        self.live = err_console.is_terminal
        self.bar = Progress(console=err_console, transient=True, disable=not self.live)
        self.tasks: dict[str, TaskID] = {}
        self.shown: dict[str, int] = {}
        self.phase = ""
        """The table being copied, or ``"verify"`` once the copy is committed."""

    def __enter__(self) -> _Progress:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(None, None, None)

    def __call__(self, what: str, done: int, total: int) -> None:
        self.phase = what
        label = "verifying the copy" if what == "verify" else f"copying {what}"
        if self.live:
            if what not in self.tasks:
                self.tasks[what] = self.bar.add_task(label, total=total or None)
            self.bar.update(self.tasks[what], completed=done, total=total or None)
            return
        quarter = 4 * done // total if total >= LARGE else -1
        if quarter >= 0 and self.shown.get(what) != quarter:
            self.shown[what] = quarter
            err_console.print(f"{label}: {done:,} of {total:,}", highlight=False)


def _copied(source: str, destination: str, verifier: Verifier | None) -> CopyReport:
    """The copy, its progress shown; Ctrl-C says what the destination holds."""
    with _Progress() as show:
        try:
            return copy_store(source, destination, key=verifier, progress=show,
                              helper=verify_helper.COMMAND)
        except KeyboardInterrupt:
            _interrupted(destination, verifying=show.phase == "verify")


def _interrupted(destination: str, *, verifying: bool) -> NoReturn:
    """Ctrl-C: say what the destination holds (the copy commits before it is verified)."""
    dst = without_password(destination)
    err_console.print(
        f"interrupted while verifying the copy: {dst} holds the whole copy, not verified; "
        f"check it with `tether --store {dst} audit verify`, or remove it with "
        f"`{undo_command(destination)}` (a copy into it again is refused until then)"
        if verifying else
        f"interrupted: nothing was copied ({dst} holds no row of it); run the command again "
        "to copy", markup=False, highlight=False)
    raise typer.Exit(130)


def _print(rep: CopyReport) -> None:
    v = rep.verify
    console.print(f"copied {rep.source} to {rep.destination}: {rep.total:,} rows of "
                  f"{len(rep.rows)} tables in {rep.copy_seconds:.1f} s"
                  + (f" ({rep.skipped_leases} released leases not copied)"
                     if rep.skipped_leases else ""), markup=False, highlight=False)
    width = max(len(t) for t in rep.rows)
    console.print(f"  {'table':<{width}}  {'source':>10}  {'copy':>10}", markup=False,
                  highlight=False)
    for t, (s, d) in rep.rows.items():
        flag = "" if t not in rep.mismatched else "  MISMATCH"
        console.print(f"  {t:<{width}}  {s:>10,}  {d:>10,}{flag}", markup=False,
                      highlight=False)
    sealed = (f", {v.checkpoints} signed checkpoints"
              + (" (signatures checked)" if v.signatures_checked else "")
              if v.checkpoints else "")
    if v.ok:
        console.print(f"[green]verify ok[/green]: {v.runs} runs, {v.events:,} events, "
                      f"{v.batches:,} commit batches{sealed} in {rep.verify_seconds:.1f} s",
                      highlight=False)
    else:
        console.print(f"[red]verify FAILED[/red]: {v.first_bad}", highlight=False)
        for p in v.problems[1:10]:
            console.print(f"  also: {p}", markup=False, highlight=False)
    if rep.mismatched:
        console.print(f"[red]row counts differ[/red] in {', '.join(rep.mismatched)}",
                      highlight=False)
    if rep.ok and v.runs:
        console.print(f"next: run the workers on {rep.destination} only; the source is left "
                      "as it was, and a worker started on it again would drive the same runs "
                      "a second time (their effects twice)", markup=False, highlight=False)
    if not rep.ok:
        _not_vouched(rep)


def _not_vouched(rep: CopyReport) -> None:
    """What the destination holds after a copy that committed but does not check out, why
    that may be, and what to do before copying again (which is refused while it holds it)."""
    v = rep.verify
    key = (" a --key other than the public key of the key that signed the source fails its "
           "signatures;" if v.signatures_checked else "")
    console.print(
        f"{rep.destination} now holds the whole copy, committed, but it does not check out: "
        f"run no worker on it. Why:{key} a source that does not verify is copied as it is "
        f"(check it: `tether --store {rep.source} audit verify"
        + (" --key PUBFILE" if v.signatures_checked else "") + "`). Before copying again, "
        f"remove the copy (a copy into a store that holds rows is refused): `{rep.undo}`",
        markup=False, highlight=False)
