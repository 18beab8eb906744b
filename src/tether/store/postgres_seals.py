"""The PostgreSQL store's share of signed checkpoints and of the audit's bulk reads.

The port of :mod:`tether.store.sqlite_seals`: the leaves in commit order (the batch
chain's), the table of signed checkpoints with the next seal's cache beside each, and
every run's chain read in bulk for the audit, streamed through a server-side cursor.

A second process reads the same snapshot as this one through PostgreSQL's snapshot
export: :meth:`PGSeals.reader_url`, called inside :meth:`~PGSeals.snapshot`, exports it
(``pg_export_snapshot()``) and names it in the URL it returns, as the libpq option
``options=-ctether.snapshot=ID`` (a setting of the session, which libpq passes as it
is); a store opened by that URL begins each of its snapshots by importing it (``SET
TRANSACTION SNAPSHOT``), so the audit's helper process reads exactly what verify reads,
for as long as verify's snapshot stays open (after that the import fails, StoreError, and
verify walks that part itself).
"""

from __future__ import annotations

import contextlib
import itertools
import re
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import pq, sql

from tether.core.canonical import dumps, loads
from tether.core.settings import STORE_CHAIN
from tether.errors import Conflict, StoreCorrupt
from tether.store.postgres_base import PGBase
from tether.store.records import ChainRow
from tether.store.seal_records import LeafSpan, SealCache, SignedCheckpoint
from tether.store.sqlite_rows import chain_row

CHAIN_COLS = ("rk, seq, id, epoch, step, convert_to(kind, 'UTF8'), time, "
              "convert_to(actor, 'UTF8'), causes, payload, payload_hash, hash, seal")
"""The event columns :func:`~tether.store.sqlite_rows.chain_row` reads, kind and actor as
their UTF-8 bytes (as SQLite's ``CAST(... AS BLOB)``)."""

_COLS = "n, size, root, note, proof, created"

_PAGE = 2000
"""Rows a server-side cursor fetches per round trip in :meth:`PGSeals.chain_rows`."""

_IMPORT = re.compile(r"(?:^|\s)-ctether\.snapshot=([0-9A-Fa-f-]+)(?=\s|$)")
"""The exported snapshot a reader URL names, in its libpq ``options``."""

_cursors = itertools.count(1)
"""Names of server-side cursors: unique, so two bulk reads may be open on one connection."""


