"""Prometheus metrics from the journal (extra ``tether[metrics]``, ``prometheus-client``).

Counters and the step-latency histogram are folded from committed events by
:class:`EventMetrics` (the worker's live stream, or the store tailed by ``tether
metrics``); run and approval gauges are read from the store at each scrape
(:class:`StoreGauges`); the commit-latency histogram is the worker's own (each group
commit's transaction). Names and labels: docs/telemetry.md.
"""

from __future__ import annotations

import bisect
import itertools
import math
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from tether.core.events import Event
from tether.errors import UsageError
from tether.store.protocol import Store
from tether.system_clock import SYSTEM_CLOCK
from tether.telemetry.stamps import ns

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import HistogramMetricFamily, Metric

INSTALL_HINT = "Prometheus metrics need the metrics extra: pip install 'tether[metrics]'"
EFFECT_OUTCOMES = {"effect.done": "done", "effect.failed": "failed",
                   "effect.in_doubt": "in_doubt", "effect.resolved": "resolved",
                   "effect.undone": "undone", "effect.undo_failed": "undo_failed"}
STEP_BUCKETS = (0.001, 0.005, 0.025, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600)
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5)


def _client() -> Any:
    try:
        import prometheus_client
    except ImportError as exc:
        raise UsageError(INSTALL_HINT) from exc
    return prometheus_client


class EventMetrics:
    """Counters and histograms folded from committed events, in a registry of their own.

    Args:
        registry: where to register (default: a new one, see :attr:`registry`).
        lookup: an event by id (the store's), for the class of an effect whose intent this
            fold did not see.
    """

    def __init__(self, registry: CollectorRegistry | None = None,
                 lookup: Callable[[str], Event | None] | None = None) -> None:
        pc = _client()
        self.registry: CollectorRegistry = registry or pc.CollectorRegistry()
        r, self.lookup = self.registry, lookup
        self.steps = pc.Counter("tether_steps", "Steps finished, by agent.", ["agent"],
                                registry=r)
        self.model_calls = pc.Counter("tether_model_calls", "Model calls, by agent and model.",
                                      ["agent", "model"], registry=r)
        self.tokens = pc.Counter("tether_tokens", "Model tokens, by agent, model and type "
                                 "(input, output).", ["agent", "model", "type"], registry=r)
        self.cost = pc.Counter("tether_cost_usd", "Model cost in US dollars (the worker's "
                               "price table), by agent and model.", ["agent", "model"],
                               registry=r)
        self.tool_calls = pc.Counter("tether_tool_calls", "Read tool calls (tool.called), by "
                                     "agent and tool.", ["agent", "tool"], registry=r)
        self.effects = pc.Counter("tether_effects", "Effects, by class (reversible, "
                                  "irreversible) and outcome (intent, done, failed, in_doubt, "
                                  "resolved, undone, undo_failed).", ["class", "outcome"],
                                  registry=r)
        self.decisions = pc.Counter("tether_policy_decisions", "Policy decisions, by verdict.",
                                    ["verdict"], registry=r)
        self.alerts = pc.Counter("tether_alerts", "Monitor alerts, by monitor and verdict.",
                                 ["monitor", "verdict"], registry=r)
        self.step_seconds = FoldedHistogram(
            "tether_step_duration_seconds", "Steps from step.started to step.finished, by the "
            "journal's timestamps (the run's clock), by agent.", ("agent",), STEP_BUCKETS)
        r.register(self.step_seconds)
        self._started: dict[str, tuple[int, str]] = {}
        self._children: dict[tuple[Any, ...], Any] = {}
        self._classes: dict[str, str] = {}

    def feed(self, events: Iterable[Event]) -> None:
        """Count committed events (each run's in seq order)."""
        # Tallied in plain dicts, then added to the metrics once per call: prometheus-client
        # takes a lock per inc() and two per observe(), a µs each, and the sink feeds a whole
        # round of commits in one call.
        counts: dict[tuple[Any, ...], float] = {}
        durations: dict[str, list[float]] = {}
        for e in events:
            k = e.kind
            if k == "step.started":
                self._started[e.run] = (ns(e.time), _agent(e.actor))
                continue
            p = e.payload if isinstance(e.payload, dict) else {}
            if k == "step.finished":
                # step.finished is the system's; the step's agent is step.started's actor.
                t0, agent = self._started.pop(e.run, (None, "?"))
                key: tuple[Any, ...] = (self.steps, agent)
                counts[key] = counts.get(key, 0) + 1
                if t0 is not None:
                    took = max(0, ns(e.time) - t0) / 1e9
                    got = durations.get(agent)
                    if got is None:
                        durations[agent] = [took]
                    else:
                        got.append(took)
                continue
            if k == "model.called":
                self._model(e, p, counts)
                continue
            other = self._key(e, k, p)
            if other is not None:
                counts[other] = counts.get(other, 0) + 1
        for key, n in counts.items():
            self._child(key).inc(n)
        for agent, took_all in durations.items():
            self.step_seconds.observe((agent,), took_all)

    def _key(self, e: Event, k: str, p: dict[str, Any]) -> tuple[Any, ...] | None:
        """The counter (and its labels) that one event of another kind adds 1 to, if any."""
        if k == "tool.called":
            return (self.tool_calls, _agent(e.actor), str(p.get("tool", "?")))
        if k == "effect.intent":
            cls = str(p.get("effect", "irreversible"))
            self._classes[e.id] = cls
            return (self.effects, cls, "intent")
        if k in EFFECT_OUTCOMES and e.causes:
            return (self.effects, self._class_of(e.causes[0], k), EFFECT_OUTCOMES[k])
        if k == "policy.decided":
            return (self.decisions, str(p.get("verdict", "?")))
        if k == "alert":
            return (self.alerts, str(p.get("monitor", "?")), str(p.get("verdict", "?")))
        return None

    def _child(self, key: tuple[Any, ...]) -> Any:
        # labels() checks and hashes its arguments at every call: keep each child once made.
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = key[0].labels(*key[1:])
        return child

    def _model(self, e: Event, p: dict[str, Any], counts: dict[tuple[Any, ...], float]) -> None:
        agent, model = _agent(e.actor), str(p.get("model", "?"))
        key: tuple[Any, ...] = (self.model_calls, agent, model)
        counts[key] = counts.get(key, 0) + 1
        r = p.get("response")
        usage = r.get("usage") if isinstance(r, dict) else None
        if isinstance(usage, dict):
            for kind in ("input", "output"):
                n = usage.get(f"{kind}_tokens")
                if isinstance(n, (int, float)) and n:
                    key = (self.tokens, agent, model, kind)
                    counts[key] = counts.get(key, 0) + n
        cost = p.get("cost_usd")
        if isinstance(cost, (int, float)) and cost:
            key = (self.cost, agent, model)
            counts[key] = counts.get(key, 0) + cost

    def _class_of(self, intent: str, kind: str) -> str:
        # An intent stays known until its effect settles; a retry or an undo comes later.
        final = kind in ("effect.done", "effect.failed", "effect.undone")
        cls = self._classes.pop(intent, None) if final else self._classes.get(intent)
        if cls is None and self.lookup is not None:
            ev = self.lookup(intent)
            if ev is not None and isinstance(ev.payload, dict):
                cls = str(ev.payload.get("effect", "irreversible"))
        return cls or "unknown"


