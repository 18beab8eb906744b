"""OpenTelemetry spans exported as JSON, read into one flat form.

Two JSON forms are read:

* OTLP/JSON (the OTLP specification's JSON encoding, as the Collector's file
  exporter writes it): ``{"resourceSpans": [{"resource", "scopeSpans": [{"spans":
  [...]}]}]}``, attributes as ``[{"key", "value": {"stringValue": ...}}]``, times
  as ``startTimeUnixNano``;
* the Python SDK's own span JSON (``ReadableSpan.to_json()``, what its console
  and in-memory exporters hold): ``{"context": {"trace_id", "span_id"},
  "parent_id", "start_time", "attributes": {...}, "status", "resource"}``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tether.core.ids import parse_iso
from tether.errors import InvalidTranscript


@dataclass(frozen=True, slots=True)
class Span:
    """One span, whichever JSON form it came in."""

    index: int
    """Its 0-based position among the file's spans (for error messages)."""
    trace: str
    id: str
    parent: str | None
    name: str
    start: float | None
    end: float | None
    attrs: dict[str, Any]
    error: str | None
    """The status description of a span whose status is ERROR."""
    resource: dict[str, Any]


def is_spans(value: Any) -> bool:
    """Whether a JSON value holds spans in one of the forms above."""
    if isinstance(value, dict):
        return "resourceSpans" in value or ("context" in value and "attributes" in value)
    return bool(value) and isinstance(value, list) and all(is_spans(v) for v in value[:1])


def spans_of(value: Any, first: int = 0) -> Iterator[Span]:
    """The spans in ``value`` (an OTLP export, an SDK span, or a list of either);
    ``first`` is the index the first one gets."""
    n = first
    items = value if isinstance(value, list) else [value]
    for item in items:
        if isinstance(item, dict) and "resourceSpans" in item:
            for s in _otlp(item, n):
                yield s
                n += 1
        else:
            yield _sdk(item, n)
            n += 1


def _otlp(export: dict[str, Any], n: int) -> Iterator[Span]:
    for ri, rs in enumerate(_list(export.get("resourceSpans"), n, "resourceSpans")):
        res = _attrs((rs.get("resource") or {}).get("attributes"), n, f"resourceSpans[{ri}]")
        for si, ss in enumerate(_list(rs.get("scopeSpans"), n, f"resourceSpans[{ri}].scopeSpans")):
            for sp in _list(ss.get("spans"), n, f"resourceSpans[{ri}].scopeSpans[{si}].spans"):
                yield _otlp_span(sp, n, res)
                n += 1


def _otlp_span(sp: Any, n: int, res: dict[str, Any]) -> Span:
    if not isinstance(sp, dict):
        raise InvalidTranscript(None, f"spans[{n}]", "a span must be an object")
    for key in ("traceId", "spanId"):
        if not isinstance(sp.get(key), str) or not sp[key]:
            raise InvalidTranscript(None, f"spans[{n}].{key}", "missing")
    status = sp.get("status") or {}
    err = status.get("message") or "error" if status.get("code") in (2, "STATUS_CODE_ERROR") else None
    return Span(n, sp["traceId"], sp["spanId"], sp.get("parentSpanId") or None,
                str(sp.get("name", "")), _nanos(sp.get("startTimeUnixNano")),
                _nanos(sp.get("endTimeUnixNano")), _attrs(sp.get("attributes"), n, f"spans[{n}]"),
                err, res)


def _sdk(sp: Any, n: int) -> Span:
    ctx = sp.get("context") if isinstance(sp, dict) else None
    if not isinstance(ctx, dict) or not ctx.get("trace_id") or not ctx.get("span_id"):
        raise InvalidTranscript(None, f"spans[{n}].context", "missing trace_id or span_id: "
                                "not an OpenTelemetry span")
    attrs = sp.get("attributes") or {}
    if not isinstance(attrs, dict):
        raise InvalidTranscript(None, f"spans[{n}].attributes", "must be an object")
    status = sp.get("status") or {}
    err = (status.get("description") or "error") if status.get("status_code") == "ERROR" else None
    res = (sp.get("resource") or {}).get("attributes") or {}
    return Span(n, str(ctx["trace_id"]), str(ctx["span_id"]), sp.get("parent_id") or None,
                str(sp.get("name", "")), _iso(sp.get("start_time"), n),
                _iso(sp.get("end_time"), n), dict(attrs), err, dict(res))


def _list(v: Any, n: int, where: str) -> list[Any]:
    if v is None:
        return []
    if not isinstance(v, list):
        raise InvalidTranscript(None, where, f"must be a list (at span {n})")
    return v


def _attrs(kvs: Any, n: int, where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, kv in enumerate(_list(kvs, n, f"{where}.attributes")):
        if not isinstance(kv, dict) or not isinstance(kv.get("key"), str):
            raise InvalidTranscript(None, f"{where}.attributes[{k}]", "must be {\"key\", \"value\"}")
        out[kv["key"]] = any_value(kv.get("value"))
    return out


def any_value(v: Any) -> Any:
    """An OTLP/JSON ``AnyValue`` as a plain JSON value."""
    if not isinstance(v, dict):
        return v
    if "arrayValue" in v:
        return [any_value(x) for x in (v["arrayValue"] or {}).get("values", [])]
    if "kvlistValue" in v:
        return {kv["key"]: any_value(kv.get("value"))
                for kv in (v["kvlistValue"] or {}).get("values", [])}
    if "intValue" in v:
        return int(v["intValue"])  # int64 travels as a string in OTLP/JSON
    for key in ("stringValue", "boolValue", "doubleValue", "bytesValue"):
        if key in v:
            return v[key]
    return None


def _nanos(v: Any) -> float | None:
    try:
        return int(v) / 1e9 if v is not None else None
    except (TypeError, ValueError):
        return None


def _iso(v: Any, n: int) -> float | None:
    if v is None:
        return None
    try:
        return parse_iso(str(v))
    except ValueError:
        raise InvalidTranscript(None, f"spans[{n}].start_time", f"{v!r} is not an ISO time") from None
