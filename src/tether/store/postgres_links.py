"""The PostgreSQL store's provenance links: causes that cross runs, epochs and forks.

The port of :mod:`tether.store.sqlite_links`: links are derived from the events
themselves when they commit (``derive_links``), so they cannot disagree with the
hash-chained journal (``audit verify`` re-derives them); ``downstream`` walks them
forward: what the work of a step reached.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from tether.core.ids import ulid_bytes
from tether.store.links import LINK_COLS, Row, link_rows, row_link, walk
from tether.store.postgres_base import PGBase
from tether.store.postgres_send import insert_rows
from tether.store.records import EffectRef, Link, MessageRef, Produced, Reached, VersionRef, Write


class PGLinks(PGBase):
    """Provenance links, and what a run produced (mixed into PostgresStore)."""

    # -- inside a commit ---------------------------------------------------
    def _apply_links(self, c: psycopg.Connection[Any], w: Write, rk: int) -> None:
        """The links the write's events make (derived from them: see the module)."""
        links = link_rows(w.events, rk, lambda cid: self._event_at(c, cid),
                          lambda run: self._rk(run, c))
        insert_rows(c, f"INSERT INTO links({LINK_COLS})", links)  # one statement (insert_rows)

    def _event_at(self, c: psycopg.Connection[Any], event_id: str
                  ) -> tuple[str, int, int] | None:
        try:
            key = ulid_bytes(event_id)
        except (ValueError, OverflowError):
            return None
        row = c.execute("SELECT rk, epoch, step FROM events WHERE id = %s", (key,)).fetchone()
        return (self._run_id(row[0]), row[1], row[2]) if row else None

    # -- links ---------------------------------------------------------------
    def links_from(self, run: str, epoch: int, from_step: int) -> list[Link]:
        """Links whose source is a step of (run, epoch) at or after ``from_step``."""
        rk = self._rk(run)
        if rk is None:
            return []
        rows = self._read(f"SELECT {LINK_COLS} FROM links WHERE src_rk = %s AND src_epoch = %s "
                          "AND src_step >= %s", (rk, epoch, from_step))
        return [self._link(r) for r in rows]

    def downstream(self, run: str, epoch: int, step: int) -> list[Reached]:
        """Every (run, epoch) the work of ``step`` on reached, the origin first."""
        rk0 = self._rk(run)
        if rk0 is None:
            return [Reached(run, epoch, step, None)]
        with self._guard():
            reached = _walk(self._conn(), rk0, epoch, step)
        # Ids are made text only for the one link kept per (run, epoch).
        return [Reached(self._run_id(rk), ep, s, None if link is None else self._link(link))
                for (rk, ep), (s, link) in reached.items()]

    def _link(self, r: Sequence[Any]) -> Link:
        return row_link(r, self._run_id)

    def produced(self, run: str, epoch: int, from_step: int) -> Produced:
        """The effects, messages and versions of (run, epoch) at or after ``from_step``."""
        args = (run, epoch, from_step)
        return Produced(
            [EffectRef(*r) for r in self._read(
                "SELECT id, step, tool, effect, status FROM effects WHERE run = %s AND "
                "epoch = %s AND step >= %s ORDER BY step, idx", args)],
            [MessageRef(*r) for r in self._read(
                "SELECT id, step, recipient, status FROM messages WHERE sender = %s AND "
                "epoch = %s AND step >= %s ORDER BY id", args)],
            [VersionRef(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6])) for r in self._read(
                "SELECT ns, key, version, step, status, event, suspect FROM versions WHERE "
                "run = %s AND epoch = %s AND step >= %s ORDER BY step, n", args)])

    def links(self) -> list[Link]:
        """Every link (for the audit, which re-derives them from the events)."""
        return [self._link(r) for r in self._read(f"SELECT {LINK_COLS} FROM links ORDER BY rowid")]


def _walk(c: psycopg.Connection[Any], rk0: int, epoch: int,
          step: int) -> dict[tuple[int, int], tuple[int, Row | None]]:
    """:func:`tether.store.links.walk` over this store's links."""
    def targets(rk: int, ep: int, s: int, before: int | None) -> list[Row]:
        # Only the earliest step reached in each (run, epoch) matters: DISTINCT ON keeps
        # the first row of each target in this order, one row per target, as SQLite's
        # MIN() with bare columns does (of tied rows, the first in links_src order), the
        # targets in key order as SQLite's GROUP BY gives them.
        sql = (f"SELECT DISTINCT ON (dst_rk, dst_epoch) {LINK_COLS} FROM links WHERE "
               "src_rk = %s AND src_epoch = %s AND src_step >= %s")
        args: tuple[int, ...] = (rk, ep, s)
        if before is not None:
            sql += " AND src_step < %s"
            args = (rk, ep, s, before)
        return c.execute(sql + " ORDER BY dst_rk, dst_epoch, dst_step, src_step, rowid",
                         args).fetchall()

    return walk(rk0, epoch, step, targets)
