"""The leaves of the audit's tree in commit order, and the signed checkpoints' rows: the
same on every backend.

Commit order is the batch chain's: every commit appends one numbered, hash-linked batch
naming what it committed. A backend reads the events table in one pass in its insertion
order (SQLite's rowid, PostgreSQL's identity column), which is commit order in practice;
:func:`leaf_span` checks each batch's entry against that pass and has the backend look up
by index any entry that is not where the pass expects it, so the result never depends on
the insertion order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tether.core.canonical import dumps, loads
from tether.errors import Conflict, StoreCorrupt
from tether.store.seal_records import LeafSpan, SealCache, SignedCheckpoint

SIGNED_COLS = "n, size, root, note, proof, created"
"""The signed checkpoints' columns a :class:`SignedCheckpoint` is read from."""

Named = list[tuple[int, Any]]
"""Batches as (n, entries), entries as (run key, first seq, last seq)."""


@dataclass(frozen=True, slots=True)
class LeafReads:
    """What :func:`leaf_span` asks a backend for, in the snapshot it reads in."""

    rows_from: Callable[[int, int], list[tuple[Any, ...]]]
    """(rk, seq) -> every event's (rk, seq, hash) in insertion order from that event on
    ([] when it is missing: every entry is then looked up, and the lookup names it)."""
    settings: Callable[[int, int], dict[int, bytes]]
    """(first, last) -> the store chain's event hashes by n, first to last."""
    span: Callable[[int, int, int], list[tuple[Any, ...]]]
    """(rk, first, last) -> (seq, hash) of run key rk's events first..last, by seq."""
    run_of: Callable[[int], str]
    """A run key's run, for the errors."""


def leaf_span(batch: int, batches: list[tuple[Any, ...]], store_rk: int | None,
              read: LeafReads) -> LeafSpan:
    """The events committed after batch ``batch``, from the batch rows ``(n, entries,
    hash)`` numbered ``batch`` and on (see the module); ``store_rk``: the store chain's
    run key."""
    after_hash: str | None = ""
    if batch > 0:
        after_hash = bytes(batches[0][2]).hex() if batches and batches[0][0] == batch \
            else None
        batches = [b for b in batches if b[0] > batch]
    last_n, last_hash = (batches[-1][0], bytes(batches[-1][2]).hex()) if batches else \
        (batch, after_hash or "")
    named: Named = [(n, loads(entries)) for n, entries, _ in batches]
    first = next(((rk, a) for _, entries in named for rk, a, _ in entries
                  if rk != store_rk), None)
    rows = read.rows_from(*first) if first is not None else []
    spans = [(a, z) for _, entries in named for rk, a, z in entries if rk == store_rk]
    settings = read.settings(min(a for a, _ in spans), max(z for _, z in spans)) \
        if spans else {}
    out: list[bytes] = []
    pos = 0
    for n, entries in named:
        for rk, first_seq, last_seq in entries:
            if rk == store_rk:
                out.extend(_settings(n, settings, first_seq, last_seq))
                continue
            count = last_seq - first_seq + 1
            chunk = rows[pos:pos + count]
            if len(chunk) == count and all(
                    r[0] == rk and r[1] == first_seq + i for i, r in enumerate(chunk)):
                out.extend(bytes(r[2]) for r in chunk)
                pos += count
            else:
                out.extend(_looked_up(n, rk, first_seq, last_seq,
                                      read.span(rk, first_seq, last_seq), read.run_of))
    return LeafSpan(after_hash, int(last_n), last_hash, out)


def _settings(n: int, settings: dict[int, bytes], first: int, last: int) -> list[bytes]:
    got = [settings.get(s) for s in range(first, last + 1)]
    if None in got:
        raise StoreCorrupt(f"batch {n} names store chain event #{first + got.index(None)}, "
                           "which is missing; run tether audit verify")
    return [bytes(h) for h in got if h is not None]


def _looked_up(n: int, rk: int, first: int, last: int, rows: list[tuple[Any, ...]],
               run_of: Callable[[int], str]) -> list[bytes]:
    """The hashes of ``rows`` (seq, hash) if they are exactly seqs first..last; else
    StoreCorrupt naming the first one missing."""
    for i, (seq, _) in enumerate(rows):
        if seq != first + i:
            break
    else:
        if len(rows) == last - first + 1:
            return [bytes(r[1]) for r in rows]
    missing = next((first + i for i, r in enumerate(rows) if r[0] != first + i),
                   first + len(rows))
    raise StoreCorrupt(f"batch {n} names event {run_of(rk)}#{missing}, which is "
                       "missing; run tether audit verify")


def signed_from(rows: Sequence[Sequence[Any]]) -> list[SignedCheckpoint]:
    """Rows of :data:`SIGNED_COLS` as signed checkpoints."""
    out = []
    for n, size, root, note, proof, created in rows:
        try:
            hexes = tuple(str(x) for x in loads(proof))
        except ValueError:  # changed outside tether: let verification say so
            hexes = ("(unreadable)",)
        out.append(SignedCheckpoint(int(n), int(size), bytes(root).hex(), str(note),
                                    hexes, float(created)))
    return out


def seal_cache_from(row: Sequence[Any] | None) -> SealCache | None:
    """The last signed checkpoint's row ``(n, batch, batch_hash, frontier)`` as the next
    seal's cache; None when there is none or it was written without one."""
    if row is None or row[1] is None or row[3] is None:
        return None
    n, batch, bhash, frontier = row
    return SealCache(int(n), int(batch), bytes(bhash or b"").hex(), bytes(frontier))


def next_signed(last: int, after: int) -> int:
    """The number of the signed checkpoint to write after the last one, ``last``; Conflict
    if the caller expected another last one (``after``): another seal came first."""
    if last != after:
        raise Conflict(f"signed checkpoint {last} was written meanwhile (expected the "
                       f"last to be {after}); seal again")
    return last + 1


def signed_values(n: int, size: int, root: str, note: str, proof: Sequence[str], created: float,
                  cache: tuple[int, str, bytes] | None) -> tuple[Any, ...]:
    """The values of signed checkpoint ``n``'s row: :data:`SIGNED_COLS`, then the next
    seal's cache (batch, batch_hash, frontier), NULL without one."""
    batch, bhash, frontier = cache if cache is not None else (None, "", None)
    return (n, size, bytes.fromhex(root), note, dumps(list(proof)), created, batch,
            bytes.fromhex(bhash), frontier)


def snapshot_name(batch: Sequence[Any] | None, checkpoint: Any, chunk: Any) -> str:
    """What names a snapshot of the store: its last batch's row ``(n, hash)`` (None: none)
    and the last checkpoint's and chunk's row ids."""
    n, h = (batch[0], bytes(batch[1]).hex()) if batch else (0, "")
    return f"batch {n} {h} checkpoint {checkpoint} chunk {chunk}"
