"""The SQLite store's share of signed checkpoints: the leaves in commit order, and the
table of checkpoints (migration 11).

Commit order is the batch chain's: every commit (a run's events, or one event of
the store chain) appends one numbered, hash-linked batch naming what it
committed, so the order survives a VACUUM (which may renumber the events'
rowids) and cannot be changed without breaking that chain. The events table is
read in one pass in rowid order, which is commit order in practice; a batch
whose events are not where the pass expects them (a store copied row by row,
say) is looked up by its index instead, so the result never depends on rowids.
"""

from __future__ import annotations

from collections.abc import Sequence

from tether.core.canonical import dumps, loads
from tether.core.settings import STORE_CHAIN
from tether.errors import Conflict, StoreCorrupt
from tether.store.records import SignedCheckpoint
from tether.store.sqlite_base import SQLiteBase

_COLS = "n, size, root, note, proof, created"


class SQLiteSeals(SQLiteBase):
    """Leaves in commit order and the signed checkpoints' table."""

    def leaf_hashes(self) -> list[bytes]:
        """Every event's hash in commit order (see :meth:`Store.leaf_hashes`)."""
        with self.snapshot():
            rows = self._read("SELECT rk, seq, hash FROM events")
            store_rk = self._rk(STORE_CHAIN)
            settings = dict(self._read("SELECT n, hash FROM store_events")) \
                if store_rk is not None else {}
            batches = self._read("SELECT n, entries FROM batches ORDER BY n")
            out: list[bytes] = []
            pos = 0
            for n, entries in batches:
                for rk, first, last in loads(entries):
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
            return out

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

    def add_signed_checkpoint(self, size: int, root: str, note: str, proof: Sequence[str],
                              created: float, *, after: int) -> SignedCheckpoint:
        with self._tx() as c:
            row = c.execute("SELECT max(n) FROM signed_checkpoints").fetchone()
            last = int(row[0] or 0)
            if last != after:
                raise Conflict(f"signed checkpoint {last} was written meanwhile (expected the "
                               f"last to be {after}); seal again")
            c.execute(f"INSERT INTO signed_checkpoints({_COLS}) VALUES(?,?,?,?,?,?)",
                      (last + 1, size, bytes.fromhex(root), note, dumps(list(proof)), created))
        return SignedCheckpoint(last + 1, size, root, note, tuple(proof), created)
