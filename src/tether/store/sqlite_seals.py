"""The SQLite store's share of signed checkpoints: the leaves in commit order, and the
table of checkpoints (migration 11) with the next seal's cache beside each (migration 13);
and the chains read in bulk for the audit.

Commit order is the batch chain's: every commit (a run's events, or one event of
the store chain) appends one numbered, hash-linked batch naming what it
committed, so the order survives a VACUUM (which may renumber the events'
rowids) and cannot be changed without breaking that chain. The events table is
read in one pass in rowid order, which is commit order in practice; a batch
whose events are not where the pass expects them (a store copied row by row,
say) is looked up by its index instead, so the result never depends on rowids.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from tether.core.canonical import dumps, loads
from tether.core.settings import STORE_CHAIN
from tether.errors import Conflict, StoreCorrupt
from tether.store.records import ChainRow
from tether.store.seal_records import LeafSpan, SealCache, SignedCheckpoint
from tether.store.sqlite_base import SQLiteBase
from tether.store.sqlite_rows import CHAIN_COLS, chain_row

_COLS = "n, size, root, note, proof, created"


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
        n, h = (batch[0], bytes(batch[1]).hex()) if batch else (0, "")
        return f"batch {n} {h} checkpoint {ckpt} chunk {chunk}"

    def reader_url(self) -> str | None:
        return f"sqlite:///{self.path.resolve()}"

    def leaf_hashes(self) -> list[bytes]:
        """Every event's hash in commit order (see :meth:`Store.leaf_hashes`)."""
        return self.leaves_since(0).hashes

    def leaves_since(self, batch: int) -> LeafSpan:
        """The events committed after batch ``batch`` (see :meth:`Store.leaves_since`)."""
        with self.snapshot():
            batches = self._read("SELECT n, entries, hash FROM batches WHERE n >= ? ORDER BY n",
                                 (batch,))
            after_hash: str | None = ""
            if batch > 0:
                after_hash = bytes(batches[0][2]).hex() if batches and batches[0][0] == batch \
                    else None
                batches = [b for b in batches if b[0] > batch]
            last_n, last_hash = (batches[-1][0], bytes(batches[-1][2]).hex()) if batches else \
                (batch, after_hash or "")
            store_rk = self._rk(STORE_CHAIN)
            named = [(n, loads(entries)) for n, entries, _ in batches]
            rows = self._rows_from(named, store_rk)
            settings = self._settings_from(named, store_rk)
            out: list[bytes] = []
            pos = 0
            for n, entries in named:
                for rk, first, last in entries:
                    if rk == store_rk:
                        out.extend(self._settings(n, settings, first, last))
                        continue
                    count = last - first + 1
                    chunk = rows[pos:pos + count]
                    if len(chunk) == count and all(
                            r[0] == rk and r[1] == first + i for i, r in enumerate(chunk)):
                        out.extend(bytes(r[2]) for r in chunk)
                        pos += count
                    else:
                        out.extend(self._looked_up(n, rk, first, last))
            return LeafSpan(after_hash, int(last_n), last_hash, out)

    def _rows_from(self, named: list[tuple[int, Any]], store_rk: int | None
                   ) -> list[tuple[Any, ...]]:
        """The events table in rowid order from the first event the batches name: commit
        order in practice, checked entry by entry (a miss is looked up by index)."""
        first = next(((rk, a) for _, entries in named for rk, a, _ in entries
                      if rk != store_rk), None)
        if first is None:
            return []
        at = self._read("SELECT rowid FROM events WHERE rk = ? AND seq = ?", first)
        if not at:
            return []  # missing: every entry is looked up, and the lookup names it
        return self._read("SELECT rk, seq, hash FROM events WHERE rowid >= ? ORDER BY rowid",
                          (at[0][0],))

    def _settings_from(self, named: list[tuple[int, Any]], store_rk: int | None
                       ) -> dict[int, bytes]:
        spans = [(a, z) for _, entries in named for rk, a, z in entries if rk == store_rk]
        if not spans:
            return {}
        return dict(self._read("SELECT n, hash FROM store_events WHERE n BETWEEN ? AND ?",
                               (min(a for a, _ in spans), max(z for _, z in spans))))

    def _settings(self, n: int, settings: dict[int, bytes], first: int, last: int
                  ) -> list[bytes]:
        got = [settings.get(s) for s in range(first, last + 1)]
        if None in got:
            raise StoreCorrupt(f"batch {n} names store chain event #{first + got.index(None)}, "
                               "which is missing; run tether audit verify")
        return [bytes(h) for h in got if h is not None]

    def _looked_up(self, n: int, rk: int, first: int, last: int) -> list[bytes]:
        rows = self._read("SELECT seq, hash FROM events WHERE rk = ? AND seq BETWEEN ? AND ? "
                          "ORDER BY seq", (rk, first, last))
        for i, (seq, _) in enumerate(rows):
            if seq != first + i:
                break
        else:
            if len(rows) == last - first + 1:
                return [bytes(r[1]) for r in rows]
        missing = next((first + i for i, r in enumerate(rows) if r[0] != first + i),
                       first + len(rows))
        raise StoreCorrupt(f"batch {n} names event {self._run_id(rk)}#{missing}, which is "
                           "missing; run tether audit verify")

    def event_count(self) -> int:
        row = self._read("SELECT (SELECT count(*) FROM events) + "
                         "(SELECT count(*) FROM store_events)")
        return int(row[0][0])

    def signed_checkpoints(self, *, after: int = 0) -> list[SignedCheckpoint]:
        rows = self._read(f"SELECT {_COLS} FROM signed_checkpoints WHERE n > ? ORDER BY n",
                          (after,))
        out = []
        for n, size, root, note, proof, created in rows:
            try:
                hexes = tuple(str(x) for x in loads(proof))
            except ValueError:  # changed outside tether: let verification say so
                hexes = ("(unreadable)",)
            out.append(SignedCheckpoint(int(n), int(size), bytes(root).hex(), str(note),
                                        hexes, float(created)))
        return out

    def seal_cache(self) -> SealCache | None:
        rows = self._read("SELECT n, batch, batch_hash, frontier FROM signed_checkpoints "
                          "ORDER BY n DESC LIMIT 1")
        if not rows or rows[0][1] is None or rows[0][3] is None:
            return None
        n, batch, bhash, frontier = rows[0]
        return SealCache(int(n), int(batch), bytes(bhash or b"").hex(), bytes(frontier))

    def add_signed_checkpoint(self, size: int, root: str, note: str, proof: Sequence[str],
                              created: float, *, after: int,
                              cache: tuple[int, str, bytes] | None = None) -> SignedCheckpoint:
        with self._tx() as c:
            row = c.execute("SELECT max(n) FROM signed_checkpoints").fetchone()
            last = int(row[0] or 0)
            if last != after:
                raise Conflict(f"signed checkpoint {last} was written meanwhile (expected the "
                               f"last to be {after}); seal again")
            batch, bhash, frontier = cache if cache is not None else (None, "", None)
            c.execute(f"INSERT INTO signed_checkpoints({_COLS}, batch, batch_hash, frontier) "
                      "VALUES(?,?,?,?,?,?,?,?,?)",
                      (last + 1, size, bytes.fromhex(root), note, dumps(list(proof)), created,
                       batch, bytes.fromhex(bhash), frontier))
        return SignedCheckpoint(last + 1, size, root, note, tuple(proof), created)
