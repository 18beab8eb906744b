"""The SQLite store's share of a swarm's world: messages, versioned writes, provenance links.

Written with a run's events in the same transaction (``Write.messages``,
``Write.versions``, ``Write.transitions``), so a message exists, a blackboard
value changes and a file's last writer is recorded exactly when the event
saying so commits. Links (causes that cross runs, plus epoch and fork
lineage) are derived here from the events themselves, so they cannot
disagree with the hash-chained journal: ``audit verify`` re-derives them.
"""

from __future__ import annotations

import sqlite3
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any, Final

from tether.core.canonical import dumps, loads
from tether.core.ids import ulid_bytes, ulid_str
from tether.core.links import LINK_KINDS, derive_links
from tether.errors import Conflict, LeaseLost
from tether.store.records import (
    EffectRef,
    Link,
    MessageRef,
    MessageRow,
    Produced,
    Reached,
    VersionRef,
    VersionRow,
    Write,
)
from tether.store.sqlite_base import SQLiteBase

MESSAGE_COLS = "id, swarm, sender, epoch, step, recipient, topic, body, status, created, claim, received"
VERSION_COLS = "ns, key, version, event, run, epoch, step, value, hash, status, suspect, created"
LINK_COLS = ("src_rk, src_epoch, src_step, src_event, dst_rk, dst_epoch, dst_step, dst_event, "
             "kind")

_TRANSITION_COLUMNS: Final = {("messages", "status"), ("versions", "status"),
                              ("versions", "suspect")}


def row_message(r: Sequence[Any]) -> MessageRow:
    return MessageRow(id=r[0], swarm=r[1], sender=r[2], epoch=r[3], step=r[4], recipient=r[5],
                      topic=r[6], body=loads(r[7]), status=r[8], created=r[9], claim=r[10],
                      received=r[11])


def row_version(r: Sequence[Any]) -> VersionRow:
    return VersionRow(ns=r[0], key=r[1], version=r[2], event=r[3], run=r[4], epoch=r[5],
                      step=r[6], value=loads(r[7]) if r[7] is not None else None, hash=r[8],
                      status=r[9], suspect=bool(r[10]), created=r[11])


