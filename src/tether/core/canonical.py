"""Canonical JSON: UTF-8, sorted keys, no whitespace; and the hashes built on it.

Every backend hashes the same bytes, so a chain written by one store verifies
in another. orjson gives sorted compact UTF-8 output several times faster than
the standard library, which matters on the per-step hot path.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson


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
