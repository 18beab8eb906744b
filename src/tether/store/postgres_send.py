"""How the PostgreSQL store's writes reach the server inside its write lock.

A frozen writer (SIGSTOP, a paused VM) must not hold the store's lock for ever: the
server ends a session idle inside its transaction after the stall timeout, but only
once the session is idle, that is once the server has whole messages up to a Sync.
So no pipelined batch (``executemany``) is sent inside the lock, and a large statement
goes as one simple-protocol message (:func:`execute_whole`); a write's rows go as one
multi-row statement each (:func:`insert_rows`), or as one combined statement
(:class:`Combined`): fewer round trips as well.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql as pg_sql

_MAX_PARAMS = 65535
"""Bind parameters PostgreSQL takes in one statement (the protocol counts them in 16 bits)."""


class Combined:
    """Data-modifying statements gathered and sent as one (``WITH s0 AS (...), s1 AS
    (...) SELECT 1``) by :meth:`send`: one round trip where each was one. Only for
    statements on different tables, none reading what another writes: the parts of one
    statement all see the rows as they were before it. Sent whole (execute_whole)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self._parts: list[str] = []
        self._args: list[Any] = []

    def execute(self, sql: str, args: Sequence[Any] = ()) -> None:
        """Add ``sql`` (``%s`` placeholders) with its ``args``; what was gathered is sent
        first if the two together would pass the parameter limit."""
        if len(self._args) + len(args) > _MAX_PARAMS:
            self.send()
        self._parts.append(sql)
        self._args.extend(args)

    def send(self) -> None:
        """Run what was gathered, as one statement."""
        parts, args = self._parts, self._args
        self._parts, self._args = [], []
        if len(parts) == 1:
            execute_whole(self.conn, parts[0], args)
        elif parts:
            execute_whole(self.conn, "WITH " + ", ".join(
                f"s{i} AS ({p})" for i, p in enumerate(parts)) + " SELECT 1", args)


def insert_rows(c: psycopg.Connection[Any] | Combined, head: str, rows: Sequence[Sequence[Any]],
                tail: str = "", *, key: int | None = None) -> None:
    """``head VALUES (...), (...), ... tail`` for every row of ``rows`` (``head``: e.g.
    ``INSERT INTO t(a, b)``; ``tail``: e.g. ``ON CONFLICT DO NOTHING``), as few single
    statements as the parameter limit allows: one round trip, not one a row.

    Not psycopg's ``executemany``: that sends its rows as a pipelined batch whose Sync
    comes last, and a process frozen (SIGSTOP, a paused VM) in the middle of sending it
    leaves the server waiting for the rest without counting the wait as idle in the
    transaction, so ``idle_in_transaction_session_timeout`` never frees the store's write
    lock. One statement is sent whole, with its Sync (:func:`execute_whole`).

    ``key``: the index of the column an ``ON CONFLICT ... DO UPDATE`` tail is keyed on;
    rows sharing a key are cut to the last of them, which is what one statement a row
    leaves (one statement may not update a row twice)."""
    if not rows:
        return
    if key is not None:
        rows = list({r[key]: r for r in rows}.values())
    width = len(rows[0])
    one = "(" + ", ".join(["%s"] * width) + ")"
    per = max(1, _MAX_PARAMS // width)
    for at in range(0, len(rows), per):
        page = rows[at:at + per]
        sql, args = f"{head} VALUES {', '.join([one] * len(page))} {tail}", [
            v for r in page for v in r]
        if isinstance(c, Combined):
            c.execute(sql, args)
        else:
            execute_whole(c, sql, args)


_PLACEHOLDER = re.compile(r"%([%s])")
"""A parameter's place (``%s``) or a percent sign (``%%``) in a statement."""
_WHOLE = 7000
"""Bytes above which libpq may send a statement's messages in more than one write: it
writes out its buffer whenever that passes 8 KiB while it builds them."""


def execute_whole(c: psycopg.Connection[Any], sql: str, args: Sequence[Any]
                  ) -> psycopg.Cursor[Any]:
    """Run ``sql`` (``%s`` placeholders) with ``args`` inside a write
    transaction, such that a process frozen while sending it leaves the server idle in
    the transaction (so that ``idle_in_transaction_session_timeout`` can end it).

    A statement with parameters is several messages (Parse, Bind, Execute, Sync); the
    server arms that timer only once it has answered a Sync, so a process frozen after
    sending part of them holds the store's write lock for as long as it sleeps. A small
    statement goes out in one write, which a freeze cannot split; a larger one is sent
    as one simple-protocol message, its values written in as literals by psycopg's
    quoting: the server reads a message whole, with the timer armed, before running it."""
    size = 64 + len(sql) + sum(_size(a) for a in args)
    if size <= _WHOLE:
        if len(args) > 50:
            # psycopg caches its parse of a query of at most 50 parameters; a step's write
            # has more, and parsing it again each time cost about 100 us of CPU a commit.
            return psycopg.RawCursor(c).execute(_numbered(sql), args)
        return c.execute(sql, args)
    template = _PLACEHOLDER.sub(lambda m: "%" if m[1] == "%" else "{}",
                                sql.replace("{", "{{").replace("}", "}}"))
    return c.execute(pg_sql.SQL(template).format(*map(pg_sql.Literal, args)), prepare=False)


@functools.lru_cache(maxsize=512)
def _numbered(sql: str) -> str:
    """``sql`` with PostgreSQL's own placeholders (``$1``, ``$2``...) for ``%s``."""
    n = itertools.count(1)
    return _PLACEHOLDER.sub(lambda m: "%" if m[1] == "%" else f"${next(n)}", sql)


def _size(a: Any) -> int:
    """About how many bytes ``a`` takes as a parameter of a statement (at least)."""
    if isinstance(a, bytes):
        return 6 + len(a)
    if isinstance(a, str):
        return 6 + (len(a) if a.isascii() else 4 * len(a))
    if isinstance(a, (list, tuple)):
        return 24 + sum(_size(x) for x in a)
    return 16
