"""Budgets: pure checks of usage against caps and rolling windows.

A budget is a flat mapping. A plain key is a lifetime cap (``steps``,
``input_tokens``, ``output_tokens``, ``tokens``, ``cost_usd``, ``tool_calls``,
``wall_seconds``); a key with a window suffix caps the usage inside a rolling
window ending now (``cost_usd_per_day``, ``tokens_per_hour``,
``tool_calls_per_minute``). An always-on loop can thus run for weeks inside a
daily budget. ``wall_seconds`` counts time spent inside steps, not sleeping.

What a reached cap does follows the key after a colon (``on_exceed``): a rolling
window sleeps the run until enough of the window has passed (``KEY`` or
``KEY:sleep``) or pauses it for a human (``KEY:pause``); a lifetime cap never
frees, so it always pauses.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from tether.errors import UsageError

USAGE_KEYS: Final = ("steps", "input_tokens", "output_tokens", "cost_usd", "tool_calls",
                     "wall_seconds")
"""What a run counts: lifetime in its row, per minute in the usage table."""
METRICS: Final = (*USAGE_KEYS[:3], "tokens", *USAGE_KEYS[3:])
"""What a budget can cap: the counters, and ``tokens`` (input + output) beside its parts."""
WINDOWS: Final = {"per_minute": 60.0, "per_hour": 3600.0, "per_day": 86400.0,
                  "per_week": 7 * 86400.0}
ON_EXCEED: Final = ("sleep", "pause")
BUCKET: Final = 60.0
"""Usage is kept in buckets of a minute of the run's clock."""


@dataclass(frozen=True, slots=True)
class Limit:
    """One parsed budget key."""

    key: str
    metric: str
    window: float | None
    """Window length in seconds, or None for a lifetime cap."""
    on_exceed: str = "pause"
    """``sleep`` (until the window frees) or ``pause`` (for a human)."""

    @property
    def cap(self) -> str:
        """The key without its ``on_exceed``: two keys with the same cap replace each other."""
        return self.key.partition(":")[0]


def parse_key(key: str) -> Limit:
    """Parse ``cost_usd_per_day[:pause]`` into metric, window and what reaching it does;
    UsageError for unknown keys."""
    name, colon, mode = key.partition(":")
    if colon and mode not in ON_EXCEED:
        raise UsageError(f"budget key {key!r}: {mode!r} is not an on_exceed; write "
                         f"{name}:sleep or {name}:pause")
    for suffix, seconds in WINDOWS.items():
        if name.endswith("_" + suffix):
            metric = name[: -len(suffix) - 1]
            if metric in METRICS:
                return Limit(key, metric, seconds, mode or "sleep")
    if name in METRICS:
        if mode == "sleep":
            raise UsageError(f"budget key {key!r}: a lifetime cap never frees, so it cannot "
                             f"sleep; write {name} (reaching it pauses the run)")
        return Limit(key, name, None)
    raise UsageError(f"unknown budget key {key!r}: use one of {', '.join(METRICS)}, optionally "
                     f"with a window suffix ({', '.join('_' + w for w in WINDOWS)}) and an "
                     "on_exceed (:sleep, the default for windows, or :pause)")


def validate(budget: Mapping[str, float]) -> dict[str, float]:
    """Check every key and value of a budget; return it as floats."""
    out = {}
    for k, v in budget.items():
        parse_key(k)
        try:
            fv = float(v)
        except (TypeError, ValueError):
            raise UsageError(f"budget {k}: {v!r} is not a number") from None
        if not math.isfinite(fv) or fv < 0:
            raise UsageError(f"budget {k}: must be a finite number >= 0, got {v!r}")
        out[k] = fv
    return out


def value(usage: Mapping[str, float], metric: str) -> float:
    """A metric's value in a usage mapping (``tokens`` is input plus output)."""
    return _value(usage, metric)


def _value(usage: Mapping[str, float], metric: str) -> float:
    if metric == "tokens":
        return usage.get("input_tokens", 0.0) + usage.get("output_tokens", 0.0)
    return usage.get(metric, 0.0)


def exceeded(budget: Mapping[str, float], lifetime: Mapping[str, float],
             windows: Mapping[float, Mapping[str, float]]) -> tuple[Limit, float] | None:
    """The first limit reached, with the usage that reached it; None while within budget.
    A limit that pauses comes before one that sleeps (sleeping would not free it).

    Args:
        budget: the caps.
        lifetime: lifetime usage counters.
        windows: usage inside each window length (seconds) that the budget names.
    """
    asleep = None
    for key, cap in budget.items():
        lim = parse_key(key)
        used = _value(lifetime if lim.window is None else windows.get(lim.window, {}), lim.metric)
        if used >= cap:
            if lim.on_exceed == "pause":
                return lim, used
            asleep = asleep or (lim, used)
    return asleep


def merge(old: Mapping[str, float], changes: Mapping[str, float],
          unset: Iterable[str] = ()) -> dict[str, float]:
    """``old`` with ``changes`` set and ``unset`` removed (both checked); a key replaces
    or removes its cap whatever its on_exceed (``tokens_per_hour:pause`` replaces
    ``tokens_per_hour``)."""
    caps = {parse_key(k).cap for k in [*validate(changes), *unset]}
    out = {k: v for k, v in old.items() if parse_key(k).cap not in caps}
    out.update(validate(changes))
    return out


def frees_at(lim: Limit, cap: float, now: float,
             used_since: Callable[[float], Mapping[str, float]]) -> float | None:
    """When a rolling window's usage falls below ``cap`` again, as the run's clock will
    read then; None if it never will (a cap of 0, or a lifetime cap).

    ``used_since(t)`` is the usage in the buckets from ``t`` on (what the store holds,
    plus anything counted since); it only falls as ``t`` moves forward, so the first
    bucket to drop from the window is found by bisection: about twelve reads for a week.
    """
    if lim.window is None or cap <= 0:
        return None
    lo = math.floor((now - lim.window) / BUCKET)  # the window as it stands: over the cap
    hi = math.floor(now / BUCKET) + 1  # every bucket counted so far gone: nothing used
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _value(used_since(mid * BUCKET), lim.metric) >= cap:
            lo = mid
        else:
            hi = mid
    return max(now, hi * BUCKET + lim.window)


def window_lengths(budget: Mapping[str, float]) -> set[float]:
    """The rolling windows a budget needs usage for."""
    return {w for k in budget if (w := parse_key(k).window) is not None}


def add(usage: dict[str, float], delta: Mapping[str, float]) -> None:
    """Add counters in place."""
    for k, v in delta.items():
        usage[k] = usage.get(k, 0.0) + v


def parse_cap(item: str, what: str, example: str) -> tuple[str, float | None]:
    """One ``KEY=NUMBER`` (a budget cap, a usage figure): ``(key, number)``, or
    ``(key, None)`` for ``KEY=`` (a caller that takes it removes the cap).

    Raises:
        UsageError: no ``=`` (naming ``what``, the item and ``example``), or a value that
            is not a finite number.
    """
    k, sep, v = item.partition("=")
    if not sep:
        raise UsageError(f"{what} {item!r}: expected KEY=NUMBER, e.g. {example}")
    if not v.strip():
        return k.strip(), None
    try:
        number = float(v)
    except ValueError:
        raise UsageError(f"{what} {item!r}: {v.strip()!r} is not a number") from None
    if not math.isfinite(number):
        raise UsageError(f"{what} {item!r}: {v.strip()!r} is not a finite number")
    return k.strip(), number