class CommitMetrics:
    """The worker's group commits: how long each transaction took."""

    def __init__(self, registry: CollectorRegistry) -> None:
        pc = _client()
        self.seconds = FoldedHistogram("tether_journal_commit_seconds", "Group commits of the "
                                       "journal: seconds per store transaction (with its "
                                       "fsync).", (), COMMIT_BUCKETS)
        registry.register(self.seconds)
        self.writes = pc.Counter("tether_journal_commit_writes", "Run writes made durable by "
                                 "group commits.", registry=registry)

    def feed(self, seconds: Sequence[float], writes: int) -> None:
        """Count commits: each one's seconds, and the writes they made durable together."""
        self.seconds.observe((), seconds)
        if writes:
            self.writes.inc(writes)


class FoldedHistogram:
    """A histogram fed many values at once (a collector: register it in a registry).

    prometheus-client's ``Histogram.observe`` takes two locks a value; this one takes one a
    call, and exposes the same samples (``_bucket``, ``_count``, ``_sum``, ``_created``).
    """

    def __init__(self, name: str, documentation: str, labels: Sequence[str],
                 buckets: Sequence[float], now: Callable[[], float] = SYSTEM_CLOCK.now) -> None:
        self.name, self.documentation, self.labels = name, documentation, tuple(labels)
        self.now = now  # when each labelled child was made (its ``_created`` sample)
        self.bounds = [*map(float, buckets), math.inf]
        self._le = [_go_float(b) for b in self.bounds]
        self._children: dict[tuple[str, ...], tuple[list[int], list[float], float]] = {}
        self._lock = threading.Lock()
        if not self.labels:  # shown from the start, at zero, as prometheus-client does
            self.observe((), ())

    def observe(self, labels: tuple[str, ...], values: Iterable[float]) -> None:
        """Observe ``values`` under ``labels`` (in the order of :attr:`labels`)."""
        bounds = self.bounds
        with self._lock:
            child = self._children.get(labels)
            if child is None:
                child = self._children[labels] = ([0] * len(bounds), [0.0], self.now())
            counts, total = child[0], child[1]
            for v in values:
                counts[bisect.bisect_left(bounds, v)] += 1  # a bucket holds values <= its le
                total[0] += v

    def describe(self) -> list[Metric]:
        return [self._family()]

    def collect(self) -> Iterator[Metric]:
        fam = self._family()
        with self._lock:
            children = [(k, list(c), t[0], made) for k, (c, t, made) in self._children.items()]
        for labels, counts, total, made in children:
            fam.add_metric(labels, list(zip(self._le, itertools.accumulate(counts),
                                            strict=True)), total)
            fam.samples.append(fam.samples[-1]._replace(
                name=self.name + "_created", value=made))
        yield fam

    def _family(self) -> HistogramMetricFamily:
        from prometheus_client.core import HistogramMetricFamily
        return HistogramMetricFamily(self.name, self.documentation, labels=self.labels)


