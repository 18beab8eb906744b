"""What a commit refuses, the same on every backend: a write whose lease was taken over
or whose run is not where it expects, a transition of rows that changed since its plan.

Each backend reads the rows these decide on with its own SQL, inside its write
transaction; the verdicts, and the errors' words, are here once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

from tether.errors import Conflict, LeaseLost, NotFound, UsageError
from tether.store.records import Transition, Write

TRANSITION_COLUMNS: Final = {("messages", "status"), ("messages", "suspect"),
                             ("versions", "status"), ("versions", "suspect")}
"""The (table, column) pairs a transition may change."""


def apply_writes(writes: Sequence[Write], refusal: Callable[[Write], BaseException | None],
                 apply: Callable[[Write], int]
                 ) -> tuple[list[BaseException | None], list[tuple[int, int, int]],
                            list[tuple[str, int, str]]]:
    """Each write checked (``refusal``: why it is refused, None if it may go on) and, if
    not refused, applied (``apply``: its run key), in order, inside one transaction:
    each write's result (its refusal, or None), and what the batch that commits them
    names: ``(rk, first seq, last seq)`` of each write's events, and (run, seq, hash) of
    every event, in commit order (:func:`tether.store.chains.next_batch`)."""
    results: list[BaseException | None] = [None] * len(writes)
    entries: list[tuple[int, int, int]] = []
    hashes: list[tuple[str, int, str]] = []
    for i, w in enumerate(writes):
        err = refusal(w)
        if err is not None:
            results[i] = err
            continue
        rk = apply(w)
        if w.events:
            entries.append((rk, w.events[0].seq, w.events[-1].seq))
            hashes.extend((e.run, e.seq, e.hash) for e in w.events)
    return results, entries, hashes


def fence_refusal(w: Write, row: Sequence[Any] | None) -> BaseException | None:
    """Why write ``w`` is refused, given its run's ``(seq, lease token)`` row (None: no
    such run); None when it may go on. A new run (no fence) must not exist; any other
    write must hold the run's current lease and append right after its last event."""
    if w.fence is None:
        return UsageError(f"run {w.run} already exists") if row is not None else None
    if row is None:
        return NotFound(f"run {w.run} does not exist")
    if row[1] != w.fence:
        return LeaseLost(f"run {w.run}: this process's lease (token {w.fence}) was taken over "
                         f"(token now {row[1]}); its writes are refused")
    if w.events and w.events[0].seq != row[0] + 1:
        return LeaseLost(f"run {w.run}: expected next seq {row[0] + 1}, got "
                         f"{w.events[0].seq}; another writer appended to this run")
    return None


def transition_key(t: Transition) -> str:
    """The column that names the rows ``t`` changes: a message's id, a version's event."""
    return "id" if t.table == "messages" else "event"


def transition_value(t: Transition) -> Any:
    """The value ``t`` stores (a flag as 0 or 1)."""
    return int(t.value) if t.column == "suspect" else t.value


def transitions_refusal(w: Write, current: Callable[[Transition, str], Iterable[Sequence[Any]]]
                        ) -> Conflict | None:
    """Conflict if one of ``w``'s transitions changes a column no transition may, or
    names a row that is in no state its plan saw (``only_from``); ``current(t, key)``
    reads the rows ``t`` names as ``(key, current value)``, ``key`` the column naming
    them (:func:`transition_key`)."""
    for t in w.transitions:
        if (t.table, t.column) not in TRANSITION_COLUMNS:
            return Conflict(f"run {w.run}: cannot change {t.table}.{t.column}")
        if t.only_from is None or not t.ids:
            continue
        for rid, cur in current(t, transition_key(t)):
            if cur not in t.only_from:
                return Conflict(f"run {w.run}: {t.table[:-1]} {rid} is {cur!r} now, not "
                                f"{' or '.join(map(str, t.only_from))}; it changed since the "
                                "plan was made: look again and retry")
    return None



def claim_refusal(run: str, fence: int, lease: Sequence[Any] | None) -> LeaseLost | None:
    """Why a run may not take its messages: its lease row's ``(token,)`` (None: no lease)
    is not the caller's ``fence``."""
    if lease is None or lease[0] != fence:
        return LeaseLost(f"run {run}: this process's lease (token {fence}) was taken "
                         "over; it cannot take messages")
    return None


def claim_limit(limit: int | None, held: Sequence[Any] | None) -> int | None:
    """How many more messages one receive call may take: what it took before (``held``:
    the count's row, after a crash) counts against its ``limit`` (None: no limit)."""
    if limit is None:
        return None
    return max(0, limit - int(held[0] if held else 0))
