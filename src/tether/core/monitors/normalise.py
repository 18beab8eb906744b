"""Volatile parts of a JSON value stripped, so that two calls (or results, or messages)
that differ only by a fresh timestamp or request id compare equal.

Two strengths, because the same id means different things in different places:

* ``ids=True`` (results, answers, message bodies): ISO timestamps, UUIDs, ULIDs, long
  hex digests and long digit runs (counters, epoch times) become placeholders, and the
  values of id- and time-like keys (``id``, ``*_id``, ``created_at``, ``ts``...) are
  dropped. A tool that answers "job 01HX... queued at 2026-12-04T10:00:00Z" twice has
  answered the same thing twice.
* ``ids=False`` (a call's arguments): only what a caller makes fresh for every call is
  stripped (timestamps, and per-request metadata keys such as ``request_id``, ``nonce``,
  ``idempotency_key``). An id in the arguments names *what* the call acts on: marking
  ticket A done and then ticket B done are two calls, not one call twice.

Pure and deterministic; :func:`digest` gives a short key to compare and keep.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Final

import orjson

# ASCII classes (not \d, which is every Unicode digit and slower to scan); every
# branch starts at a word boundary, which lets the scanner skip most positions fast.
_TIME: Final = (r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:[.,][0-9]+)?)?"
                r"(?:Z|[+-][0-9]{2}:?[0-9]{2})?")
_UUID: Final = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"
_ULID: Final = r"[0-7][0-9A-HJKMNP-TV-Z]{25}\b"
_DIGITS: Final = r"[0-9]{8,}\b"
_HEX: Final = r"[0-9a-f]{16,}\b"
_STRONG: Final = re.compile(f"\\b(?:(?P<time>{_TIME})|(?P<uuid>{_UUID})|(?P<ulid>{_ULID})|"
                            f"(?P<n>{_DIGITS})|(?P<hex>{_HEX}))", re.ASCII)
_WEAK: Final = re.compile(f"\\b(?P<time>{_TIME})", re.ASCII)
_DIGIT: Final = re.compile(r"[0-9]")

FRESH_KEYS: Final = frozenset({
    "request_id", "requestId", "RequestId", "nonce", "idempotency_key", "idempotencyKey",
    "trace_id", "traceId", "span_id", "spanId", "correlation_id", "correlationId",
    "timestamp", "Timestamp", "ts", "now", "sent_at", "sentAt", "attempt"})
"""Argument keys whose value a caller makes fresh for each call (stripped even from
arguments), as they are spelt."""
ID_KEYS: Final = frozenset({"id", "uuid", "ulid", "time", "date", "created", "updated", "etag"})
"""Keys whose value is an identity or a moment (stripped from results)."""
BIG: Final = 10_000_000
"""Numbers at least this large (in size) are counters or epoch times in a result."""


def _sub(m: re.Match[str]) -> str:
    return f"<{m.lastgroup}>"


def _volatile_key(key: str, ids: bool) -> bool:
    if key in FRESH_KEYS:
        return True
    k = key.lower()
    return ids and (k in FRESH_KEYS or k in ID_KEYS or k.endswith(("_id", "_at", "_ts", "_time")))


def normalise(value: Any, *, ids: bool = True) -> Any:
    """``value`` (a JSON value) with its volatile parts replaced by placeholders
    (``<time>``, ``<uuid>``, ``<ulid>``, ``<hex>``, ``<n>``) or dropped (the values of
    volatile keys); see the module docstring for what ``ids`` changes."""
    if isinstance(value, str):
        if ids:  # every pattern needs a digit: the common fast path
            return _STRONG.sub(_sub, value) if _DIGIT.search(value) else value
        return _WEAK.sub(_sub, value) if "-" in value and ":" in value else value
    if isinstance(value, dict):
        return {k: ("<v>" if _volatile_key(str(k), ids) else normalise(v, ids=ids))
                for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [normalise(v, ids=ids) for v in value]
    if ids and isinstance(value, int | float) and not isinstance(value, bool) and abs(value) >= BIG:
        return "<n>"
    return value


_TIME_START: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:")


def maybe_fresh(value: Any) -> bool:
    """Whether ``normalise(value, ids=False)`` might change ``value``: a fresh key, or a
    string that might hold a timestamp (cheap: no regex, no encoding)."""
    if isinstance(value, str):
        return "-" in value and ":" in value and _TIME_START.search(value) is not None
    if isinstance(value, dict):
        if not FRESH_KEYS.isdisjoint(value):
            return True
        value = value.values()
    elif not isinstance(value, list):
        return False
    for v in value:  # noqa: SIM110  (a loop, not any(generator): on every call's path)
        if isinstance(v, str | dict | list) and maybe_fresh(v):
            return True
    return False


def digest(value: Any, *, ids: bool = True) -> bytes:
    """A 16-byte key of ``value`` once normalised: equal for values equal but for their
    volatile parts."""
    # Arguments mostly have nothing to strip, which is cheaper to see than to strip.
    norm = value if not ids and not maybe_fresh(value) else normalise(value, ids=ids)
    body = orjson.dumps(norm, option=orjson.OPT_SORT_KEYS, default=repr)
    return hashlib.blake2b(body, digest_size=16).digest()


_VOLATILE_CHARS: Final = {ord(c): None for c in (
    "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef:.,+- \t\n\r\f\v")}


def skeleton(text: str) -> str:
    """``text`` without every character a volatile part (or a whitespace run) can hold:
    cheap, and equal for any two texts whose :func:`text_key` is equal, so texts whose
    skeletons differ need not be normalised to be told apart."""
    return text.translate(_VOLATILE_CHARS)


def text_key(text: str) -> str:
    """A string's normalised form (``ids=True``), whitespace runs collapsed."""
    return " ".join(normalise(text).split())
