"""Provenance links as rows, the same on every backend: which links a write's events
make, a link row read back, and the walk forward over them (what a step reached).

Links are derived from the events themselves when they commit
(:func:`tether.core.links.derive_links`), so they cannot disagree with the
hash-chained journal: ``audit verify`` re-derives them. Each backend reads and writes
the rows with its own SQL.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from tether.core.events import Event
from tether.core.ids import ulid_bytes, ulid_str
from tether.core.links import LINK_KINDS, derive_links
from tether.store.records import Link

LINK_COLS = ("src_rk, src_epoch, src_step, src_event, dst_rk, dst_epoch, dst_step, dst_event, "
             "kind")

Row = tuple[Any, ...]


def link_rows(events: Iterable[Event], rk: int,
              event_at: Callable[[str], tuple[str, int, int] | None],
              rk_of: Callable[[str], int | None]) -> list[Row]:
    """The rows (:data:`LINK_COLS`) of the links ``events`` of run key ``rk`` make;
    ``event_at(id)`` finds a cause's (run, epoch, step), ``rk_of(run)`` a run's key."""
    links = []
    for e in events:
        if not (e.causes and e.kind in LINK_KINDS) and e.kind not in ("rollback",
                                                                      "run.started"):
            continue
        for kind, src_run, s_epoch, s_step, s_event in derive_links(e, event_at):
            src_rk = rk_of(src_run)
            if src_rk is None:
                continue  # a fork of a run this store does not have (copied stores)
            links.append((src_rk, s_epoch, s_step, ulid_bytes(s_event), rk, e.epoch,
                          e.step, ulid_bytes(e.id), kind))
    return links


def row_link(r: Sequence[Any], run_of: Callable[[int], str]) -> Link:
    """A row of :data:`LINK_COLS` as a link; ``run_of(rk)`` names a run key's run."""
    # Positional, in Link's field order (kind, src_run, src_epoch, src_step, src_event,
    # dst_run, dst_epoch, dst_step, dst_event): a third cheaper than by keyword, and the
    # audit makes one per link.
    return Link(r[8], run_of(r[0]), r[1], r[2], ulid_str(bytes(r[3])),
                run_of(r[4]), r[5], r[6], ulid_str(bytes(r[7])))


def walk(rk0: int, epoch: int, step: int,
         targets: Callable[[int, int, int, int | None], Iterable[Sequence[Any]]]
         ) -> dict[tuple[int, int], tuple[int, Row | None]]:
    """The earliest step reached in each (run key, epoch), with the link that reached it,
    in the order first reached (the origin first).

    A breadth-first walk over the links on their integer keys; a (run, epoch) reached
    again at an earlier step is expanded again for the steps not yet walked only, so
    each link is read about once. ``targets(rk, epoch, from_step, before)`` reads, of
    the links whose source is (rk, epoch) at ``from_step`` or later (and before
    ``before`` when given), the one that reaches the earliest step of each target
    (run key, epoch), as rows of :data:`LINK_COLS`.
    """
    reached: dict[tuple[int, int], tuple[int, Row | None]] = {}
    todo: deque[tuple[int, int, int, Row | None]] = deque([(rk0, epoch, step, None)])
    while todo:
        rk, ep, s, link = todo.popleft()
        prev = reached[(rk, ep)][0] if (rk, ep) in reached else None
        if prev is not None and prev <= s:
            continue
        reached[(rk, ep)] = (s, link)  # a dict keeps the order a key was first set in
        for r in targets(rk, ep, s, prev):
            todo.append((r[4], r[5], r[6], tuple(r)))
    return reached
