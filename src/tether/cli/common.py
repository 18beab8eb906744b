"""What every CLI command shares: the store option, output, errors."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from tether.cli.args import check_arguments, check_value, click_exceptions, remember_argv
from tether.core.budget import parse_cap
from tether.errors import StoreError, TetherError, UsageError
from tether.ops import Tether
from tether.reporting.lines import at
from tether.runtime.operator import actor
from tether.store import open_store
from tether.store.protocol import Store
from tether.store.urls import is_postgres, without_password

# No automatic highlighting: rich's highlighter runs regular expressions that take
# quadratic time on one long token (`tether show` of a run named with 40,000 characters
# took 28 s), and what tether prints is styled on purpose where it matters.
console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

F = TypeVar("F", bound=Callable[..., Any])


class Settings:
    """Global options, set by the app callback."""

    store_url: str | None = None


def store(*, create: bool = False, readonly: bool | None = False) -> Store:
    """Open the store named by --store / TETHER_STORE / ./tether.db.

    ``readonly``: the command only reads; it then works on a store or backup it may not
    write, and never migrates nor creates one. None: read-only if the file cannot be
    written (a command that would also tidy up, when it can)."""
    url = Settings.store_url
    if url:  # an empty one is refused by open_store, as itself
        check_store_url(url)
    return open_store(url, create=create, readonly=readonly)


STORE_FORMS = "the path of a SQLite file, sqlite:///path, or postgresql://host/dbname?schema=NAME"
"""What --store / TETHER_STORE take, for messages."""


def check_store_url(url: str) -> None:
    """Refuse a --store value that cannot go further (not UTF-8; a path too long), naming
    it as given but never a password in it.

    Raises:
        UsageError: naming the value and the forms --store takes.
    """
    if is_postgres(url):
        # A URL, not a path: a path's length limits do not apply, and the password of
        # postgresql://user:secret@host/db must not reach a message.
        check_value(without_password(url), "--store", STORE_FORMS)
        return
    check_value(Path(url), "--store", STORE_FORMS)



AsOpt = Annotated[str | None, typer.Option(
    "--as", metavar="NAME", help="Act as NAME (default $TETHER_USER or the OS user); only where "
                                 "the store allows it (`tether settings allow-as on`).")]


def operator(as_: str | None = None, *, readonly: bool | None = False) -> Tether:
    """The operations façade on the store (:func:`store`), acting as the OS user, or as
    ``--as NAME`` / ``$TETHER_USER`` where the store allows claimed names (checked here,
    before anything else is read)."""
    s = store(readonly=readonly)
    return Tether(s, who=actor(as_, s))


def claimed_actor(as_: str | None) -> str | None:
    """Who a command that may create or write the store acts as, when it claims a name
    (``--as NAME`` / ``$TETHER_USER``): checked on the store as it is, before anything is
    created or written, so a refused name leaves no trace (a store not there yet allows no
    claimed names). None: no name claimed; the OS user, as :func:`actor` says."""
    if not (as_ or os.environ.get("TETHER_USER")):
        return None
    try:
        existing = store(readonly=True)
    except StoreError as exc:
        if type(exc) is not StoreError:  # locked, damaged, too new: say so, as itself
            raise
        return actor(as_, None)  # no store there yet: nothing allows a claimed name
    try:
        return actor(as_, existing)
    finally:
        existing.close()


def reader() -> Tether:
    """The operations façade for a command that only reads (no one acts)."""
    return Tether(store(readonly=True))


def print_error(message: str) -> None:
    """The one form every CLI error takes: a single ``error:`` line on stderr."""
    line = " ".join(message.split())  # a newline inside would make a second line
    # Whatever the message quotes (a file name that is not UTF-8), printing it must not fail.
    line = line.encode("utf-8", "backslashreplace").decode("utf-8")
    err_console.print(f"[red]error:[/red] {escape(line)}", highlight=False, soft_wrap=True)


def handle_errors(fn: F) -> F:
    """Turn tether's errors into one clear line on stderr and exit status 2."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            check_arguments(kwargs)
            return fn(*args, **kwargs)
        except TetherError as exc:
            print_error(str(exc))
            raise typer.Exit(2) from None
    return wrapper  # type: ignore[return-value]


