"""Prometheus metrics from the journal (extra ``tether[metrics]``, ``prometheus-client``).

Counters and the step-latency histogram are folded from committed events by
:class:`EventMetrics` (the worker's live stream, or the store tailed by ``tether
metrics``); run and approval gauges are read from the store at each scrape
(:class:`StoreGauges`); the commit-latency histogram is the worker's own (each group
commit's transaction). Names and labels: docs/telemetry.md.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from tether.core.events import Event
from tether.errors import UsageError
from tether.store.protocol import Store
from tether.telemetry.spans import ns

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

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
        self.step_seconds = pc.Histogram(
            "tether_step_duration_seconds", "Steps from step.started to step.finished, by the "
            "journal's timestamps (the run's clock), by agent.", ["agent"],
            buckets=STEP_BUCKETS, registry=r)
        self._started: dict[str, tuple[int, str]] = {}
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self._classes: dict[str, str] = {}

    def feed(self, events: Iterable[Event]) -> None:
        """Count committed events (each run's in seq order)."""
        for e in events:
            k = e.kind
            p = e.payload if isinstance(e.payload, dict) else {}
            if k == "step.started":
                self._started[e.run] = (ns(e.time), _agent(e.actor))
            elif k == "step.finished":
                # step.finished is the system's; the step's agent is step.started's actor.
                t0, agent = self._started.pop(e.run, (None, "?"))
                self._child(self.steps, agent).inc()
                if t0 is not None:
                    self._child(self.step_seconds, agent).observe(max(0, ns(e.time) - t0) / 1e9)
            elif k == "model.called":
                self._model(e, p)
            elif k == "tool.called":
                self._child(self.tool_calls, _agent(e.actor), str(p.get("tool", "?"))).inc()
            elif k == "effect.intent":
                cls = str(p.get("effect", "irreversible"))
                self._classes[e.id] = cls
                self._child(self.effects, cls, "intent").inc()
            elif k in EFFECT_OUTCOMES and e.causes:
                self._child(self.effects, self._class_of(e.causes[0], k), EFFECT_OUTCOMES[k]).inc()
            elif k == "policy.decided":
                self._child(self.decisions, str(p.get("verdict", "?"))).inc()
            elif k == "alert":
                self._child(self.alerts, str(p.get("monitor", "?")), str(p.get("verdict", "?"))).inc()

    def _child(self, metric: Any, *labels: str) -> Any:
        # labels() checks and hashes its arguments at every call: keep each child once made.
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def _model(self, e: Event, p: dict[str, Any]) -> None:
        agent, model = _agent(e.actor), str(p.get("model", "?"))
        self._child(self.model_calls, agent, model).inc()
        r = p.get("response")
        usage = r.get("usage") if isinstance(r, dict) else None
        if isinstance(usage, dict):
            for kind in ("input", "output"):
                n = usage.get(f"{kind}_tokens")
                if isinstance(n, (int, float)) and n:
                    self._child(self.tokens, agent, model, kind).inc(n)
        cost = p.get("cost_usd")
        if isinstance(cost, (int, float)) and cost:
            self._child(self.cost, agent, model).inc(cost)

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
        self.seconds = pc.Histogram("tether_journal_commit_seconds", "Group commits of the "
                                    "journal: seconds per store transaction (with its fsync).",
                                    buckets=COMMIT_BUCKETS, registry=registry)
        self.writes = pc.Counter("tether_journal_commit_writes", "Run writes made durable by "
                                 "group commits.", registry=registry)


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
