"""Journal times as the nanoseconds OTLP and the step histogram want.

The span builder and the metrics read the same events' times, so each stamp is parsed
once: the second read (the same string, its hash kept) is one dict look-up.
"""

from __future__ import annotations

from tether.core.ids import parse_iso

_SECONDS: dict[str, int] = {}
_NS: dict[str, int] = {}


def ns(stamp: str) -> int:
    """A journal time as nanoseconds since the epoch (exact: the journal keeps microseconds)."""
    got = _NS.get(stamp)
    if got is not None:
        return got
    if len(_NS) > 4096:
        _NS.clear()
    got = _NS[stamp] = _ns(stamp)
    return got


def _ns(stamp: str) -> int:
    # The journal's own form (2026-11-30T21:30:00.000000Z) by its whole seconds, cached
    # like the stamper that wrote it; any other ISO-8601 form the slow way.
    if len(stamp) == 27 and stamp[19] == "." and stamp[26] == "Z":
        sec = _SECONDS.get(stamp[:19])
        if sec is None:
            if len(_SECONDS) > 4096:
                _SECONDS.clear()
            sec = _SECONDS[stamp[:19]] = round(parse_iso(stamp[:19] + "Z"))
        return sec * 1_000_000_000 + int(stamp[20:26]) * 1000
    return round(parse_iso(stamp) * 1e6) * 1000
