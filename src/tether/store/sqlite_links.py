"""The SQLite store's provenance links: causes that cross runs, epochs and forks.

Links are derived from the events themselves when they commit (``derive_links``),
so they cannot disagree with the hash-chained journal: ``audit verify``
re-derives them. ``downstream`` walks them forward: what the work of a step
reached.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from tether.core.ids import ulid_bytes
from tether.store.links import LINK_COLS, Row, link_rows, row_link, walk
from tether.store.records import EffectRef, Link, MessageRef, Produced, Reached, VersionRef, Write
from tether.store.sqlite_base import SQLiteBase


class SQLiteLinks(SQLiteBase):
    """Provenance links, and what a run produced (mixed into SQLiteStore)."""

    # -- inside a commit ---------------------------------------------------
    def _apply_links(self, c: sqlite3.Connection, w: Write, rk: int) -> None:
        """The links the write's events make (derived from them: see the module)."""
        links = link_rows(w.events, rk, lambda cid: self._event_at(c, cid),
                          lambda run: self._rk(run, c))
        if links:
            c.executemany(f"INSERT INTO links({LINK_COLS}) VALUES(?,?,?,?,?,?,?,?,?)", links)

    def _event_at(self, c: sqlite3.Connection, event_id: str) -> tuple[str, int, int] | None:
        try:
            key = ulid_bytes(event_id)
        except (ValueError, OverflowError):
            return None
        row = c.execute("SELECT rk, epoch, step FROM events WHERE id = ?", (key,)).fetchone()
        return (self._run_id(row[0]), row[1], row[2]) if row else None

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
        """Every (run, epoch) the work of ``step`` on reached, the origin first."""
        rk0 = self._rk(run)
        if rk0 is None:
            return [Reached(run, epoch, step, None)]
        try:
            reached = _walk(self._conn(), rk0, epoch, step)
        except sqlite3.Error as exc:
            raise self._translate(exc) from exc
        # Ids are made text only for the one link kept per (run, epoch).
        return [Reached(self._run_id(rk), ep, s, None if link is None else self._link(link))
                for (rk, ep), (s, link) in reached.items()]

    def _link(self, r: Sequence[Any]) -> Link:
        return row_link(r, self._run_id)

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






def _walk(c: sqlite3.Connection, rk0: int, epoch: int,
          step: int) -> dict[tuple[int, int], tuple[int, Row | None]]:
    """:func:`tether.store.links.walk` over this store's links."""
    def targets(rk: int, ep: int, s: int, before: int | None) -> list[Row]:
        # Only the earliest step reached in each (run, epoch) matters: SQLite gives the
        # other columns of the row where MIN() is, so one row per target.
        sql = (f"SELECT {LINK_COLS}, MIN(dst_step) FROM links WHERE src_rk = ? AND "
               "src_epoch = ? AND src_step >= ?")
        args: tuple[int, ...] = (rk, ep, s)
        if before is not None:
            sql += " AND src_step < ?"
            args = (rk, ep, s, before)
        return c.execute(sql + " GROUP BY dst_rk, dst_epoch", args).fetchall()

    return walk(rk0, epoch, step, targets)
