"""OTLP's ``ExportTraceServiceRequest``, encoded straight from span records (protobuf wire
format, no message objects).

The SDK's encoder builds a protobuf object per attribute: about 30 µs a span here, twice
the whole budget issue 11 gives telemetry per step. This one writes the bytes with the
key of each attribute and the resource encoded once, a few µs a span. The worker's
live export uses it; ``tether export-otel`` uses the SDK's, and the tests decode both
with ``opentelemetry-proto`` and require the same spans (tests/test_telemetry_otel.py).
Field numbers: opentelemetry/proto/trace/v1/trace.proto, common/v1/common.proto.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence

from tether.telemetry.spans import Span

_KINDS = {"internal": 1, "client": 3}
_Q = struct.Struct("<Q")
_D = struct.Struct("<d")
_SPAN_FLAGS = b"\x85\x01" + struct.pack("<I", 0x101)  # field 16 (fixed32): sampled, local parent
_keys: dict[str, bytes] = {}


def _varint(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    if n < 0x4000:  # a span's length, a step number: two bytes, no loop
        return bytes(((n & 0x7F) | 0x80, n >> 7))
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _ld(tag: int, payload: bytes) -> bytes:
    """A length-delimited field (``tag`` is the whole first byte)."""
    n = len(payload)
    return bytes((tag, n)) + payload if n < 0x80 else bytes((tag,)) + _varint(n) + payload


def _key(k: str) -> bytes:
    b = _keys.get(k)
    if b is None:
        b = _keys[k] = _ld(0x0A, k.encode())
    return b


def _any(v: object) -> bytes:
    if isinstance(v, str):
        return _ld(0x0A, v.encode())
    if isinstance(v, bool):
        return b"\x10\x01" if v else b"\x10\x00"
    if isinstance(v, int):
        return b"\x18" + _varint(v & 0xFFFFFFFFFFFFFFFF)
    if isinstance(v, float):
        return b"\x21" + _D.pack(v)
    if isinstance(v, (list, tuple)):
        return _ld(0x2A, b"".join(_ld(0x0A, _any(x)) for x in v))
    return _ld(0x0A, str(v).encode())


_pairs: dict[int, dict[tuple[str, object], bytes]] = {}


def attributes(attrs: Mapping[str, object], tag: int = 0x4A) -> bytes:
    """Repeated ``KeyValue`` fields (``tag``: 0x4A for a span's, 0x0A for a resource's)."""
    # A span's attributes mostly repeat (run id, agent, operation, epoch, the step a few
    # spans share): each pair of a string or an int is encoded once; the cache is dropped
    # when it grows.
    cache = _pairs.get(tag)
    if cache is None:
        cache = _pairs[tag] = {}
    out = []
    for k, v in attrs.items():
        t = type(v)
        if t is str or t is int:  # by type: 1, 1.0 and True are equal keys of a dict
            kv = (k, v)
            b = cache.get(kv)
            if b is None:
                if len(cache) > 8192:
                    cache.clear()
                b = cache[kv] = _ld(tag, _key(k) + _ld(0x12, _any(v)))
        else:
            b = _ld(tag, _key(k) + _ld(0x12, _any(v)))
        out.append(b)
    return b"".join(out)


def span(s: Span) -> bytes:
    """One ``Span`` message."""
    parts = [b"\x0a\x10", s.trace_id.to_bytes(16, "big"), b"\x12\x08",
             s.span_id.to_bytes(8, "big")]
    if s.parent_id is not None:
        parts += (b"\x22\x08", s.parent_id.to_bytes(8, "big"))
    parts += (_ld(0x2A, s.name.encode()), b"\x30", bytes((_KINDS[s.kind],)),
              b"\x39", _Q.pack(s.start_ns), b"\x41", _Q.pack(s.end_ns),
              attributes(s.attributes))
    for e in s.events:
        parts.append(_ld(0x5A, b"\x09" + _Q.pack(e.time_ns) + _ld(0x12, e.name.encode())
                         + attributes(e.attributes, 0x1A)))
    for x in s.links:
        parts.append(_ld(0x6A, b"\x0a\x10" + x.trace_id.to_bytes(16, "big") + b"\x12\x08"
                         + x.span_id.to_bytes(8, "big") + attributes(x.attributes, 0x22)
                         + b"\x35" + struct.pack("<I", 0x301)))
    if s.error is not None:
        parts.append(_ld(0x7A, _ld(0x12, s.error.encode()) + b"\x18\x02"))
    parts.append(_SPAN_FLAGS)
    return b"".join(parts)


class Encoder:
    """Requests for one resource and instrumentation scope (both encoded once)."""

    def __init__(self, resource: Mapping[str, object], scope: str, version: str) -> None:
        self._head = _ld(0x0A, attributes(resource, 0x0A))  # ResourceSpans.resource
        self._scope = _ld(0x0A, _ld(0x0A, scope.encode()) + _ld(0x12, version.encode()))

    def request(self, spans: Iterable[Span]) -> bytes:
        """An ``ExportTraceServiceRequest`` holding ``spans``."""
        body = b"".join(_ld(0x12, span(s)) for s in spans)  # ScopeSpans.spans
        scope_spans = _ld(0x12, self._scope + body)  # ResourceSpans.scope_spans
        return _ld(0x0A, self._head + scope_spans)  # ExportTraceServiceRequest.resource_spans

    def requests(self, spans: Sequence[Span], batch: int = 512) -> list[bytes]:
        return [self.request(spans[i:i + batch]) for i in range(0, len(spans), batch)]
