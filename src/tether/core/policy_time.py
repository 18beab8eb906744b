"""Time windows of policy rules: wall-clock hours on chosen days, in an IANA time zone.

``{ between = "22:00-06:00", tz = "Europe/Berlin", days = ["fri"] }`` covers Friday
22:00 to Saturday 06:00: a window that crosses midnight belongs to the day it starts.
The window is tested on the local wall clock at the action's instant, so on a DST
change day "00:00-07:00" lasts six hours when the clocks go forward and eight when
they go back. :meth:`Window.until` is the first instant at which the wall clock has
left the window: when the end falls in the hour a spring-forward skips, the instant of
the jump; in the hour an autumn fold repeats, the next reading of it; and when the clocks
go back to before the window's start, the instant they do.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta, tzinfo
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from tether.core.policy_match import SpecError, is_list, suggest

DAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
WHEN_KEYS: Final = ("between", "tz", "days")
_BETWEEN = re.compile(r"(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})")
_DAY: Final = 86400


def zone(name: object, path: str) -> tzinfo:
    """The time zone named ``name`` (IANA, e.g. ``Europe/Berlin``); SpecError if unknown."""
    if not isinstance(name, str) or not name:
        raise SpecError(path, f"expected an IANA time zone name such as 'Europe/Berlin', got {name!r}")
    if name == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise SpecError(path, f"unknown time zone {name!r}{suggest(name, available_timezones())}") from None


def zone_name(tz: tzinfo) -> str:
    return str(getattr(tz, "key", None) or tz)


@functools.lru_cache(maxsize=1024)
def _wall(at: float, tz: tzinfo) -> tuple[int, float]:
    """Weekday (Monday 0) and seconds since local midnight; cached for the rules of one decision."""
    dt = datetime.fromtimestamp(at, tz)
    return dt.weekday(), dt.hour * 3600 + dt.minute * 60 + dt.second + dt.microsecond / 1e6


def _naive(at: float, tz: tzinfo) -> datetime:
    return datetime.fromtimestamp(at, tz).replace(tzinfo=None)


def _jump(wall: datetime, tz: tzinfo) -> float:
    """The instant the clock jumps over ``wall``, a time that a spring-forward skips."""
    a = wall.replace(tzinfo=tz, fold=0).timestamp()
    b = wall.replace(tzinfo=tz, fold=1).timestamp()
    lo, hi = math.floor(min(a, b)), math.ceil(max(a, b))
    while hi - lo > 1:  # the clock reads before `wall` at lo and after it at hi
        mid = (lo + hi) // 2
        if _naive(mid, tz) >= wall:
            hi = mid
        else:
            lo = mid
    return float(hi)


def _offset(at: float, tz: tzinfo) -> timedelta | None:
    return datetime.fromtimestamp(at, tz).utcoffset()


def _fall_back(tz: tzinfo, a: float, b: float) -> float | None:
    """The instant in (a, b] at which the clocks in ``tz`` go back, if they do."""
    before, after = _offset(a, tz), _offset(b, tz)
    if before is None or after is None or after >= before:
        return None
    lo, hi = math.floor(a), math.ceil(b)
    while hi - lo > 1:  # the offset is `before` at lo and `after` at hi
        mid = (lo + hi) // 2
        if _offset(mid, tz) == before:
            lo = mid
        else:
            hi = mid
    return float(hi)


def _instant(wall: datetime, tz: tzinfo, after: float) -> float:
    """The first instant after ``after`` at which the clock in ``tz`` reads ``wall`` or later."""
    found = [ts for fold in (0, 1)
             if _naive(ts := wall.replace(tzinfo=tz, fold=fold).timestamp(), tz) == wall]
    if not found:
        return _jump(wall, tz)
    later = [ts for ts in found if ts > after]
    return min(later) if later else max(found)


def _clock(text: str, path: str, *, end: bool) -> int:
    h, m = map(int, text.split(":"))
    if m > 59 or h > 24 or (h == 24 and (m or not end)):
        raise SpecError(path, f"{text!r} is not a time of day (00:00 to 23:59, or 24:00 as an end)")
    return h * 3600 + m * 60


def _parse_between(spec: object, path: str) -> tuple[int, int]:
    m = _BETWEEN.fullmatch(spec.strip()) if isinstance(spec, str) else None
    if m is None:
        raise SpecError(path, f"expected 'HH:MM-HH:MM' such as '00:00-07:00' or '22:00-06:00', got {spec!r}")
    start = _clock(f"{m[1]}:{m[2]}", path, end=False)
    end = _clock(f"{m[3]}:{m[4]}", path, end=True)
    if start == end:
        raise SpecError(path, f"{spec!r} is an empty window; write '00:00-24:00' for the whole day")
    return start, end


def _parse_days(spec: object, path: str) -> frozenset[int]:
    if spec is None:
        return frozenset(range(7))
    if not is_list(spec) or not spec:
        raise SpecError(path, f"expected a list of days such as ['mon', 'tue'], got {spec!r}")
    out = set()
    for d in spec:
        name = d.lower() if isinstance(d, str) else d
        if name not in DAYS:
            raise SpecError(path, f"unknown day {d!r}{suggest(str(name), DAYS)}; use {', '.join(DAYS)}")
        out.add(DAYS.index(name))
    return frozenset(out)


@dataclass(frozen=True, slots=True)
class Window:
    """Local hours on chosen days; compiled once, tested on every action that reaches the rule."""

    start: int
    """Seconds after local midnight."""
    end: int
    """Seconds after local midnight (86400 for 24:00); not after ``start`` when crossing midnight."""
    days: frozenset[int]
    """Weekdays (Monday 0) on which the window starts."""
    tz: tzinfo
    text: str
    """The window as written, with its time zone, for explanations."""

    @classmethod
    def compile(cls, spec: object, path: str, default_tz: tzinfo) -> Window:
        """From ``{ between = "00:00-07:00", tz = "Europe/Berlin", days = ["mon"] }``; all optional."""
        if not isinstance(spec, Mapping):
            raise SpecError(path, "expected a table such as { between = \"00:00-07:00\", "
                                  f"tz = \"Europe/Berlin\" }}, got {spec!r}")
        for key in spec:
            if key not in WHEN_KEYS:
                raise SpecError(f"{path}.{key}", f"unknown key{suggest(str(key), WHEN_KEYS)}; a window has "
                                                 f"{', '.join(WHEN_KEYS)}")
        between = spec.get("between", "00:00-24:00")
        start, end = _parse_between(between, f"{path}.between")
        tz = zone(spec["tz"], f"{path}.tz") if "tz" in spec else default_tz
        days = _parse_days(spec.get("days"), f"{path}.days")
        on = "" if len(days) == 7 else " on " + ",".join(DAYS[d] for d in sorted(days))
        return cls(start, end, days, tz, f"{str(between).strip()} {zone_name(tz)}{on}")

    @property
    def whole_week(self) -> bool:
        """True when the window never ends (every day, all day)."""
        return self.start == 0 and self.end == _DAY and len(self.days) == 7

    def contains(self, at: float) -> bool:
        try:
            weekday, tod = _wall(at, self.tz)
        except (OverflowError, OSError, ValueError):
            return False
        if self.start < self.end:
            return self.start <= tod < self.end and weekday in self.days
        return (tod >= self.start and weekday in self.days) or (
            tod < self.end and (weekday - 1) % 7 in self.days)

    def until(self, at: float) -> float:
        """The first instant after ``at`` (inside the window) at which the wall clock is outside it.

        An occurrence that starts as another ends continues it: ``00:00-24:00`` on Saturday and
        Sunday ends Monday 00:00.
        """
        t = at
        for _ in range(16):
            end = max(self._end_of(t), t + 1.0)
            # When the clocks go back on the way, the wall clock may leave the window then, or
            # fall into another occurrence of it that ends at another time: go on from there.
            back = _fall_back(self.tz, t, end)
            t = end if back is None else back
            if not self.contains(t):
                break
        return t

    def _end_of(self, at: float) -> float:
        local = datetime.fromtimestamp(at, self.tz)
        day = local.date()
        if self.start >= self.end and _wall(at, self.tz)[1] >= self.start:
            day += timedelta(days=1)  # crossing midnight, started today: ends tomorrow
        wall = datetime.combine(day, time()) + timedelta(seconds=self.end)
        return _instant(wall, self.tz, after=at)

    def explain(self, at: float) -> tuple[bool, str]:
        ok = self.contains(at)
        local = datetime.fromtimestamp(at, self.tz)
        return ok, f"{DAYS[local.weekday()]} {local:%H:%M} is {'inside' if ok else 'outside'} {self.text}"
