"""Canonical JSON: UTF-8, sorted keys, no whitespace; and the hashes built on it.

Every backend hashes the same bytes, so a chain written by one store verifies
in another. orjson gives sorted compact UTF-8 output several times faster than
the standard library, which matters on the per-step hot path.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from tether.errors import UsageError


def dumps(value: Any) -> bytes:
    """Encode ``value`` canonically. Raises TypeError for anything not JSON."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def loads(data: bytes | str) -> Any:
    """Decode JSON bytes or text."""
    return orjson.loads(data)


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256 of raw bytes."""
    return hashlib.sha256(data).hexdigest()


def digest(value: Any) -> str:
    """Hex SHA-256 of the canonical encoding of ``value``."""
    return hashlib.sha256(dumps(value)).hexdigest()


def json_safe(value: Any) -> Any:
    """The value as the journal keeps it, so live and replayed calls return the same.

    Never raises: a tool's result must be journaled even when it is not JSON
    (the effect happened), so such values are kept in a lenient form
    (non-string keys and unknown objects as strings, or the value's repr).
    """
    if value is None or isinstance(value, str | bool | int):
        return value
    try:
        return loads(dumps(value))
    except TypeError:
        pass
    try:
        return orjson.loads(orjson.dumps(value, default=repr,
                                         option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS))
    except TypeError:
        return repr(value)


def journalable(tool: str, value: Any) -> Any:
    """A read tool's result as journaled; one that is not JSON is the tool's error.

    A read changed nothing, so nothing is lost by refusing it; turning it into another
    type (its repr) would hand the step something the tool never returned.
    """
    if value is None or isinstance(value, bool | int):
        return value
    try:
        return loads(dumps(value))
    except (TypeError, ValueError) as exc:
        raise UsageError(f"tool {tool} returned a value the journal cannot keep as JSON "
                         f"({exc}); return text, numbers, booleans, null, lists and objects "
                         "with text keys") from None
