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

import itertools
import re
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import pq, sql

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
from tether.store.postgres_base import PGBase
from tether.store.records import ChainRow
from tether.store.rows import chain_row
from tether.store.seal_records import LeafSpan, SealCache, SignedCheckpoint

CHAIN_COLS = ("rk, seq, id, epoch, step, convert_to(kind, 'UTF8'), time, "
              "convert_to(actor, 'UTF8'), causes, payload, payload_hash, hash, seal")
"""The event columns :func:`~tether.store.rows.chain_row` reads, kind and actor as
their UTF-8 bytes (as SQLite's ``CAST(... AS BLOB)``)."""

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
        return snapshot_name(batch[0] if batch else None, ckpt, chunk)

    def reader_url(self) -> str | None:
        """This store's URL for a read-only process, password included (it is handed over
        a pipe, never shown); inside :meth:`snapshot`, with the snapshot exported, so that
        process's snapshots are this one (see the module)."""
        c = self._conn()
        if c.info.transaction_status != pq.TransactionStatus.INTRANS:
            return self._given_url
        with self._guard():
            row = c.execute("SELECT pg_export_snapshot()").fetchone()
        assert row is not None
        return with_snapshot(self._given_url, str(row[0]))

    def _snapshot_begun(self, c: psycopg.Connection[tuple[Any, ...]]) -> None:
        """In a store opened by a :meth:`reader_url` that names an exported snapshot, the
        snapshot begins as that one, imported; otherwise as the base's."""
        imported = exported_in(self.url)
        if imported is None:
            super()._snapshot_begun(c)
            return
        # First in its transaction, as PostgreSQL requires; no parameters in SET.
        c.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(imported)))

    def leaf_hashes(self) -> list[bytes]:
        """Every event's hash in commit order (see :meth:`Store.leaf_hashes`)."""
        return self.leaves_since(0).hashes

    def leaves_since(self, batch: int) -> LeafSpan:
        """The events committed after batch ``batch`` (see :meth:`Store.leaves_since`)."""
        with self.snapshot():
            batches = self._read("SELECT n, entries, hash FROM batches WHERE n >= %s "
                                 "ORDER BY n", (batch,))
            return leaf_span(batch, batches, self._rk(STORE_CHAIN), LeafReads(
                self._rows_from, self._settings_from, self._span, self._run_id))

    def _rows_from(self, rk: int, seq: int) -> list[tuple[Any, ...]]:
        """The events table in rowid order from event (rk, seq) on: commit order in
        practice, checked entry by entry by :func:`leaf_span`.
        (rowid: the identity column, in commit order as commits hold the write lock)"""
        at = self._read("SELECT rowid FROM events WHERE rk = %s AND seq = %s", (rk, seq))
        if not at:
            return []  # missing: every entry is looked up, and the lookup names it
        return self._read("SELECT rk, seq, hash FROM events WHERE rowid >= %s ORDER BY rowid",
                          (at[0][0],))

    def _settings_from(self, first: int, last: int) -> dict[int, bytes]:
        rows = self._read("SELECT n, hash FROM store_events WHERE n BETWEEN %s AND %s",
                          (first, last))
        return {int(r[0]): bytes(r[1]) for r in rows}

    def _span(self, rk: int, first: int, last: int) -> list[tuple[Any, ...]]:
        return self._read("SELECT seq, hash FROM events WHERE rk = %s AND seq BETWEEN %s "
                          "AND %s ORDER BY seq", (rk, first, last))

    def event_count(self) -> int:
        row = self._read("SELECT (SELECT count(*) FROM events) + "
                         "(SELECT count(*) FROM store_events)")
        return int(row[0][0])

    def signed_checkpoints(self, *, after: int = 0) -> list[SignedCheckpoint]:
        return signed_from(self._read(f"SELECT {SIGNED_COLS} FROM signed_checkpoints "
                                      "WHERE n > %s ORDER BY n", (after,)))

    def seal_cache(self) -> SealCache | None:
        rows = self._read("SELECT n, batch, batch_hash, frontier FROM signed_checkpoints "
                          "ORDER BY n DESC LIMIT 1")
        return seal_cache_from(rows[0] if rows else None)

    def add_signed_checkpoint(self, size: int, root: str, note: str, proof: Sequence[str],
                              created: float, *, after: int,
                              cache: tuple[int, str, bytes] | None = None) -> SignedCheckpoint:
        with self._tx() as c:
            row = c.execute("SELECT max(n) FROM signed_checkpoints").fetchone()
            n = next_signed(int(row[0] or 0) if row else 0, after)
            c.execute(f"INSERT INTO signed_checkpoints({SIGNED_COLS}, batch, batch_hash, "
                      "frontier) "
                      "VALUES(%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                      signed_values(n, size, root, note, proof, created, cache))
        return SignedCheckpoint(n, size, root, note, tuple(proof), created)


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
