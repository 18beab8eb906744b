"""The SQLite store's share of a swarm's world: messages and versioned writes.

Written with a run's events in the same transaction (``Write.messages``,
``Write.versions``, ``Write.transitions``), so a message exists, a blackboard
value changes and a file's last writer is recorded exactly when the event
saying so commits. A transition (a message delivered, a version undone or
suspect) applies only from the states its plan saw, else the write is refused.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from tether.core.events import Event
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
from tether.store.sqlite_base import SQLiteBase
from tether.store.writes import (
    claim_limit,
    claim_refusal,
    transition_key,
    transition_value,
    transitions_refusal,
)


class SQLiteWorld(SQLiteBase):
    def events_of_kinds(self, kinds: Sequence[str], *, run: str | None = None,
                        since: float | None = None) -> list[Event]:
        # Kinds all among RARE_KINDS read the partial index events_rare (SQLite uses it only
        # when the query repeats its literal term); any other kind scans the events table
        # (operators' listings, which are rare); a run's own chain is read by (rk, seq).
        sql = f"SELECT {EVENT_COLS} FROM events WHERE kind IN ({','.join('?' * len(kinds))})"
        if set(kinds) <= set(RARE_KINDS):
            sql += f" AND kind IN ({RARE_SQL})"
        args: list[Any] = list(kinds)
        if run is not None:
            rk = self._rk(run)
            if rk is None:
                return []
            sql += " AND rk = ?"
            args.append(rk)
        if since is not None:
            sql += " AND time >= ?"
            args.append(stamp_us(since))
        rows = self._read(sql + " ORDER BY time, rk, seq", args)
        return [row_event(r, self._run_id(r[0])) for r in rows]

    def latest_event_time(self) -> float | None:
        rows = self._read("SELECT MAX(time) FROM events")  # the events_time index's last entry
        return stamp_seconds(rows[0][0]) if rows else None

    def events_in_window(self, since: float | None, until: float | None, *,
                         runs: Sequence[str] | None = None, kinds: Sequence[str] | None = None,
                         limit: int | None = None) -> list[Event]:
        # The events_time index (schema 8) bounds the read to the window: an operator's
        # question about one night costs what the night holds, not the store's size.
        sql = f"SELECT {EVENT_COLS} FROM events WHERE time >= ? AND time < ?"
        args: list[Any] = list(window_us(since, until))
        if runs is not None:
            rks = [rk for rk in (self._rk(r) for r in runs) if rk is not None]
            if not rks:
                return []
            # "+rk": not through the (rk, seq) index, which would read every event of the runs
            sql += f" AND +rk IN ({','.join('?' * len(rks))})"
            args += rks
        if kinds is not None:
            if not kinds:
                return []
            sql += f" AND kind IN ({','.join('?' * len(kinds))})"
            args += list(kinds)
        sql += " ORDER BY time, rk, seq"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [row_event(r, self._run_id(r[0])) for r in self._read(sql, args)]

    """Messages and versions (mixed into SQLiteStore)."""

    # -- inside a commit ---------------------------------------------------
    def _check_transitions(self, c: sqlite3.Connection, w: Write) -> BaseException | None:
        return transitions_refusal(w, lambda t, key: c.execute(
            f"SELECT {key}, {t.column} FROM {t.table} "
            f"WHERE {key} IN ({','.join('?' * len(t.ids))})", t.ids))

    def _apply_world(self, c: sqlite3.Connection, w: Write) -> None:
        if w.messages:
            c.executemany(f"INSERT INTO messages({MESSAGE_COLS}) "
                          "VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?)",
                          [message_values(m) for m in w.messages])
        for v in w.versions:
            c.execute(f"INSERT INTO versions({VERSION_COLS}) SELECT ?, ?, "
                      "COALESCE(MAX(version), 0) + 1, ?, ?, ?, ?, ?, ?, ?, ?, ? "
                      "FROM versions WHERE ns = ? AND key = ?",
                      (*version_values(v), v.ns, v.key))
        for t in w.transitions:
            key, value = transition_key(t), transition_value(t)
            c.executemany(f"UPDATE {t.table} SET {t.column} = ? WHERE {key} = ?",
                          [(value, i) for i in t.ids])
    # -- messages ------------------------------------------------------------
    def claim_messages(self, run: str, fence: int, claim: str, now: float,
                       limit: int | None = None) -> list[MessageRow]:
        """Take the run's pending messages (oldest first) for one receive call.

        Idempotent per ``claim``: called again after a crash, it returns what that
        call took before plus anything new (``limit`` counts both), so nothing taken
        is lost unjournaled. The run's row is left alone: its owner made its wake-up
        durable (``run.woke``) before the step, so a run that dies holding the messages
        is still runnable and the re-run call takes them back.
        """
        with self._tx() as c:
            refused = claim_refusal(run, fence, c.execute(
                "SELECT token FROM leases WHERE run = ?", (run,)).fetchone())
            if refused is not None:
                raise refused
            if limit is not None:  # what this call took before counts against its limit
                limit = claim_limit(limit, c.execute(
                    "SELECT COUNT(*) FROM messages WHERE recipient = ? AND claim = ?",
                    (run, claim)).fetchone())
            c.execute("UPDATE messages SET status = 'delivered', claim = ?, received = ? "
                      "WHERE id IN (SELECT id FROM messages WHERE recipient = ? AND "
                      "status = 'pending' ORDER BY id LIMIT ?)",
                      (claim, now, run, -1 if limit is None else limit))
            rows = c.execute(f"SELECT {MESSAGE_COLS} FROM messages WHERE recipient = ? AND "
                             "claim = ? ORDER BY id", (run, claim)).fetchall()
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
        out: dict[str, VersionRow] = {}
        for key in keys:
            rows = self._read(f"SELECT {VERSION_COLS} FROM versions WHERE ns = ? AND key = ? "
                              "AND status = 'live' ORDER BY version DESC LIMIT 1", (ns, key))
            if rows:
                out[key] = row_version(rows[0])
        return out

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
    """``select`` filtered by ``column = ?`` for each value given, and ``column IN (...)``
    for ``among`` = (column, values) when values are given (names are ours, not input)."""
    given = {k: v for k, v in equal.items() if v is not None}
    where = [f"{k} = ?" for k in given]
    args: list[Any] = list(given.values())
    column, values = among
    if values is not None:
        where.append(f"{column} IN ({','.join('?' * len(values))})")
        args.extend(values)
    return (f"{select} WHERE {' AND '.join(where)}" if where else select), args
