"""What a command's arguments must be before they go further: text, numbers, JSON.

Everything typed on a command line is checked here, once, before it reaches the store or
a journal: text and paths must be UTF-8 (argv bytes that are not arrive as lone surrogates,
which SQLite and the terminal refuse), whole numbers must fit in 64 bits (SQLite's INTEGER),
real numbers must be finite, and JSON must be shallow enough for the journal's encoder
and free of lone surrogates. A refusal names the argument as the user typed it
(``--after``, ``RUN``) and says what it takes.
"""

from __future__ import annotations

import importlib
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

import orjson
import typer

from tether.errors import UsageError

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
NAME_MAX, PATH_MAX = 255, 4096  # bytes, as on Linux and macOS
MAX_JSON_DEPTH = 64
"""Deepest nesting accepted in a JSON argument: far more than any tool argument or state
value needs, and far below what the journal's encoder refuses (254 levels)."""

# Recent typer vendors click (typer._click), older ones depend on it: find it from typer
# rather than import either by name.
_CLICK = typer.BadParameter.__module__.rsplit(".", 1)[0]
click_exceptions = importlib.import_module(_CLICK + ".exceptions")
_click_globals = importlib.import_module(_CLICK + ".globals")


@dataclass(frozen=True)
class Range:
    """The numbers a CLI option accepts (the constructors it feeds check again, naming
    their Python parameter; here the refusal names the flag as typed)."""

    low: float
    high: float | None = None
    low_open: bool = False  # low itself is refused: "more than 0"
    unit: str = ""

    def accepts(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        return above and (self.high is None or value <= self.high)

    def text(self, whole: bool) -> str:
        unit = f" {self.unit}" if self.unit else ""
        if whole:
            return f"a whole number{unit} from {self.low:g} to {self.high or INT64_MAX}"
        if self.high is not None:
            return f"a number{unit} from {self.low:g} to {self.high:g}"
        return f"a number{unit}, " + (f"more than {self.low:g}" if self.low_open
                                      else f"{self.low:g} or more")


RANGES: dict[str, Range] = {
    # whole numbers: parameter name (as each command calls it) -> what it accepts
    **dict.fromkeys(("after", "limit", "step", "to", "at", "epoch", "pipeline"), Range(0)),
    **dict.fromkeys(("concurrency", "pause_every_steps"), Range(1)),
    # real numbers
    "lease_ttl": Range(0, low_open=True, unit="of seconds"),
    "give_up_after": Range(0, unit="of seconds"),
    "pause_every_minutes": Range(0, low_open=True, unit="of minutes"),
    "pace": Range(0, 60.0, unit="of seconds"),
}
"""Every numeric option of every command, by parameter name: one refusal that names the flag
and its real range ("--limit: from 0 to ..."), never the 64-bit range or a Python name."""

_argv: list[str] = []


def remember_argv(args: list[str]) -> None:
    """Keep the command line as typed, to quote a number as the user wrote it (1e400, not
    the inf it parses to)."""
    _argv[:] = args


def typed(label: str, value: object) -> str:
    """What the user typed for option ``label`` (its last occurrence), else ``value``."""
    found = None
    for i, token in enumerate(_argv):
        if token == label and i + 1 < len(_argv):
            found = _argv[i + 1]
        elif token.startswith(label + "="):
            found = token[len(label) + 1:]
    if found is not None:
        return found[:40]
    return f"{value:g}" if isinstance(value, float) else str(value)


def check_range(name: str, value: object) -> None:
    """Refuse a number outside what option ``name`` accepts (see RANGES), naming the flag.

    Raises:
        UsageError: e.g. ``--limit 99999999999999999999 does not fit in 64 bits; give a whole
            number from 0 to 9223372036854775807``.
    """
    rng = RANGES.get(name)
    if rng is None or isinstance(value, bool) or not isinstance(value, int | float):
        return
    whole = isinstance(value, int)
    if whole and not INT64_MIN <= value <= INT64_MAX:
        problem = "does not fit in 64 bits"
    elif not whole and not math.isfinite(value):
        problem = "is not a finite number"
    elif not rng.accepts(value):
        problem = "is out of range"
    else:
        return
    label, what = _describe(name)
    raise UsageError(f"{label} {typed(label, value)} {problem}; give {rng.text(whole)} "
                     f"({label}: {what})")


def shown(value: object, width: int = 40) -> str:
    """``value`` quoted for a message, cut to ``width`` characters (a 40,000-character name
    would otherwise fill the terminal)."""
    text = repr(str(value) if isinstance(value, PurePath) else value)
    return text if len(text) <= width else text[:width - 4] + "..." + text[-1]


def check_arguments(values: Mapping[str, Any]) -> None:
    """Refuse the first of a command's parsed arguments that cannot go further.

    Raises:
        UsageError: naming the argument, its value and what it takes.
    """
    for name, value in values.items():
        check_range(name, value)
        for item in value if isinstance(value, list | tuple) else (value,):
            if _problem(item) is not None:
                check_value(item, *_describe(name))


def check_value(value: object, label: str, what: str) -> None:
    """Refuse ``value`` if it cannot go further, as argument ``label`` (what it is: ``what``).

    Raises:
        UsageError: naming the argument, its value and what to give instead.
    """
    problem = _problem(value)
    if problem is not None:
        raise UsageError(f"{label} {shown(value)} {problem} ({label}: {what})")


def _problem(value: object) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX:
        return f"does not fit in 64 bits; give a whole number from {INT64_MIN} to {INT64_MAX}"
    if isinstance(value, float) and not math.isfinite(value):
        return "is not a finite number; give a number such as 30 or 0.5"
    # A path too: a file name that is not UTF-8 is legal on Linux, but every message and
    # journal entry that names it would fail to print or encode.
    if isinstance(value, str | PurePath) and not _is_utf8(str(value)):
        return ("is not valid UTF-8 text (it holds bytes that are not UTF-8, or a lone "
                "surrogate); give it as UTF-8")
    if isinstance(value, PurePath):
        return path_problem(value)
    return None


def path_problem(path: PurePath) -> str | None:
    """Why the file system would refuse ``path`` by its length alone, or None."""
    if len(os.fsencode(path)) > PATH_MAX:
        return f"is too long for a path; give one of at most {PATH_MAX} bytes"
    if any(len(os.fsencode(part)) > NAME_MAX for part in path.parts):
        return f"has a part too long for a file name; give names of at most {NAME_MAX} bytes"
    return None


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _describe(name: str) -> tuple[str, str]:
    """How the user wrote parameter ``name``, and the first sentence of its help."""
    ctx = _click_globals.get_current_context(silent=True)
    for param in getattr(getattr(ctx, "command", None), "params", ()):
        if param.name != name:
            continue
        label = param.opts[0] if param.param_type_name == "option" else name.upper()
        help_text = (getattr(param, "help", None) or "").split(". ")[0].rstrip(".")
        return label, help_text[:1].lower() + help_text[1:] if help_text else "see --help"
    return name, "see --help"


def parse_json(text: str, what: str, example: str) -> Any:
    """Parse a JSON argument the journal can hold.

    Args:
        text: what the user typed.
        what: the argument as the user wrote it, e.g. ``--result`` or ``--set hint``.
        example: a valid value, for the message.

    Raises:
        UsageError: not JSON, nested deeper than MAX_JSON_DEPTH, NaN or infinite numbers,
            lone surrogates.
    """
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise UsageError(f"{what} is not valid JSON ({exc}) in {shown(text)}; "
                         f"for example {example}") from None
    if _depth(value) > MAX_JSON_DEPTH:
        raise UsageError(f"{what} is nested deeper than {MAX_JSON_DEPTH} levels; flatten it")
    return value


def parse_json_object(text: str, what: str, example: str) -> dict[str, Any]:
    """:func:`parse_json` for an argument that must be a JSON object (a tool's arguments)."""
    value = parse_json(text, what, example)
    if not isinstance(value, dict):
        raise UsageError(f"{what} must be a JSON object of argument names, got {shown(text)}; "
                         f"for example {example}")
    return value


def _depth(value: Any) -> int:
    """Nesting depth, without recursion (the value may be up to 1,024 levels deep)."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        v, d = todo.pop()
        if isinstance(v, dict | list):
            deepest = max(deepest, d)
            todo.extend((x, d + 1) for x in (v.values() if isinstance(v, dict) else v))
    return deepest
