"""The SQLite store's share of signed checkpoints: the leaves in commit order, and the
table of checkpoints (migration 11) with the next seal's cache beside each (migration 13);
and the chains read in bulk for the audit.

Commit order is the batch chain's: every commit (a run's events, or one event of
the store chain) appends one numbered, hash-linked batch naming what it
committed, so the order survives a VACUUM (which may renumber the events'
rowids) and cannot be changed without breaking that chain. The events table is
read in one pass in rowid order, which is commit order in practice; a batch
whose events are not where the pass expects them (a store copied row by row,
say) is looked up by its index instead (tether.store.leaves), so the result never
depends on rowids.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from tether.core.settings import STORE_CHAIN
from tether.store.leaves import (
    SIGNED_COLS,
    LeafReads,
    leaf_span,
    next_signed,
    seal_cache_from,
    signed_from,
    signed_values,
    snapshot_name,
)
from tether.store.records import ChainRow
from tether.store.rows import chain_row
from tether.store.seal_records import LeafSpan, SealCache, SignedCheckpoint
from tether.store.sqlite_base import SQLiteBase

CHAIN_COLS = ("rk, seq, id, epoch, step, CAST(kind AS BLOB), time, CAST(actor AS BLOB), "
              "CAST(causes AS BLOB), payload, payload_hash, hash, seal")
"""The event columns :func:`~tether.store.rows.chain_row` reads, text as its bytes."""


class SQLiteSeals(SQLiteBase):
    """Leaves in commit order and the signed checkpoints' table; every chain read in bulk
    for the audit."""

    def chain_rows(self, *, part: tuple[float, float] = (0.0, 1.0)) -> Iterator[ChainRow]:
        # One cursor over the (rk, seq) index in pages: a query per run costs more than
        # its rows when runs are short, and all rows at once would hold every payload.
        with self.snapshot(), self._guard():
            lo, hi = self._run_at(part[0]), self._run_at(part[1])
            # Text as bytes, decoded leniently below: the connection's lenient decoder is a
            # Python call per value, a fifth of reading a row.
            cur = self._conn().execute(f"SELECT {CHAIN_COLS} FROM events WHERE rk >= ? "
                                       "AND rk < ? ORDER BY rk, seq", (lo, hi))
            run_id, rk, run = self._run_id, None, ""
            while rows := cur.fetchmany(1000):
                for r in rows:
                    if r[0] != rk:
                        rk, run = r[0], run_id(r[0])
                    yield chain_row(r, run)

    def _run_at(self, fraction: float) -> int:
        """The run key of the event at ``fraction`` of all in (rk, seq) order: parts split
        there, between whole runs. The ends are open, so no run falls outside both."""
        if fraction <= 0.0:
            return -(2**63)
        if fraction >= 1.0:
            return 2**63 - 1
        at = int(self.chain_size() * fraction)
        row = self._conn().execute("SELECT rk FROM events ORDER BY rk, seq LIMIT 1 OFFSET ?",
                                   (at,)).fetchone()
        return 2**63 - 1 if row is None else int(row[0])

    def chain_size(self) -> int:
        with self._guard():
            return int(self._conn().execute("SELECT count(*) FROM events").fetchone()[0])

    def snapshot_mark(self) -> str:
        with self._guard():
            c = self._conn()
            batch = c.execute("SELECT n, hash FROM batches ORDER BY n DESC LIMIT 1").fetchone()
            ckpt = c.execute("SELECT max(rowid) FROM checkpoints").fetchone()[0]
            chunk = c.execute("SELECT max(rowid) FROM chunks").fetchone()[0]
        return snapshot_name(batch, ckpt, chunk)

    def reader_url(self) -> str | None:
        return f"sqlite:///{self.path.resolve()}"

    def leaf_hashes(self) -> list[bytes]:
        """Every event's hash in commit order (see :meth:`Store.leaf_hashes`)."""
        return self.leaves_since(0).hashes

    def leaves_since(self, batch: int) -> LeafSpan:
        """The events committed after batch ``batch`` (see :meth:`Store.leaves_since`)."""
        with self.snapshot():
            batches = self._read("SELECT n, entries, hash FROM batches WHERE n >= ? "
                                 "ORDER BY n", (batch,))
            return leaf_span(batch, batches, self._rk(STORE_CHAIN), LeafReads(
                self._rows_from, self._settings_from, self._span, self._run_id))

    def _rows_from(self, rk: int, seq: int) -> list[tuple[Any, ...]]:
        """The events table in rowid order from event (rk, seq) on: commit order in
        practice, checked entry by entry by :func:`leaf_span`."""
        at = self._read("SELECT rowid FROM events WHERE rk = ? AND seq = ?", (rk, seq))
        if not at:
            return []  # missing: every entry is looked up, and the lookup names it
        return self._read("SELECT rk, seq, hash FROM events WHERE rowid >= ? ORDER BY rowid",
                          (at[0][0],))

    def _settings_from(self, first: int, last: int) -> dict[int, bytes]:
        rows = self._read("SELECT n, hash FROM store_events WHERE n BETWEEN ? AND ?",
                          (first, last))
        return dict(rows)

    def _span(self, rk: int, first: int, last: int) -> list[tuple[Any, ...]]:
        return self._read("SELECT seq, hash FROM events WHERE rk = ? AND seq BETWEEN ? "
                          "AND ? ORDER BY seq", (rk, first, last))

    def event_count(self) -> int:
        row = self._read("SELECT (SELECT count(*) FROM events) + "
                         "(SELECT count(*) FROM store_events)")
        return int(row[0][0])

    def signed_checkpoints(self, *, after: int = 0) -> list[SignedCheckpoint]:
        return signed_from(self._read(f"SELECT {SIGNED_COLS} FROM signed_checkpoints "
                                      "WHERE n > ? ORDER BY n", (after,)))

    def seal_cache(self) -> SealCache | None:
        rows = self._read("SELECT n, batch, batch_hash, frontier FROM signed_checkpoints "
                          "ORDER BY n DESC LIMIT 1")
        return seal_cache_from(rows[0] if rows else None)

    def add_signed_checkpoint(self, size: int, root: str, note: str, proof: Sequence[str],
                              created: float, *, after: int,
                              cache: tuple[int, str, bytes] | None = None) -> SignedCheckpoint:
        with self._tx() as c:
            row = c.execute("SELECT max(n) FROM signed_checkpoints").fetchone()
            n = next_signed(int(row[0] or 0), after)
            c.execute(f"INSERT INTO signed_checkpoints({SIGNED_COLS}, batch, batch_hash, "
                      "frontier) "
                      "VALUES(?,?,?,?,?,?,?,?,?)",
                      signed_values(n, size, root, note, proof, created, cache))
        return SignedCheckpoint(n, size, root, note, tuple(proof), created)
