"""What every CLI command shares: the store option, output, errors."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson
import typer
from rich.console import Console
from rich.markup import escape

from tether.errors import TetherError, UsageError
from tether.store import open_store
from tether.store.protocol import Store

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


class Settings:
    """Global options, set by the app callback."""

    store_url: str | None = None


def store(*, create: bool = False) -> Store:
    """Open the store named by --store / TETHER_STORE / ./tether.db."""
    return open_store(Settings.store_url, create=create)


def handle_errors(fn: F) -> F:
    """Turn tether's errors into one clear line on stderr and exit status 2."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TetherError as exc:
            err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False,
                              soft_wrap=True)
            raise typer.Exit(2) from None
    return wrapper  # type: ignore[return-value]


def print_jsonl(rows: Iterable[dict[str, Any]]) -> None:
    """One JSON object per line on stdout."""
    out = sys.stdout
    for r in rows:
        out.write(orjson.dumps(r).decode())
        out.write("\n")
    out.flush()


def when(t: float | None) -> str:
    """A time for people: UTC, to the second."""
    if t is None:
        return "-"
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")


STATUS_STYLE = {"running": "green", "sleeping": "cyan", "waiting": "cyan", "paused": "yellow",
                "stopped": "magenta",
                "failed": "red", "done": "blue", "awaiting_approval": "yellow"}


def status(s: str) -> str:
    return f"[{STATUS_STYLE.get(s, 'white')}]{s}[/]"


def parse_assignments(items: list[str], what: str) -> dict[str, float]:
    """Parse ``key=number`` options."""
    out: dict[str, float] = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not sep:
            raise UsageError(f"{what} {item!r}: expected KEY=NUMBER, e.g. cost_usd_per_day=5")
        try:
            out[k.strip()] = float(v)
        except ValueError:
            raise UsageError(f"{what} {item!r}: {v!r} is not a number") from None
    return out
