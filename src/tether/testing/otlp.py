"""A real OTLP/HTTP receiver on loopback that decodes what an exporter sends.

It parses each ``POST /v1/traces`` body as an ``ExportTraceServiceRequest``
(protobuf, from ``opentelemetry-proto``; gzip when the exporter compresses) and
keeps every span as a plain :class:`ReceivedSpan`, so tests assert on what went
over the wire, not on what the exporter was handed.

Example:
    >>> with OtlpReceiver() as rx:                                    # doctest: +SKIP
    ...     os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = rx.endpoint
    ...     ...
    ...     [span] = rx.spans
"""

from __future__ import annotations

import gzip
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True, slots=True)
class ReceivedSpan:
    """One span as received (ids as lowercase hex, as OTLP/JSON and most UIs show them)."""

    name: str
    kind: str
    """``INTERNAL``, ``CLIENT``, ... (the protobuf enum's name without ``SPAN_KIND_``)."""
    trace_id: str
    span_id: str
    parent_id: str
    """Empty for a root span."""
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    events: list[tuple[str, int, dict[str, Any]]]
    links: list[tuple[str, str, dict[str, Any]]]
    status: tuple[str, str]
    """(``UNSET``/``OK``/``ERROR``, message)."""
    resource: dict[str, Any] = field(default_factory=dict)
    scope: str = ""


def _value(v: Any) -> Any:
    which = v.WhichOneof("value")
    if which == "array_value":
        return [_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, which) if which else None


def _attrs(kvs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in kvs}


def decode(body: bytes) -> list[ReceivedSpan]:
    """The spans of one ``ExportTraceServiceRequest`` body."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

    req = ExportTraceServiceRequest()
    req.ParseFromString(body)
    out = []
    for rs in req.resource_spans:
        resource = _attrs(rs.resource.attributes)
        for ss in rs.scope_spans:
            for s in ss.spans:
                out.append(ReceivedSpan(
                    s.name, Span.SpanKind.Name(s.kind).removeprefix("SPAN_KIND_"),
                    s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(),
                    s.start_time_unix_nano, s.end_time_unix_nano, _attrs(s.attributes),
                    [(e.name, e.time_unix_nano, _attrs(e.attributes)) for e in s.events],
                    [(x.trace_id.hex(), x.span_id.hex(), _attrs(x.attributes)) for x in s.links],
                    (Status.StatusCode.Name(s.status.code).removeprefix("STATUS_CODE_"),
                     s.status.message), resource, ss.scope.name))
    return out


class OtlpReceiver:
    """A loopback OTLP/HTTP traces receiver; a context manager that serves in a thread."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.requests = 0
        self._lock = threading.Lock()
        rx = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces" or \
                        self.headers.get("Content-Type") != "application/x-protobuf":
                    self.send_error(415 if self.path == "/v1/traces" else 404)
                    return
                spans = decode(body)
                with rx._lock:
                    rx.spans.extend(spans)
                    rx.requests += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        """The base URL (``OTEL_EXPORTER_OTLP_ENDPOINT``); traces go to ``/v1/traces``."""
        return f"http://127.0.0.1:{self._server.server_port}"

    def __enter__(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
