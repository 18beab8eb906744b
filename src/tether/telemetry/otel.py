"""Spans out over OTLP/HTTP (protobuf), with the OpenTelemetry SDK (extra ``tether[otel]``).

The endpoint, headers, timeout, TLS files and compression come from the standard
variables (``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``,
``OTEL_EXPORTER_OTLP_HEADERS``, ...) as the SDK's OTLP/HTTP exporter reads them, the
resource from ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES`` over tether's
defaults (``service.name=tether``). Live, spans are encoded by
:mod:`tether.telemetry.wire` and posted by the exporter's HTTP client (the sink batches
them, :class:`~tether.telemetry.sink.TelemetrySink`); a replay uses the SDK's encoder.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from tether._version import __version__
from tether.errors import UsageError
from tether.telemetry.spans import Span
from tether.telemetry.wire import Encoder

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan

INSTALL_HINT = "OpenTelemetry export needs the otel extra: pip install 'tether[otel]'"
ENDPOINT_VARS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


def configured() -> bool:
    """Whether the environment names an OTLP endpoint (``tether worker`` then exports)."""
    return any(os.environ.get(v) for v in ENDPOINT_VARS)


def _sdk() -> Any:
    try:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk import resources
        from opentelemetry.sdk import trace as sdk_trace
        from opentelemetry.sdk.trace import export
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    except ImportError as exc:
        raise UsageError(INSTALL_HINT) from exc
    return trace, OTLPSpanExporter, resources, sdk_trace, export, InstrumentationScope


class OtlpSpans:
    """Converts :class:`~tether.telemetry.spans.Span` records to SDK spans and exports them.

    Args:
        endpoint: the traces URL (``http://host:4318/v1/traces``); default from the
            environment, else the SDK's default (``http://localhost:4318/v1/traces``).
        resource: resource attributes over the defaults and under the environment's (e.g.
            ``{"openinference.project.name": "night"}`` for Arize Phoenix).
        live: encode with :mod:`tether.telemetry.wire` (a worker's sink); else with the
            SDK's encoder (``tether export-otel``).
    """

    def __init__(self, endpoint: str | None = None, *,
                 resource: Mapping[str, str] | None = None, live: bool = True) -> None:
        trace, exporter_cls, resources, sdk_trace, export, scope = _sdk()
        self._trace, self._sdk_trace = trace, sdk_trace
        self.resource = resources.Resource.create(
            {"service.name": "tether", **(resource or {})}).merge(
            resources.OTELResourceDetector().detect())
        self.scope = scope("tether", __version__)
        self.exporter = exporter_cls(endpoint=endpoint)
        self._ok = export.SpanExportResult.SUCCESS
        self._flags = trace.TraceFlags(trace.TraceFlags.SAMPLED)
        self._kinds = {"internal": trace.SpanKind.INTERNAL, "client": trace.SpanKind.CLIENT}
        self._status_ok = trace.Status(trace.StatusCode.UNSET)
        self._wire = Encoder(dict(self.resource.attributes), "tether", __version__) \
            if live else None

    def sdk_span(self, s: Span) -> ReadableSpan:
        """The SDK's form of a span record (ids, times and all)."""
        t, sdk = self._trace, self._sdk_trace
        ctx = t.SpanContext(s.trace_id, s.span_id, is_remote=False, trace_flags=self._flags)
        parent = None if s.parent_id is None else t.SpanContext(
            s.trace_id, s.parent_id, is_remote=False, trace_flags=self._flags)
        links = [t.Link(t.SpanContext(x.trace_id, x.span_id, is_remote=True,
                                      trace_flags=self._flags), x.attributes) for x in s.links]
        events = [sdk.Event(x.name, x.attributes, x.time_ns) for x in s.events]
        status = self._status_ok if s.error is None else t.Status(t.StatusCode.ERROR, s.error)
        span: ReadableSpan = sdk.ReadableSpan(s.name, ctx, parent, self.resource, s.attributes, events, links,
                                self._kinds[s.kind], None, status, s.start_ns, s.end_ns,
                                self.scope)
        return span

    def send(self, spans: Sequence[Span]) -> bool:
        """Export ``spans`` now, 512 a request; True if the receiver accepted them all."""
        ok = True
        for i in range(0, len(spans), 512):
            part = spans[i:i + 512]
            if self._wire is None:
                got = self.exporter.export([self.sdk_span(s) for s in part]) == self._ok
            else:
                got = self._post(self._wire.request(part), part)
            ok = ok and got
        return ok

    def _post(self, body: bytes, spans: Sequence[Span]) -> bool:
        """Send an encoded request through the exporter's HTTP client (its retries, TLS,
        headers, compression); an SDK without that client gets the spans to encode."""
        client = getattr(self.exporter, "_client", None)
        if client is None or not callable(getattr(client, "export", None)):
            return bool(self.exporter.export([self.sdk_span(s) for s in spans]) == self._ok)
        return bool(getattr(client.export(body), "success", False))

    def close(self) -> None:
        """Stop the exporter."""
        self.exporter.shutdown()
