"""Every table of a store, as moving a store row by row sees it (``tether store copy``).

Both backends hold the same tables, columns and value encodings at the same schema version
(:mod:`tether.store.schema`, :mod:`tether.store.postgres_schema`), so one list, kept here,
says what a copy carries: each table's columns in a fixed order, and the order its rows are
read in. ``rowid`` is the commit order of the tables whose readers rely on it (a SQLite
rowid, a PostgreSQL identity column of that name): copied as a value, so the copy keeps
that order and every number in it.

A table not listed here (one a newer schema added, or one made by hand) makes a copy
refuse, naming it: a copier that does not know a table must not drop its rows silently.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from tether.errors import UsageError


@dataclass(frozen=True, slots=True)
class Table:
    """How one table is copied."""

    name: str
    """The table's name, in both backends."""
    columns: tuple[str, ...]
    """Its columns as read and written (``rowid`` first where commit order is kept)."""
    order: str
    """The ``ORDER BY`` its rows are read in: its key, so both backends read the same order."""


def _t(name: str, columns: str, order: str) -> Table:
    return Table(name, tuple(c.strip() for c in columns.split(",")), order)


TABLES: Final[tuple[Table, ...]] = (
    _t("meta", "key, value", "key"),
    _t("run_keys", "rk, id", "rk"),
    _t("runs", "id, name, agent, swarm, goal, status, epoch, step, seq, head, spec, budget, "
               "usage, wake_at, created, updated, reason, parent", "id"),
    _t("events", "rowid, rk, seq, id, epoch, step, kind, time, actor, causes, payload, "
                 "payload_hash, hash, seal", "rowid"),
    _t("batches", "n, hash, entries", "n"),
    _t("store_events", "n, id, kind, scope, time, actor, payload, hash", "n"),
    _t("checkpoints", "rowid, rk, epoch, step, kind, body", "rowid"),
    _t("chunks", "rowid, hash, body", "rowid"),
    _t("effects", "id, run, epoch, step, idx, tool, effect, idempotent, key, status, arguments, "
                  "result, undo, updated", "id"),
    _t("approvals", "id, run, epoch, step, idx, tool, effect, arguments, rule, reason, "
                    "policy_hash, approvers, requested_at, expires_at, on_expiry, status, "
                    "decided_by, decided_at, note, edited_arguments, always", "id"),
    _t("commands", "id, run, kind, args, actor, created, applied, key", "id"),
    _t("usage", "run, bucket, swarm, steps, input_tokens, output_tokens, cost_usd, tool_calls, "
                "wall_seconds", "run, bucket"),
    _t("swarms", "name, budget, updated, pause_points", "name"),
    _t("outbox", "id, kind, body, created, attempts, next_at, delivered, last_error", "id"),
    _t("messages", "id, swarm, sender, epoch, step, recipient, topic, body, status, created, "
                   "claim, received, suspect", "id"),
    _t("versions", "n, ns, key, version, event, run, epoch, step, value, hash, status, suspect, "
                   "created", "n"),
    _t("links", "rowid, src_rk, src_epoch, src_step, src_event, dst_rk, dst_epoch, dst_step, "
                "dst_event, kind", "rowid"),
    _t("signed_checkpoints", "n, size, root, note, proof, created, batch, batch_hash, frontier",
       "n"),
    _t("tokens", "id, name, role, hash, created, created_by, revoked, revoked_by", "id"),
)
"""Every table a copy carries, in the order it copies them."""

LEASES: Final = Table("leases", ("run", "owner", "token", "expires"), "run")
"""Who holds which run: read to refuse a copy while a worker holds one, never copied (a
copy has no live owners; its first worker takes each run anew)."""

KNOWN: Final = frozenset(t.name for t in TABLES) | {LEASES.name}
"""Every table a store of this schema version holds."""

FRESH_META: Final = frozenset({"schema_version", "x.fingerprint_key"})
"""The meta rows a new, empty store is made with (replaced by the source's in a copy)."""

BATCH: Final = 2000
"""Rows per batch read and written at most: few round trips, and bounded memory."""

BATCH_BYTES: Final = 8 << 20
"""A batch ends sooner once its values hold this many bytes: a row may be large (an event
payload, a checkpoint, a chunk holding a big state value), and a store of any size must
stream through in bounded memory."""

FETCH: Final = 250
"""Rows fetched from a cursor at a time, while a batch fills."""


@dataclass(frozen=True, slots=True)
class RowStream:
    """The rows of one table, read from a store in batches (``Store.export_rows``)."""

    table: Table
    """The table and the columns each row holds, in order."""
    total: int
    """How many rows the table holds (in the snapshot they are read in)."""
    batches: Iterable[list[tuple[Any, ...]]]
    """The rows, a batch at a time, in ``table.order`` (read lazily: iterate once)."""


def table(name: str) -> Table:
    """The copied table ``name``, or :data:`LEASES`; UsageError for any other."""
    for t in (*TABLES, LEASES):
        if t.name == name:
            return t
    raise UsageError(f"table {name!r} is not a table of a tether store")


def check_columns(where: str, catalog: dict[str, tuple[str, ...]]) -> None:
    """Refuse a store whose tables (``catalog``: table -> columns, as its engine lists
    them) are not exactly the ones this code copies, naming the first that differs.

    Raises:
        UsageError: a table or column this copier does not know (it would be dropped), or
            one it expects that is missing.
    """
    unknown = sorted(set(catalog) - KNOWN)
    if unknown:
        raise UsageError(f"{where} holds table {unknown[0]}"
                         + (f" (and {', '.join(unknown[1:])})" if unknown[1:] else "")
                         + ", which this tether does not know, so a copy would drop its rows; "
                         "copy with the tether that made it (a newer one?), or move the "
                         "table out of the store first")
    for t in (*TABLES, LEASES):
        if t.name not in catalog:
            raise UsageError(f"{where} has no table {t.name}; it is not a whole tether store "
                             f"(check it with `tether audit verify`)")
        have, want = set(catalog[t.name]) - {"rowid"}, set(t.columns) - {"rowid"}
        if have != want:
            extra, missing = sorted(have - want), sorted(want - have)
            raise UsageError(f"{where}: table {t.name} has "
                             + (f"column {extra[0]}, which this tether does not know"
                                if extra else f"no column {missing[0]}")
                             + "; a copy would not be faithful, so none is made")


class Cursor(Protocol):
    """What :func:`in_batches` reads: a DB-API cursor of either backend."""

    def fetchmany(self, size: int) -> Sequence[Sequence[Any]]: ...


def in_batches(rows: Cursor) -> Iterator[list[tuple[Any, ...]]]:
    """Rows from a cursor in batches of at most :data:`BATCH` rows, or fewer once they
    hold :data:`BATCH_BYTES` of values, until there are no more. A fetch asks for fewer
    rows once the table has shown a large one (a quarter of the byte budget at the size
    of the largest row seen), so what is held at once stays near the budget: a batch,
    and one fetch of rows of that size."""
    batch: list[tuple[Any, ...]] = []
    size = largest = 0
    want = 1  # the first row tells the size of the rows to come
    while got := rows.fetchmany(want):
        for r in got:
            row = tuple(r)
            n = sum(len(v) for v in row if isinstance(v, (bytes, str)))
            batch.append(row)
            size, largest = size + n, max(largest, n)
            if len(batch) >= BATCH or size >= BATCH_BYTES:
                yield batch
                batch, size = [], 0
        want = max(1, min(FETCH, BATCH_BYTES // (4 * (largest + 1))))
    if batch:
        yield batch