class PGSeals(PGBase):
    """Leaves in commit order and the signed checkpoints' table; every chain read in bulk
    for the audit."""

    def chain_rows(self, *, part: tuple[float, float] = (0.0, 1.0)) -> Iterator[ChainRow]:
        # A server-side cursor over the (rk, seq) index, fetched in pages: a query per run
        # costs a round trip each, and all rows at once would hold every payload. Binary:
        # bytea comes as its bytes, not hex text to decode (a sixth faster, measured).
        with self.snapshot(), self._guard():
            lo, hi = self._run_at(part[0]), self._run_at(part[1])
            with self._conn().cursor(name=f"tether_chain_{next(_cursors)}", binary=True) as cur:
                cur.itersize = _PAGE
                cur.execute(f"SELECT {CHAIN_COLS} FROM events WHERE rk >= %s AND rk < %s "
                            "ORDER BY rk, seq", (lo, hi))
                run_id, rk, run = self._run_id, None, ""
                while rows := cur.fetchmany(_PAGE):
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
        row = self._read("SELECT rk FROM events ORDER BY rk, seq LIMIT 1 OFFSET %s", (at,))
        return 2**63 - 1 if not row else int(row[0][0])

    def chain_size(self) -> int:
        return int(self._read("SELECT count(*) FROM events")[0][0])

    def snapshot_mark(self) -> str:
        batch = self._read("SELECT n, hash FROM batches ORDER BY n DESC LIMIT 1")
        ckpt = self._read("SELECT max(rowid) FROM checkpoints")[0][0]
        chunk = self._read("SELECT max(rowid) FROM chunks")[0][0]
        n, h = (batch[0][0], bytes(batch[0][1]).hex()) if batch else (0, "")
        return f"batch {n} {h} checkpoint {ckpt} chunk {chunk}"

    def reader_url(self) -> str | None:
        """This store's URL for a read-only process; inside :meth:`snapshot`, with the
        snapshot exported, so that process's snapshots are this one (see the module)."""
        c = self._conn()
        if c.info.transaction_status != pq.TransactionStatus.INTRANS:
            return self.url
        with self._guard():
            row = c.execute("SELECT pg_export_snapshot()").fetchone()
        assert row is not None
        return with_snapshot(self.url, str(row[0]))

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """The base's snapshot; in a store opened by a :meth:`reader_url` that names an
        exported snapshot, that snapshot, imported (nested: the outer one's)."""
        imported = exported_in(self.url)
        c = self._conn()
        if imported is None or c.info.transaction_status != pq.TransactionStatus.IDLE:
            with super().snapshot():
                yield
            return
        try:
            c.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            # First in its transaction, as PostgreSQL requires; no parameters in SET.
            c.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(imported)))
        except psycopg.Error as exc:
            with contextlib.suppress(psycopg.Error):
                c.execute("ROLLBACK")
            raise self._translate(exc) from exc
        try:
            yield
        finally:
            with contextlib.suppress(psycopg.Error):  # nothing was written: nothing to lose
                c.execute("ROLLBACK")

    def leaf_hashes(self) -> list[bytes]:
        """Every event's hash in commit order (see :meth:`Store.leaf_hashes`)."""
        return self.leaves_since(0).hashes

    def leaves_since(self, batch: int) -> LeafSpan:
        """The events committed after batch ``batch`` (see :meth:`Store.leaves_since`)."""
        with self.snapshot():
            batches = self._read("SELECT n, entries, hash FROM batches WHERE n >= %s "
                                 "ORDER BY n", (batch,))
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
        """The events table in rowid order (the identity column: commit order, as commits
        hold the write lock) from the first event the batches name, checked entry by
        entry (a miss is looked up by index)."""
        first = next(((rk, a) for _, entries in named for rk, a, _ in entries
                      if rk != store_rk), None)
        if first is None:
            return []
        at = self._read("SELECT rowid FROM events WHERE rk = %s AND seq = %s", first)
        if not at:
            return []  # missing: every entry is looked up, and the lookup names it
        return self._read("SELECT rk, seq, hash FROM events WHERE rowid >= %s ORDER BY rowid",
                          (at[0][0],))

    def _settings_from(self, named: list[tuple[int, Any]], store_rk: int | None
                       ) -> dict[int, bytes]:
        spans = [(a, z) for _, entries in named for rk, a, z in entries if rk == store_rk]
        if not spans:
            return {}
        rows = self._read("SELECT n, hash FROM store_events WHERE n BETWEEN %s AND %s",
                          (min(a for a, _ in spans), max(z for _, z in spans)))
        return {int(r[0]): bytes(r[1]) for r in rows}

    def _settings(self, n: int, settings: dict[int, bytes], first: int, last: int
                  ) -> list[bytes]:
        got = [settings.get(s) for s in range(first, last + 1)]
        if None in got:
            raise StoreCorrupt(f"batch {n} names store chain event #{first + got.index(None)}, "
                               "which is missing; run tether audit verify")
        return [bytes(h) for h in got if h is not None]

    def _looked_up(self, n: int, rk: int, first: int, last: int) -> list[bytes]:
        rows = self._read("SELECT seq, hash FROM events WHERE rk = %s AND seq BETWEEN %s AND %s "
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
        rows = self._read(f"SELECT {_COLS} FROM signed_checkpoints WHERE n > %s ORDER BY n",
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
            last = int(row[0] or 0) if row else 0
            if last != after:
                raise Conflict(f"signed checkpoint {last} was written meanwhile (expected the "
                               f"last to be {after}); seal again")
            batch, bhash, frontier = cache if cache is not None else (None, "", None)
            c.execute(f"INSERT INTO signed_checkpoints({_COLS}, batch, batch_hash, frontier) "
                      "VALUES(%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                      (last + 1, size, bytes.fromhex(root), note, dumps(list(proof)), created,
                       batch, bytes.fromhex(bhash), frontier))
        return SignedCheckpoint(last + 1, size, root, note, tuple(proof), created)


def with_snapshot(url: str, snapshot: str) -> str:
    """``url`` naming exported ``snapshot`` (any it named before replaced) in its libpq
    ``options``, written without a space (``-cNAME=VALUE``), which survives any quoting."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    opts = " ".join(v for k, v in query if k == "options")
    opts = " ".join([_IMPORT.sub("", opts).strip(), f"-ctether.snapshot={snapshot}"]).strip()
    query = [(k, v) for k, v in query if k != "options"] + [("options", opts)]
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))


def exported_in(url: str) -> str | None:
    """The exported snapshot ``url`` names (:func:`with_snapshot`), if any."""
    for k, v in parse_qsl(urlsplit(url).query, keep_blank_values=True):
        found = _IMPORT.search(v) if k == "options" else None
        if found is not None:
            return found.group(1)
    return None
