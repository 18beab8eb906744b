"""Text a store keeps in a text column: never a NUL character.

PostgreSQL's text cannot hold NUL (``\\x00``); SQLite's can. So that both backends
keep the same journal, tether refuses NUL where a caller names something (a run's
name, goal or swarm, a blackboard key, a message's recipient or topic:
:func:`refuse_nul`) and escapes it in text it forms itself from what it does not
control (a failure's reason, from an exception: :func:`escape_nul`). Pure: no I/O.
"""

from __future__ import annotations

from tether.errors import UsageError

NUL = "\x00"


def refuse_nul(where: str, field: str, value: object) -> None:
    """UsageError if ``value`` is a string holding NUL; ``where`` names the run, step or
    call, ``field`` what the value is (``"a blackboard key"``, ``"the goal"``)."""
    if isinstance(value, str) and NUL in value:
        raise UsageError(f"{where}: {field} {value!r} contains a NUL character (\\x00), "
                         "which a store cannot keep in a name or text column; remove "
                         "it or replace it")


def escape_nul(text: str) -> str:
    """``text`` with each NUL written ``\\x00`` (four characters), as ``repr`` shows it."""
    return text.replace(NUL, "\\x00") if NUL in text else text
