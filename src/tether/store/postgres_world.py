"""The PostgreSQL store's share of a swarm's world: messages and versioned writes, and
the reads of events across runs (by kind, by time window).

The port of :mod:`tether.store.sqlite_world`, row for row: written with a run's events
in the same transaction (``Write.messages``, ``Write.versions``, ``Write.transitions``),
so a message exists, a blackboard value changes and a file's last writer is recorded
exactly when the event saying so commits. A transition (a message delivered, a version
undone or suspect) applies only from the states its plan saw, else the write is refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import psycopg

from tether.core.events import Event
from tether.store.postgres_base import PGBase
from tether.store.postgres_send import execute_whole, insert_rows
from tether.store.records import MessageRow, VersionRow, Write
from tether.store.rows import (
    EVENT_COLS,
    MESSAGE_COLS,
    VERSION_COLS,
    message_values,
    row_event,
    row_message,
    row_version,
    stamp_seconds,
    stamp_us,
    version_values,
    window_us,
)
from tether.store.schema import RARE_KINDS, RARE_SQL
from tether.store.writes import (
    claim_limit,
    claim_refusal,
    transition_key,
    transition_value,
    transitions_refusal,
)


class PGWorld(PGBase):
    """Messages, versions and cross-run event reads (mixed into PostgresStore)."""

    # -- events across runs ------------------------------------------------
    def events_of_kinds(self, kinds: Sequence[str], *, run: str | None = None,
                        since: float | None = None) -> list[Event]:
        # Kinds all among RARE_KINDS repeat the partial index events_rare's literal term:
        # PostgreSQL, like SQLite, proves a partial index usable only from such a term.
        sql = f"SELECT {EVENT_COLS} FROM events WHERE kind = ANY(%s)"
        if set(kinds) <= set(RARE_KINDS):
            sql += f" AND kind IN ({RARE_SQL})"
        args: list[Any] = [list(kinds)]
        if run is not None:
            rk = self._rk(run)
            if rk is None:
                return []
            sql += " AND rk = %s"
            args.append(rk)
        if since is not None:
            sql += " AND time >= %s"
            args.append(stamp_us(since))
        rows = self._read(sql + " ORDER BY time, rk, seq", args)
        return [row_event(r, self._run_id(r[0])) for r in rows]

    def latest_event_time(self) -> float | None:
        rows = self._read("SELECT MAX(time) FROM events")  # the events_time index's last entry
        return stamp_seconds(rows[0][0]) if rows else None

    def events_in_window(self, since: float | None, until: float | None, *,
                         runs: Sequence[str] | None = None, kinds: Sequence[str] | None = None,
                         limit: int | None = None) -> list[Event]:
        # The events_time index bounds the read to the window: an operator's question
        # about one night costs what the night holds, not the store's size.
        sql = f"SELECT {EVENT_COLS} FROM events WHERE time >= %s AND time < %s"
        args: list[Any] = list(window_us(since, until))
        if runs is not None:
            rks = [rk for rk in (self._rk(r) for r in runs) if rk is not None]
            if not rks:
                return []
            sql += " AND rk = ANY(%s)"
            args.append(rks)
        if kinds is not None:
            if not kinds:
                return []
            sql += " AND kind = ANY(%s)"
            args.append(list(kinds))
        sql += " ORDER BY time, rk, seq"
        if limit is not None and limit >= 0:  # negative: none, as in SQLite
            sql += " LIMIT %s"
            args.append(limit)
        return [row_event(r, self._run_id(r[0])) for r in self._read(sql, args)]

    # -- inside a commit ---------------------------------------------------
    def _check_transitions(self, c: psycopg.Connection[Any], w: Write) -> BaseException | None:
        """Conflict if a row a transition names is not in a state its plan saw."""
        return transitions_refusal(w, lambda t, key: c.execute(
            f"SELECT {key}, {t.column} FROM {t.table} WHERE {key} = ANY(%s)", (list(t.ids),)))

    def _apply_world(self, c: psycopg.Connection[Any], w: Write) -> None:
        """The write's messages, versions and transitions (inside its commit)."""
        insert_rows(c, f"INSERT INTO messages({MESSAGE_COLS})",
                    [message_values(m) for m in w.messages])
        for v in w.versions:
            # Numbered from the key's last version: commits hold the store's write lock,
            # so no other commit numbers the same key meanwhile.
            execute_whole(c, f"INSERT INTO versions({VERSION_COLS}) SELECT %s, %s, "
                          "COALESCE(MAX(version), 0) + 1, %s, %s, %s, %s, %s, %s, %s, %s, %s "
                          "FROM versions WHERE ns = %s AND key = %s",
                          (*version_values(v), v.ns, v.key))
        for t in w.transitions:
            if t.ids:  # one statement for all the rows, not a pipelined batch (insert_rows)
                c.execute(f"UPDATE {t.table} SET {t.column} = %s "
                          f"WHERE {transition_key(t)} = ANY(%s)",
                          (transition_value(t), list(t.ids)))

    # -- messages ------------------------------------------------------------
    def claim_messages(self, run: str, fence: int, claim: str, now: float,
                       limit: int | None = None) -> list[MessageRow]:
        """Take the run's pending messages (oldest first) for one receive call.

        Idempotent per ``claim``: called again after a crash, it returns what that
        call took before plus anything new (``limit`` counts both), so nothing taken
        is lost unjournaled. The run's row is left alone (see
        :meth:`tether.store.sqlite_world.SQLiteWorld.claim_messages`).
        """
        with self._tx() as c:
            refused = claim_refusal(run, fence, c.execute(
                "SELECT token FROM leases WHERE run = %s", (run,)).fetchone())
            if refused is not None:
                raise refused
            if limit is not None:  # what this call took before counts against its limit
                limit = claim_limit(limit, c.execute(
                    "SELECT COUNT(*) FROM messages WHERE recipient = %s AND claim = %s",
                    (run, claim)).fetchone())
            # LIMIT NULL is no limit in PostgreSQL (SQLite's -1).
            c.execute("UPDATE messages SET status = 'delivered', claim = %s, received = %s "
                      "WHERE id IN (SELECT id FROM messages WHERE recipient = %s AND "
                      "status = 'pending' ORDER BY id LIMIT %s)", (claim, now, run, limit))
            rows = c.execute(f"SELECT {MESSAGE_COLS} FROM messages WHERE recipient = %s AND "
                             "claim = %s ORDER BY id", (run, claim)).fetchall()
        return [row_message(r) for r in rows]

    def messages(self, *, sender: str | None = None, recipient: str | None = None,
                 status: str | None = None, ids: Sequence[str] | None = None) -> list[MessageRow]:
        """Messages, oldest first, filtered by sender, recipient, status or ids."""
        if ids is not None and not ids:
            return []
        sql, args = _select(f"SELECT {MESSAGE_COLS} FROM messages", ("id", ids),
                            sender=sender, recipient=recipient, status=status)
        return [row_message(r) for r in self._read(sql + " ORDER BY id", args)]

    # -- versions -------------------------------------------------------------
    def current_versions(self, ns: str, keys: Iterable[str]) -> dict[str, VersionRow]:
        """The newest live version of each key that has one."""
        wanted = list(keys)
        if not wanted:
            return {}
        # One round trip for all the keys (SQLite's in-process probes cost nothing each;
        # a server's each cost a round trip): the newest live row per key.
        rows = self._read(f"SELECT DISTINCT ON (key) {VERSION_COLS} FROM versions "
                          "WHERE ns = %s AND key = ANY(%s) AND status = 'live' "
                          "ORDER BY key, version DESC", (ns, wanted))
        found = {r[1]: row_version(r) for r in rows}
        return {k: found[k] for k in wanted if k in found}

    def versions(self, *, ns: str | None = None, key: str | None = None, run: str | None = None,
                 events: Sequence[str] | None = None) -> list[VersionRow]:
        """Versions in commit order, filtered by namespace, key, writer run or writing event."""
        if events is not None and not events:
            return []
        sql, args = _select(f"SELECT {VERSION_COLS} FROM versions", ("event", events),
                            ns=ns, key=key, run=run)
        return [row_version(r) for r in self._read(sql + " ORDER BY n", args)]


def _select(select: str, among: tuple[str, Sequence[str] | None],
            **equal: str | None) -> tuple[str, list[Any]]:
    """``select`` filtered by ``column = %s`` for each value given, and ``column = ANY(...)``
    for ``among`` = (column, values) when values are given (names are ours, not input)."""
    given = {k: v for k, v in equal.items() if v is not None}
    where = [f"{k} = %s" for k in given]
    args: list[Any] = list(given.values())
    column, values = among
    if values is not None:
        where.append(f"{column} = ANY(%s)")
        args.append(list(values))
    return (f"{select} WHERE {' AND '.join(where)}" if where else select), args
