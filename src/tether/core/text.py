"""Text a store keeps in a text column: never a NUL character.

PostgreSQL's text cannot hold NUL (``\\x00``); SQLite's can. So that both backends
keep the same journal, tether refuses NUL where a caller names something (a run's
name, goal or swarm, a blackboard key, a message's recipient or topic:
:func:`refuse_nul`; a tool's name; a policy's rule ids, reasons and other texts:
:func:`nul_in`) and escapes it in text it forms itself from what it does not
control (a failure's reason, from an exception: :func:`escape_nul`). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from tether.errors import UsageError

NUL = "\x00"


def refuse_nul(where: str, field: str, value: object) -> None:
    """UsageError if ``value`` is a string holding NUL; ``where`` names the run, step or
    call, ``field`` what the value is (``"a blackboard key"``, ``"the goal"``)."""
    if isinstance(value, str) and NUL in value:
        raise UsageError(f"{where}: {field} {nul_problem(value)}")


def nul_problem(text: str) -> str:
    """What is wrong with ``text``, which holds NUL, and how to fix it (for a message)."""
    return (f"{text!r} contains a NUL character (\\x00), which a store cannot keep in a "
            "name or text column; remove it or replace it")


def nul_in(value: object, *, skip: Collection[str] = ()) -> tuple[str, str] | None:
    """The first string holding NUL in ``value``, a tree of mappings, lists and scalars
    (as TOML or JSON reads), a key or a value: its path (``reason``, ``approvers[1]``,
    ``when.days``; NUL in a key written ``\\x00``) and the string; None when there is none.
    ``skip`` names keys of the top mapping whose values are not looked into."""
    if isinstance(value, str):
        return ("", value) if NUL in value else None
    if isinstance(value, Mapping):
        for key, item in value.items():
            name = escape_nul(str(key))
            if isinstance(key, str) and NUL in key:
                return name, key
            if key in skip:
                continue
            found = nul_in(item)
            if found is not None:
                return _joined(name, found[0]), found[1]
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            found = nul_in(item)
            if found is not None:
                return _joined(f"[{i}]", found[0]), found[1]
    return None


def _joined(head: str, rest: str) -> str:
    return head if not rest else f"{head}{rest}" if rest.startswith("[") else f"{head}.{rest}"


def escape_nul(text: str) -> str:
    """``text`` with each NUL written ``\\x00`` (four characters), as ``repr`` shows it."""
    return text.replace(NUL, "\\x00") if NUL in text else text
