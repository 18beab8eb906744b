"""The shared workload and file helpers.

Both systems run the same growing-conversation loop: each step appends one
message whose canonical JSON is exactly :data:`MESSAGE_BYTES` bytes to a list
in the state, so the state after N steps holds N messages.
"""

from __future__ import annotations

import contextlib
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import orjson

MESSAGE_BYTES = 200
_FILLER = "The operator reads the overnight report, approves two effects and rolls one back. " * 4
_PREFIX = '{"content":"","role":"user"}'


def message(i: int) -> dict[str, Any]:
    """The i-th message: unique (it names its step), ~200 bytes of JSON."""
    head = f"step {i:06d}: "
    body = _FILLER[: MESSAGE_BYTES - len(_PREFIX) - len(head)]
    return {"role": "user", "content": head + body}


def append_message(state: dict[str, Any], n: int) -> bool:
    """The bare step both sides run: append one message; True once N are there."""
    msgs = state["messages"]
    msgs.append(message(len(msgs)))
    return len(msgs) >= n


assert len(orjson.dumps(message(0), option=orjson.OPT_SORT_KEYS)) == MESSAGE_BYTES


def fresh_db(workdir: Path, name: str) -> Path:
    """A path for a new database file in ``workdir``."""
    return workdir / f"{name}-{uuid.uuid4().hex[:8]}.db"


def remove_db(path: Path) -> None:
    """Delete a database with its WAL and shared-memory files."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            Path(f"{path}{suffix}").unlink()


def db_bytes(path: Path, conn: sqlite3.Connection | None = None) -> int:
    """Bytes on disk of a database and its WAL, after folding the WAL into the file.

    ``PRAGMA wal_checkpoint(TRUNCATE)`` copies committed pages back and
    empties the WAL, so the figure is the database's own size; the WAL is
    still added in case a reader kept it from being truncated.
    """
    own = conn is None
    c = conn or sqlite3.connect(path)
    try:
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    finally:
        if own:
            c.close()
    return sum(Path(f"{path}{s}").stat().st_size for s in ("", "-wal")
               if Path(f"{path}{s}").exists())