def _go_float(b: float) -> str:
    """A bucket bound as prometheus-client writes ``le`` (``+Inf``, ``1.0``)."""
    from prometheus_client.utils import floatToGoString
    return str(floatToGoString(b))  # type: ignore[no-untyped-call]


class StoreGauges:
    """Run and approval gauges, read from the store at each scrape."""

    def __init__(self, store: Store, now: Callable[[], float]) -> None:
        self.store, self.now = store, now

    def describe(self) -> list[Metric]:
        return []  # read at scrape time only: registering must not touch the store

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily
        runs = GaugeMetricFamily("tether_runs", "Runs, by status.", labels=["status"])
        counts: dict[str, int] = {}
        for row in self.store.list_runs():
            counts[row.status] = counts.get(row.status, 0) + 1
        for status, n in sorted(counts.items()):
            runs.add_metric([status], n)
        yield runs
        pending = self.store.approvals(status="pending")
        now = self.now()
        yield GaugeMetricFamily("tether_approvals_pending", "Approvals waiting for a person.",
                                value=len(pending))
        oldest = max((now - a.requested_at for a in pending), default=0.0)
        yield GaugeMetricFamily("tether_approval_oldest_age_seconds", "Age of the oldest "
                                "pending approval (0 when none).", value=max(0.0, oldest))


class StoreTail:
    """Feeds an :class:`EventMetrics` the events committed to the store since the last call
    (``tether metrics``): each run's events after the seq it last saw."""

    def __init__(self, store: Store, metrics: EventMetrics) -> None:
        self.store, self.metrics = store, metrics
        self._seen: dict[str, int] = {}
        self._lock = threading.Lock()

    def update(self) -> int:
        """Read and count what is new; the number of events counted."""
        with self._lock:
            n = 0
            for row in sorted(self.store.list_runs(), key=lambda r: r.created):
                seen = self._seen.get(row.id, 0)
                if row.seq > seen:
                    evs = self.store.events(row.id, after_seq=seen)
                    self.metrics.feed(evs)
                    n += len(evs)
                    self._seen[row.id] = evs[-1].seq if evs else seen
            return n


def serve(registry: CollectorRegistry, port: int, host: str = "127.0.0.1",
          before: Callable[[], object] | None = None) -> ThreadingHTTPServer:
    """Serve ``/metrics`` (Prometheus text format) in a daemon thread; ``before`` runs first
    at each scrape (a store tail). Returns the server (``shutdown()`` stops it)."""
    pc = _client()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] not in ("/metrics", "/"):
                self.send_error(404)
                return
            if before is not None:
                before()
            body = pc.generate_latest(registry)
            self.send_response(200)
            self.send_header("Content-Type", pc.CONTENT_TYPE_LATEST)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # a scrape every 15 s is no news

    try:
        server = ThreadingHTTPServer((host, port), Handler)
    except (OSError, OverflowError) as exc:  # taken, not ours to bind, out of range
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise UsageError(f"cannot serve metrics on {host}:{port} ({why}); choose a free "
                         "port between 1024 and 65535") from None
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="tether-metrics", daemon=True).start()
    return server


def _agent(actor: str) -> str:
    return actor.removeprefix("agent:")
