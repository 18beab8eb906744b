"""The PostgreSQL store's provenance links: causes that cross runs, epochs and forks.

The port of :mod:`tether.store.sqlite_links`: links are derived from the events
themselves when they commit (``derive_links``), so they cannot disagree with the
hash-chained journal (``audit verify`` re-derives them); ``downstream`` walks them
forward: what the work of a step reached.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

import psycopg

from tether.core.ids import ulid_bytes, ulid_str
from tether.core.links import LINK_KINDS, derive_links
from tether.store.postgres_base import PGBase
from tether.store.records import EffectRef, Link, MessageRef, Produced, Reached, VersionRef, Write
from tether.store.sqlite_links import LINK_COLS

_Row = tuple[Any, ...]


class PGLinks(PGBase):
    """Provenance links, and what a run produced (mixed into PostgresStore)."""

    # -- inside a commit ---------------------------------------------------
    def _apply_links(self, c: psycopg.Connection[Any], w: Write, rk: int) -> None:
        """The links the write's events make (derived from them: see the module)."""
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
            with c.cursor() as cur:
                cur.executemany(f"INSERT INTO links({LINK_COLS}) "
                                "VALUES(%s,%s,%s,%s,%s,%s,%s,%s,%s)", links)

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
        return Link(kind=r[8], src_run=self._run_id(r[0]), src_epoch=r[1], src_step=r[2],
                    src_event=ulid_str(bytes(r[3])), dst_run=self._run_id(r[4]),
                    dst_epoch=r[5], dst_step=r[6], dst_event=ulid_str(bytes(r[7])))

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
          step: int) -> dict[tuple[int, int], tuple[int, _Row | None]]:
    """The earliest step reached in each (run key, epoch), with the link that reached it,
    in the order first reached (the origin first).

    A breadth-first walk over the links on their integer keys; a (run, epoch) reached
    again at an earlier step is expanded again for the steps not yet walked only, so
    each link is read about once (as :func:`tether.store.sqlite_links._walk`).
    """
    reached: dict[tuple[int, int], tuple[int, _Row | None]] = {}
    todo: deque[tuple[int, int, int, _Row | None]] = deque([(rk0, epoch, step, None)])
    while todo:
        rk, ep, s, link = todo.popleft()
        prev = reached[(rk, ep)][0] if (rk, ep) in reached else None
        if prev is not None and prev <= s:
            continue
        reached[(rk, ep)] = (s, link)  # a dict keeps the order a key was first set in
        # Only the earliest step reached in each (run, epoch) matters: DISTINCT ON keeps
        # the first row of each target in this order, one row per target, as SQLite's
        # MIN() with bare columns does (of tied rows, the first in links_src order), the
        # targets in key order as SQLite's GROUP BY gives them.
        sql = (f"SELECT DISTINCT ON (dst_rk, dst_epoch) {LINK_COLS} FROM links WHERE "
               "src_rk = %s AND src_epoch = %s AND src_step >= %s")
        args: tuple[int, ...] = (rk, ep, s)
        if prev is not None:
            sql += " AND src_step < %s"
            args = (rk, ep, s, prev)
        for r in c.execute(sql + " ORDER BY dst_rk, dst_epoch, dst_step, src_step, rowid", args):
            todo.append((r[4], r[5], r[6], tuple(r)))
    return reached