class SQLiteSwarm(SQLiteBase):
    """Messages, versions and links (mixed into SQLiteStore)."""

    # -- inside a commit ---------------------------------------------------
    def _check_transitions(self, c: sqlite3.Connection, w: Write) -> BaseException | None:
        for t in w.transitions:
            if (t.table, t.column) not in _TRANSITION_COLUMNS:
                return Conflict(f"run {w.run}: cannot change {t.table}.{t.column}")
            if t.only_from is None or not t.ids:
                continue
            key = "id" if t.table == "messages" else "event"
            marks = ",".join("?" * len(t.ids))
            for rid, cur in c.execute(f"SELECT {key}, {t.column} FROM {t.table} "
                                      f"WHERE {key} IN ({marks})", t.ids):
                if cur not in t.only_from:
                    return Conflict(f"run {w.run}: {t.table[:-1]} {rid} is {cur!r} now, not "
                                    f"{' or '.join(map(str, t.only_from))}; it changed since the "
                                    "plan was made: look again and retry")
        return None

    def _apply_swarm(self, c: sqlite3.Connection, w: Write, rk: int) -> None:
        if w.messages:
            c.executemany(f"INSERT INTO messages({MESSAGE_COLS}) VALUES(?,?,?,?,?,?,?,?,?,?,?,?)",
                          [(m.id, m.swarm, m.sender, m.epoch, m.step, m.recipient, m.topic,
                            dumps(m.body), m.status, m.created, m.claim, m.received)
                           for m in w.messages])
        for v in w.versions:
            c.execute(f"INSERT INTO versions({VERSION_COLS}) SELECT ?, ?, "
                      "COALESCE(MAX(version), 0) + 1, ?, ?, ?, ?, ?, ?, ?, ?, ? "
                      "FROM versions WHERE ns = ? AND key = ?",
                      (v.ns, v.key, v.event, v.run, v.epoch, v.step,
                       None if v.value is None and v.ns.startswith("file:") else dumps(v.value),
                       v.hash, v.status, int(v.suspect), v.created, v.ns, v.key))
        for t in w.transitions:
            key = "id" if t.table == "messages" else "event"
            value = int(t.value) if t.column == "suspect" else t.value
            c.executemany(f"UPDATE {t.table} SET {t.column} = ? WHERE {key} = ?",
                          [(value, i) for i in t.ids])
        links = []
        for e in w.events:
            if not (e.causes and e.kind in LINK_KINDS) and e.kind not in ("rollback",
                                                                          "run.started"):
                continue
            for kind, src_run, s_epoch, s_step, s_event in derive_links(
                    e, lambda cid: self._event_at(c, cid)):
                src_rk = self._rk(src_run, c)
                if src_rk is None:
                    continue  # a fork of a run this store does not have (copied stores)
                links.append((src_rk, s_epoch, s_step, ulid_bytes(s_event), rk, e.epoch,
                              e.step, ulid_bytes(e.id), kind))
        if links:
            c.executemany(f"INSERT INTO links({LINK_COLS}) VALUES(?,?,?,?,?,?,?,?,?)", links)

    def _event_at(self, c: sqlite3.Connection, event_id: str) -> tuple[str, int, int] | None:
        try:
            key = ulid_bytes(event_id)
        except (ValueError, OverflowError):
            return None
        row = c.execute("SELECT rk, epoch, step FROM events WHERE id = ?", (key,)).fetchone()
        return (self._run_id(row[0]), row[1], row[2]) if row else None

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
            row = c.execute("SELECT token FROM leases WHERE run = ?", (run,)).fetchone()
            if row is None or row[0] != fence:
                raise LeaseLost(f"run {run}: this process's lease (token {fence}) was taken "
                                "over; it cannot take messages")
            if limit is not None:  # what this call took before counts against its limit
                held = c.execute("SELECT COUNT(*) FROM messages WHERE recipient = ? AND "
                                 "claim = ?", (run, claim)).fetchone()[0]
                limit = max(0, limit - held)
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

    # -- links ---------------------------------------------------------------
    def links_from(self, run: str, epoch: int, from_step: int) -> list[Link]:
        """Links whose source is a step of (run, epoch) at or after ``from_step``."""
        rk = self._rk(run)
        if rk is None:
            return []
        rows = self._read(f"SELECT {LINK_COLS} FROM links WHERE src_rk = ? AND src_epoch = ? "
                          "AND src_step >= ?", (rk, epoch, from_step))
        return [self._link(r) for r in rows]

    def downstream(self, run: str, epoch: int, step: int) -> list[Reached]:
        """Every (run, epoch) the work of ``step`` on reached, the origin first.

        A breadth-first walk over the links on their integer keys; a (run, epoch)
        reached again at an earlier step is expanded again for the steps not yet
        walked only, so each link is read about once. Ids are made text only for the
        one link kept per (run, epoch).
        """
        rk0 = self._rk(run)
        if rk0 is None:
            return [Reached(run, epoch, step, None)]
        first: dict[tuple[int, int], int] = {}
        via: dict[tuple[int, int], tuple[Any, ...] | None] = {}
        order: list[tuple[int, int]] = []
        todo: deque[tuple[int, int, int, tuple[Any, ...] | None]] = deque([(rk0, epoch, step,
                                                                            None)])
        c = self._conn()
        try:
            while todo:
                rk, ep, s, link = todo.popleft()
                prev = first.get((rk, ep))
                if prev is not None and prev <= s:
                    continue
                if prev is None:
                    order.append((rk, ep))
                first[(rk, ep)] = s
                via[(rk, ep)] = link
                # Only the earliest step reached in each (run, epoch) matters: SQLite gives
                # the other columns of the row where MIN() is, so one row per target.
                sql = (f"SELECT {LINK_COLS}, MIN(dst_step) FROM links WHERE src_rk = ? AND "
                       "src_epoch = ? AND src_step >= ?")
                args: tuple[int, ...] = (rk, ep, s)
                if prev is not None:
                    sql += " AND src_step < ?"
                    args = (rk, ep, s, prev)
                for r in c.execute(sql + " GROUP BY dst_rk, dst_epoch", args):
                    todo.append((r[4], r[5], r[6], r))
        except sqlite3.Error as exc:
            raise self._translate(exc) from exc
        out = []
        for rk, ep in order:
            v = via[(rk, ep)]
            out.append(Reached(self._run_id(rk), ep, first[(rk, ep)],
                               None if v is None else self._link(v)))
        return out

    def _link(self, r: Sequence[Any]) -> Link:
        return Link(kind=r[8], src_run=self._run_id(r[0]), src_epoch=r[1], src_step=r[2],
                    src_event=ulid_str(bytes(r[3])), dst_run=self._run_id(r[4]),
                    dst_epoch=r[5], dst_step=r[6], dst_event=ulid_str(bytes(r[7])))

    def produced(self, run: str, epoch: int, from_step: int) -> Produced:
        """The effects, messages and versions of (run, epoch) at or after ``from_step``."""
        args = (run, epoch, from_step)
        with self._strict_text():
            return self._produced(args)

    def _produced(self, args: tuple[str, int, int]) -> Produced:
        return Produced(
            [EffectRef(*r) for r in self._read(
                "SELECT id, step, tool, effect, status FROM effects WHERE run = ? AND epoch = ? "
                "AND step >= ? ORDER BY step, idx", args)],
            [MessageRef(*r) for r in self._read(
                "SELECT id, step, recipient, status FROM messages WHERE sender = ? AND "
                "epoch = ? AND step >= ? ORDER BY id", args)],
            [VersionRef(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6])) for r in self._read(
                "SELECT ns, key, version, step, status, event, suspect FROM versions WHERE "
                "run = ? AND epoch = ? AND step >= ? ORDER BY step, n", args)])

    def links(self) -> list[Link]:
        """Every link (for the audit, which re-derives them from the events)."""
        return [self._link(r) for r in self._read(f"SELECT {LINK_COLS} FROM links ORDER BY rowid")]


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
