"""The committed stream's sink (a worker's ``on_commit``), and the same spans replayed
from the store (``tether export-otel``).

Only what a transaction made durable reaches the sink, after the commit: an event
that was rolled back, or refused with its write, never becomes a span or a count.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from tether.store.protocol import Store
from tether.store.records import RunRow, Write
from tether.telemetry.metrics import CommitMetrics, EventMetrics
from tether.telemetry.otel import OtlpSpans
from tether.telemetry.spans import RunInfo, Span, SpanBuilder

log = logging.getLogger("tether.telemetry")
_NO_STEP = frozenset({"step.started", "run.started", "run.woke", "command", "run.resumed"})
"""Kinds a write may begin with that need no earlier events of the step."""


def run_info(row: RunRow) -> RunInfo:
    """What spans say of a run, from its row."""
    agent = row.spec.get("agent_name") if isinstance(row.spec, dict) else None
    return RunInfo(row.id, row.name, str(agent or row.agent), row.swarm)


class TelemetrySink:
    """Spans and metrics of a worker's commits; give it as ``Worker(on_commit=...)``.

    Args:
        store: the worker's store (a step's earlier events after a restart, links).
        spans: where spans go, or None for none.
        metrics: the counters to fold events into, or None.
        commits: the commit-latency histogram, or None.
    """

    def __init__(self, store: Store, *, spans: OtlpSpans | None = None,
                 metrics: EventMetrics | None = None,
                 commits: CommitMetrics | None = None) -> None:
        self.store = store
        self.spans = spans
        self.metrics = metrics
        self.commits = commits
        self.builder = SpanBuilder(lookup=store.event)
        self._infos: dict[str, tuple[RunRow, RunInfo]] = {}

    def __call__(self, writes: Sequence[Write], seconds: float) -> None:
        if self.commits is not None:
            self.commits.seconds.observe(seconds)
            self.commits.writes.inc(len(writes))
        for w in writes:
            if not w.events:
                continue
            if self.metrics is not None:
                self.metrics.feed(w.events)
            if self.spans is not None:
                info = self._info(w)
                self._resume(w, info)
                made = self.builder.feed(info, w.events)
                if made:
                    self.spans.send(made)

    def _info(self, w: Write) -> RunInfo:
        row = w.run_row
        if row is None:
            return RunInfo(w.run)
        got = self._infos.get(w.run)
        if got is None or got[0] is not row:
            got = self._infos[w.run] = (row, run_info(row))
        return got[1]

    def _resume(self, w: Write, info: RunInfo) -> None:
        """A step this builder did not see begin (the run was taken after a restart, or
        after an approval): its earlier events, to rebuild the step's state. Their spans
        were the earlier owner's to send."""
        e0 = w.events[0]
        if e0.kind in _NO_STEP or self.builder.open_step(w.run) == (e0.epoch, e0.step):
            return
        before = [e for e in self.store.tail_events(w.run, e0.epoch, e0.step) if e.seq < e0.seq]
        if before:
            self.builder.feed(info, before)  # state only: the spans are dropped

    def close(self) -> None:
        """Send what is queued and stop exporting."""
        if self.spans is not None:
            self.spans.close()


def replay_spans(store: Store, runs: Iterable[str], *, since: float | None = None,
                 ) -> Iterable[list[Span]]:
    """The spans of ``runs`` as their committed events make them, run by run (those ending
    at or after ``since``, seconds since the epoch, when given): the same ids and times the
    live sink sent."""
    builder = SpanBuilder(lookup=store.event)
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
