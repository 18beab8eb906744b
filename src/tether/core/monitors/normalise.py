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

_TIME: Final = (r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?"
                r"(?:Z|[+-]\d{2}:?\d{2})?")
_UUID: Final = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_ULID: Final = r"(?<![0-9A-Za-z])[0-7][0-9A-HJKMNP-TV-Z]{25}(?![0-9A-Za-z])"
_HEX: Final = r"(?<![0-9A-Za-z])[0-9a-f]{16,}(?![0-9A-Za-z])"
_DIGITS: Final = r"(?<![0-9a-fA-F])\d{8,}(?![0-9a-fA-F])"  # not the start of a hex digest
_STRONG: Final = re.compile(f"(?P<time>{_TIME})|(?P<uuid>{_UUID})|(?P<ulid>{_ULID})|"
                            f"(?P<n>{_DIGITS})|(?P<hex>{_HEX})")
_WEAK: Final = re.compile(f"(?P<time>{_TIME})")
_DIGIT: Final = re.compile(r"\d")

FRESH_KEYS: Final = frozenset({
    "request_id", "requestid", "nonce", "idempotency_key", "idempotencykey", "trace_id",
    "span_id", "correlation_id", "timestamp", "ts", "now", "sent_at", "attempt"})
"""Argument keys whose value a caller makes fresh for each call (stripped even from
arguments)."""
ID_KEYS: Final = frozenset({"id", "uuid", "ulid", "time", "date", "created", "updated", "etag"})
"""Keys whose value is an identity or a moment (stripped from results)."""
BIG: Final = 10_000_000
"""Numbers at least this large (in size) are counters or epoch times in a result."""


def _sub(m: re.Match[str]) -> str:
    return f"<{m.lastgroup}>"


def _volatile_key(key: str, ids: bool) -> bool:
    k = key.lower()
    if k in FRESH_KEYS:
        return True
    return ids and (k in ID_KEYS or k.endswith(("_id", "_at", "_ts", "_time")))


def normalise(value: Any, *, ids: bool = True) -> Any:
    """``value`` (a JSON value) with its volatile parts replaced by placeholders
    (``<time>``, ``<uuid>``, ``<ulid>``, ``<hex>``, ``<n>``) or dropped (the values of
    volatile keys); see the module docstring for what ``ids`` changes."""
    if isinstance(value, str):
        if not _DIGIT.search(value):  # every pattern needs a digit: the common fast path
            return value
        return (_STRONG if ids else _WEAK).sub(_sub, value)
    if isinstance(value, dict):
        return {k: ("<v>" if _volatile_key(str(k), ids) else normalise(v, ids=ids))
                for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [normalise(v, ids=ids) for v in value]
    if ids and isinstance(value, int | float) and not isinstance(value, bool) and abs(value) >= BIG:
        return "<n>"
    return value


def digest(value: Any, *, ids: bool = True) -> bytes:
    """A 16-byte key of ``value`` once normalised: equal for values equal but for their
    volatile parts."""
    body = orjson.dumps(normalise(value, ids=ids), option=orjson.OPT_SORT_KEYS,
                        default=repr)
    return hashlib.blake2b(body, digest_size=16).digest()


def text_key(text: str) -> str:
    """A string's normalised form (``ids=True``), whitespace runs collapsed."""
    return " ".join(normalise(text).split())
