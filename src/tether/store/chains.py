"""The store's two hash chains as rows, the same on every backend: the batch chain
(every commit appends one numbered, hash-linked batch naming what it committed) and the
store chain of operator settings (core/settings.py), with the swarms' rows it projects to.

Each backend reads and writes the rows with its own SQL, under its own write lock; what
the next link is, and what rows read back mean, is decided here once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from typing import Any

from tether.core.canonical import dumps, loads
from tether.core.events import BATCH_GENESIS, batch_hash, payload_digest
from tether.core.identity import TOKEN_KINDS
from tether.core.ids import parse_iso
from tether.core.settings import STORE_CHAIN, STORE_GENESIS, SWARM_KINDS, StoreEvent
from tether.errors import StoreCorrupt
from tether.store.records import Batch

STORE_EVENT_COLS = "n, id, kind, scope, time, actor, payload, hash"


def next_batch(last: Sequence[Any] | None, hashes: list[tuple[str, int, str]]
               ) -> tuple[int, bytes]:
    """The number and hash of the batch that follows ``last`` (the chain's last row, as
    ``(n, hash)``; None: the first batch) and commits ``hashes``, (run, seq, hash) of
    each event in commit order. The caller holds the write lock, so no other commit can
    take the same number."""
    n, prev = (int(last[0]) + 1, bytes(last[1]).hex()) if last else (1, BATCH_GENESIS)
    return n, bytes.fromhex(batch_hash(prev, hashes))


def store_batch(last: Sequence[Any] | None, e: StoreEvent, store_rk: int
                ) -> tuple[int, bytes, bytes]:
    """The values of the batch (n, hash, entries) that commits store chain event ``e``;
    ``store_rk``: the store chain's run key."""
    n, h = next_batch(last, [(STORE_CHAIN, e.n, e.hash)])
    return n, h, dumps([(store_rk, e.n, e.n)])


def batches_from(rows: Iterable[Sequence[Any]], prev: str, run_of: Callable[[int], str]
                 ) -> Iterable[Batch]:
    """Rows ``(n, hash, entries)`` in order as batches, each linked to the hash before it
    (``prev``): the link is the previous row's hash, so a removed or reordered row breaks
    it. ``run_of(rk)`` names a run key's run."""
    for r in rows:
        h = bytes(r[1]).hex()
        yield Batch(r[0], prev, h, tuple((run_of(e[0]), e[1], e[2]) for e in loads(r[2])))
        prev = h


def store_event_values(e: StoreEvent) -> tuple[Any, ...]:
    """A store chain event as the values of :data:`STORE_EVENT_COLS`."""
    return (e.n, e.id, e.kind, e.scope, e.time, e.actor, dumps(e.payload),
            bytes.fromhex(e.hash))


def store_head(row: Sequence[Any] | None) -> tuple[int, str] | None:
    """The store chain's head (n, hash) from its last row ``(n, hash)``, if any."""
    return (int(row[0]), bytes(row[1]).hex()) if row else None


def store_events_from(rows: Iterable[Sequence[Any]], prev: str = STORE_GENESIS
                      ) -> list[StoreEvent]:
    """Rows of :data:`STORE_EVENT_COLS` in order as store events, each linked to the hash
    before it (``prev``: the hash of the event before the first row)."""
    out = []
    for r in rows:
        try:
            payload = loads(r[6])
        except ValueError:  # damaged outside tether: keep it readable, let the hash say so
            payload = {"unreadable": bytes(r[6]).hex()}
        h = bytes(r[7]).hex()
        out.append(StoreEvent(n=r[0], id=r[1], kind=r[2], scope=r[3], time=r[4], actor=r[5],
                              payload=payload, payload_hash=payload_digest(payload),
                              prev=prev, hash=h))
        prev = h
    return out


def swarm_setting(kind: str, scope: str, payload: Any) -> str | None:
    """The column of the swarm's row a store event of ``kind`` sets (None: not a swarm
    setting); ValueError if its scope or payload is not one."""
    field = SWARM_KINDS.get(kind)
    if field is not None and not (scope.startswith("swarm:") and isinstance(payload, dict)
                                  and isinstance(payload.get(field), dict)):
        raise ValueError(f"store event {kind}: needs scope 'swarm:NAME' and payload "
                         f"{{{field!r}: {{...}}}}, got scope {scope!r}")
    return field


def swarm_values(field: str, scope: str, payload: Any, time: str) -> tuple[Any, ...]:
    """The values (name, budget, updated, pause_points) of the swarm's row a setting of
    ``field`` projects to; the row's other setting is left as it was by the upsert."""
    return (scope[6:], dumps(payload.get("budget", {})), parse_iso(time),
            dumps(payload["pause_points"]) if field == "pause_points" else None)


def row_swarm(r: Sequence[Any]) -> dict[str, Any]:
    """A swarm's row (name, budget, pause_points) as ``swarm_rows`` gives it."""
    return {"budget": loads(r[1]), "pause_points": None if r[2] is None else loads(r[2])}


def all_chunks(store: str, digests: Sequence[str], found: dict[str, bytes]) -> dict[str, bytes]:
    """``found``, the chunks read by their digests, if it holds every one of ``digests``;
    else the error for the first missing (``store`` names the store)."""
    missing = [d for d in digests if d not in found]
    if missing:
        raise missing_chunk(store, missing[0])
    return found


def missing_chunk(store: str, digest: str) -> StoreCorrupt:
    """The error for a checkpoint chunk a store should hold and does not."""
    return StoreCorrupt(f"store {store}: checkpoint chunk {digest} is missing; "
                        "restore the store from a backup")


class StoreChainAppend(ABC):
    """Appending to the store chain with what it projects to, in one write transaction
    (a backend's ``_tx``); a backend's subclass writes the rows with its SQL."""

    def append_store_event(self, kind: str, scope: str, payload: Any, *, actor: str, time: str,
                           id: str) -> StoreEvent:
        """Append one event to the store chain (and its batch) in one transaction; a swarm
        setting (:data:`SWARM_KINDS`) updates the swarm's row, a token's event its row, in
        the same transaction."""
        field = swarm_setting(kind, scope, payload)
        with self._tx() as c:
            if kind in TOKEN_KINDS:  # checked and written first: a refusal appends nothing
                self._project_token(c, kind, payload, time=time, actor=actor)
            e = self._append_store_event(c, kind, scope, payload, actor=actor, time=time, id=id)
            if field is not None:
                # The row is the chain's projection: what workers read when they take a run.
                self._set_swarm(c, field, swarm_values(field, scope, payload, time))
        return e

    @abstractmethod
    def _tx(self) -> AbstractContextManager[Any]: ...

    @abstractmethod
    def _project_token(self, c: Any, kind: str, payload: Any, *, time: str,
                       actor: str) -> None: ...

    @abstractmethod
    def _append_store_event(self, c: Any, kind: str, scope: str, payload: Any, *, actor: str,
                            time: str, id: str) -> StoreEvent:
        """Append one event to the store chain and the batch naming it, on ``c``."""

    @abstractmethod
    def _set_swarm(self, c: Any, field: str, values: tuple[Any, ...]) -> None:
        """Upsert the swarm's row (name, budget, updated, pause_points): ``field`` and
        ``updated`` set, the other setting left as it was."""
