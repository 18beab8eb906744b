"""The committed stream's sink (a worker's ``on_commit``), and the same spans replayed
from the store (``tether export-otel``).

Only what a transaction made durable reaches the sink, after the commit: an event
that was rolled back, or refused with its write, never becomes a span or a count.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Sequence

from tether.core.events import Event
from tether.store.protocol import Store
from tether.store.records import RunRow, Write
from tether.telemetry.metrics import CommitMetrics, EventMetrics
from tether.telemetry.otel import OtlpSpans
from tether.telemetry.spans import RunInfo, Span, SpanBuilder

log = logging.getLogger("tether.telemetry")


def run_info(row: RunRow) -> RunInfo:
    """What spans say of a run, from its row."""
    agent = row.spec.get("agent_name") if isinstance(row.spec, dict) else None
    return RunInfo(row.id, row.name, str(agent or row.agent), row.swarm)


class TelemetrySink:
    """Spans and metrics of a worker's commits; give it as ``Worker(on_commit=...)``.

    The commit path only hands the writes over (a list append); a thread of the sink's own
    folds them into spans and counters and sends the spans, every ``interval`` seconds
    (``OTEL_BSP_SCHEDULE_DELAY`` in ms, default 1000) or on :meth:`flush`: one wake-up a
    second, not one thread switch per commit.

    Args:
        store: the worker's store (a step's earlier events after a restart, links).
        spans: where spans go, or None for none.
        metrics: the counters to fold events into, or None.
        commits: the commit-latency histogram, or None.
        interval: seconds between rounds (default from the environment).
        limit: the most writes kept waiting (a receiver that hangs must not grow the
            worker without end): past it, writes are dropped, counted in :attr:`dropped`.
    """

    def __init__(self, store: Store, *, spans: OtlpSpans | None = None,
                 metrics: EventMetrics | None = None, commits: CommitMetrics | None = None,
                 interval: float | None = None, limit: int = 200_000) -> None:
        self.store = store
        self.spans = spans
        self.metrics = metrics
        self.commits = commits
        self.builder = SpanBuilder(lookup=store.event, history=lambda e: step_before(store, e))
        self.interval = interval if interval is not None else float(
            os.environ.get("OTEL_BSP_SCHEDULE_DELAY", "1000")) / 1000
        self.limit = limit
        self.dropped = 0
        self._infos: dict[str, tuple[object, RunInfo]] = {}
        self._pending: list[tuple[Sequence[Write], float]] = []
        self._waiting = 0
        self._cv = threading.Condition()
        self._round = threading.Lock()  # one round at a time: the thread's or a flush's
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="tether-telemetry", daemon=True)
        self._thread.start()

    def __call__(self, writes: Sequence[Write], seconds: float) -> None:
        """The committer's hook: keep the batch for the sink's thread."""
        with self._cv:
            if self._waiting >= self.limit:
                self.dropped += len(writes)
                return
            self._pending.append((writes, seconds))
            self._waiting += len(writes)

    def flush(self) -> None:
        """Fold and send everything committed so far, now (before a scrape, at the end)."""
        with self._round:
            with self._cv:
                batches, self._pending, self._waiting = self._pending, [], 0
            self._fold(batches)

    def close(self) -> None:
        """Stop the thread, then fold and send what is left."""
        with self._cv:
            self._closed = True
            self._cv.notify()
        self._thread.join()
        self.flush()
        if self.spans is not None:
            self.spans.close()
        if self.dropped:
            log.warning("telemetry dropped %d writes while its receiver lagged", self.dropped)

    def _run(self) -> None:
        while True:
            with self._cv:
                if not self._closed:
                    self._cv.wait(self.interval)
                if self._closed:
                    return
            try:
                self.flush()
            except Exception:  # a receiver or a store read that failed: the next round
                log.exception("telemetry round failed")

    def _info(self, w: Write) -> RunInfo:
        row = w.run_row
        if row is None:
            return RunInfo(w.run)
        # Each write carries a fresh snapshot of the row, sharing its spec: the spec and the
        # name say whether what the spans show of the run changed.
        got = self._infos.get(w.run)
        if got is None or got[0] is not row.spec or got[1].name != row.name:
            got = self._infos[w.run] = (row.spec, run_info(row))
        return got[1]

    def _fold(self, batches: list[tuple[Sequence[Write], float]]) -> None:
        if not batches:
            return
        if self.commits is not None:
            self.commits.feed([s for _, s in batches], sum(len(ws) for ws, _ in batches))
        if self.metrics is not None:  # the round's events in one call: its counts added once
            self.metrics.feed(e for writes, _ in batches for w in writes for e in w.events)
        made: list[Span] = []
        if self.spans is not None:
            for writes, _ in batches:
                for w in writes:
                    if w.events:
                        made += self.builder.feed(self._info(w), w.events)
        if made and self.spans is not None and not self.spans.send(made):
            log.warning("the OTLP receiver did not take %d spans", len(made))

def step_before(store: Store, e0: Event) -> list[Event]:
    """The events of ``e0``'s step before it, read back from the store (the run may be steps
    further on by now): a :class:`SpanBuilder`'s ``history``."""
    k = 64
    while True:
        lo = max(0, e0.seq - 1 - k)
        evs = store.events(e0.run, after_seq=lo, limit=e0.seq - 1 - lo)
        i = len(evs)
        while i > 0 and (evs[i - 1].epoch, evs[i - 1].step) == (e0.epoch, e0.step):
            i -= 1
        if i > 0 or lo == 0:
            return evs[i:]
        k *= 4


def replay_spans(store: Store, runs: Iterable[str], *, since: float | None = None,
                 ) -> Iterable[list[Span]]:
    """The spans of ``runs`` as their committed events make them, run by run (those ending
    at or after ``since``, seconds since the epoch, when given): the same ids and times the
    live sink sent."""
    builder = SpanBuilder(lookup=store.event, history=lambda e: step_before(store, e))
    cut = None if since is None else round(since * 1e9)
    for rid in runs:
        row = store.get_run(rid)
        if row is None:
            continue
        spans = builder.feed(run_info(row), store.events(rid))
        yield [s for s in spans if cut is None or s.end_ns >= cut]


def runs_since(store: Store, since: float) -> list[str]:
    """Runs that changed at or after ``since`` (their row's last update), oldest first."""
    return [r.id for r in sorted(store.list_runs(), key=lambda r: r.created)
            if r.updated >= since]