_ClickException: type[Exception] = click_exceptions.ClickException
_NoArgsIsHelp: type[Exception] | None = getattr(click_exceptions, "NoArgsIsHelpError", None)


class OneLineErrors(TyperGroup):
    """The root command: Click's usage errors (unknown option, missing argument, bad value)
    take the same one-line ``error:`` form as tether's own, keeping Click's pointer to
    ``--help``, with Click's exit status 2."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             windows_expand_args: bool = True, **extra: Any) -> Any:
        remember_argv(list(args) if args is not None else sys.argv[1:])
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, windows_expand_args,
                                **extra)
        try:
            rv = super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        except _ClickException as exc:
            if _NoArgsIsHelp is None or not isinstance(exc, _NoArgsIsHelp):  # help is printed
                print_error(_usage_message(exc))
            sys.exit(getattr(exc, "exit_code", 2))
        except typer.Abort:  # end of input at a prompt; standalone mode prints "Aborted!"
            print_error("aborted")
            sys.exit(1)
        # Outside standalone mode typer returns the code of a typer.Exit (or the command's
        # None): exit with it as standalone mode would.
        sys.exit(rv if isinstance(rv, int) else 0)


def _usage_message(exc: Exception) -> str:
    msg = " ".join(str(getattr(exc, "format_message", exc.__str__)()).split()).rstrip(".")
    if msg[:1].isupper() and msg[1:2].islower():
        msg = msg[0].lower() + msg[1:]
    ctx = getattr(exc, "ctx", None)
    return f"{msg}; see `{ctx.command_path} --help`" if ctx is not None else msg


def print_jsonl(rows: Iterable[dict[str, Any]]) -> None:
    """One JSON object per line on stdout."""
    out = sys.stdout
    for r in rows:
        out.write(orjson.dumps(r).decode())
        out.write("\n")
    out.flush()


def run_namer(s: Store) -> Callable[[str], str]:
    """``run id -> its name`` for listings (the id itself when the run is gone), one read per run."""
    names: dict[str, str] = {}

    def name(run_id: str) -> str:
        if run_id not in names:
            row = s.get_run(run_id)
            names[run_id] = row.name if row else run_id
        return names[run_id]
    return name


def when(t: float | None) -> str:
    """A time for people: UTC, to the second (``-`` for none)."""
    return at(t)


STATUS_STYLE = {"running": "green", "sleeping": "cyan", "waiting": "cyan", "paused": "yellow",
                "stopped": "magenta",
                "failed": "red", "done": "blue", "awaiting_approval": "yellow"}


def status(s: str) -> str:
    return f"[{STATUS_STYLE.get(s, 'white')}]{s}[/]"


def parse_assignments(items: list[str], what: str) -> dict[str, float]:
    """Parse ``key=number`` options (:func:`~tether.core.budget.parse_cap`; an empty value
    is refused here: these options set, they do not remove)."""
    out: dict[str, float] = {}
    for item in items:
        k, number = parse_cap(item, what, "cost_usd_per_day=5")
        if number is None:
            raise UsageError(f"{what} {item!r}: '' is not a number")
        out[k] = number
    return out


def make_folder(path: Path, label: str, *, create: bool = True) -> None:
    """Create folder ``path`` (given as option ``label``) unless it exists (or, with
    ``create=False``, only check that it could be created): only the last
    folder, as ``--store`` creates only its file, so a typo in a parent is refused instead
    of becoming a tree of new folders.

    Raises:
        UsageError: naming the option and the folder that is missing or in the way.
    """
    if path.is_dir():
        return
    parent = path.parent
    if not path.exists() and not parent.is_dir():
        raise UsageError(f"{label} {path}: folder {parent} does not exist; create it first "
                         "or give a folder inside one that exists")
    if path.exists():
        raise UsageError(f"{label} {path}: exists and is not a folder; give a folder")
    if not create:
        return
    try:
        path.mkdir()
    except FileExistsError:
        raise UsageError(f"{label} {path}: exists and is not a folder; give a folder") from None
    except OSError as exc:
        raise UsageError(f"{label} {path}: cannot create the folder: "
                         f"{exc.strerror or exc}") from None
