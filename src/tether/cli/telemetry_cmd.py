"""``tether export-otel`` (history replayed as spans) and ``tether metrics`` (Prometheus
metrics served from the store); the worker's ``--otel`` and ``--metrics-port``."""

from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer
from typing import Annotated

import typer

from tether.cli.alerts_cmd import parse_since
from tether.cli.common import console, handle_errors, store
from tether.errors import UsageError
from tether.runtime.operator import find_run
from tether.store.protocol import Store
from tether.system_clock import SYSTEM_CLOCK
from tether.telemetry.otel import OtlpSpans, configured
from tether.telemetry.sink import TelemetrySink, replay_spans, runs_since

EndpointOpt = Annotated[str | None, typer.Option(
    help="OTLP/HTTP traces URL (default $OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, else "
         "$OTEL_EXPORTER_OTLP_ENDPOINT + /v1/traces, else http://localhost:4318/v1/traces).",
    metavar="URL")]
ResourceOpt = Annotated[list[str] | None, typer.Option(
    "--resource", help="Resource attribute, repeatable (over service.name=tether, under "
                       "$OTEL_RESOURCE_ATTRIBUTES), e.g. openinference.project.name=night.",
    metavar="KEY=VALUE")]


def _resource(pairs: list[str] | None) -> dict[str, str]:
    out = {}
    for p in pairs or []:
        key, sep, value = p.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--resource {p!r}: expected KEY=VALUE")
        out[key.strip()] = value
    return out


@handle_errors
def export_otel(run: Annotated[str | None, typer.Argument(
                    help="The run (id, name or a unique prefix); or --since.", metavar="RUN")]
                = None,
                since: Annotated[str | None, typer.Option(
                    help="Every run that changed since TIME: a span back from now (30m, 2h, "
                         "1d) or an ISO-8601 time; spans ending before it are left out.",
                    metavar="TIME")] = None,
                endpoint: EndpointOpt = None,
                resource: ResourceOpt = None) -> None:
    """Replay a run's history (or every run's since TIME) as OpenTelemetry spans over
    OTLP/HTTP: the same spans, ids and times a worker with --otel sends live."""
    if (run is None) == (since is None):
        raise UsageError("give a RUN or --since TIME (not both)")
    s = store(readonly=True)
    t = None if since is None else parse_since(since, SYSTEM_CLOCK.now())
    runs = [find_run(s, run).id] if run is not None else runs_since(s, t or 0.0)
    out = OtlpSpans(endpoint, resource=_resource(resource), live=False)
    sent, failed = 0, False
    try:
        for spans in replay_spans(s, runs, since=t):
            if spans and not out.send(spans):
                failed = True
            sent += len(spans)
    finally:
        out.close()
    if failed:
        raise UsageError(f"the OTLP receiver did not take all {sent} spans of {len(runs)} "
                         "runs (see the log above); check the endpoint and send them again")
    console.print(f"exported {sent} spans of {len(runs)} runs", highlight=False)


@handle_errors
def metrics(port: Annotated[int, typer.Option(help="Port to serve /metrics on.",
                                              metavar="PORT")] = 9464,
            host: Annotated[str, typer.Option(help="Address to listen on.",
                                              metavar="HOST")] = "127.0.0.1") -> None:
    """Serve Prometheus metrics read from the store (/metrics) until interrupted: counters
    of everything journaled so far, gauges of runs and approvals as they are now."""
    from tether.telemetry.metrics import EventMetrics, StoreGauges, StoreTail, serve
    s = store(readonly=True)
    m = EventMetrics(lookup=s.event)
    m.registry.register(StoreGauges(s, SYSTEM_CLOCK.now))
    tail = StoreTail(s, m)
    server = serve(m.registry, port, host, before=tail.update)
    console.print(f"serving metrics of {s.url} on http://{host}:{server.server_port}/metrics",
                  highlight=False, soft_wrap=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        server.server_close()


def worker_sink(s: Store, otel: bool | None, metrics_port: int | None,
                ) -> tuple[TelemetrySink | None, ThreadingHTTPServer | None]:
    """The worker's sink for ``--otel`` (None: on when an OTLP endpoint is configured) and
    ``--metrics-port``, and the metrics server to shut down afterwards."""
    spans = OtlpSpans() if (configured() if otel is None else otel) else None
    if spans is None and metrics_port is None:
        return None, None
    if metrics_port is None:
        return TelemetrySink(s, spans=spans), None
    from tether.telemetry.metrics import CommitMetrics, EventMetrics, StoreGauges, serve
    m = EventMetrics(lookup=s.event)
    m.registry.register(StoreGauges(s, SYSTEM_CLOCK.now))
    sink = TelemetrySink(s, spans=spans, metrics=m, commits=CommitMetrics(m.registry))
    server = serve(m.registry, metrics_port, before=sink.flush)  # a scrape sees every commit
    console.print(f"serving metrics on http://127.0.0.1:{server.server_port}/metrics",
                  highlight=False, soft_wrap=True)
    return sink, server
