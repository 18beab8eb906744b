"""Budgets: pure checks of usage against caps and rolling windows.

A budget is a flat mapping. A plain key is a lifetime cap (``steps``,
``input_tokens``, ``output_tokens``, ``tokens``, ``cost_usd``, ``tool_calls``,
``wall_seconds``); a key with a window suffix caps the usage inside a rolling
window ending now (``cost_usd_per_day``, ``tokens_per_hour``,
``tool_calls_per_minute``). An always-on loop can thus run for weeks inside a
daily budget. ``wall_seconds`` counts time spent inside steps, not sleeping.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
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


@dataclass(frozen=True, slots=True)
class Limit:
    """One parsed budget key."""

    key: str
    metric: str
    window: float | None
    """Window length in seconds, or None for a lifetime cap."""


def parse_key(key: str) -> Limit:
    """Parse ``cost_usd_per_day`` into metric and window; UsageError for unknown keys."""
    for suffix, seconds in WINDOWS.items():
        if key.endswith("_" + suffix):
            metric = key[: -len(suffix) - 1]
            if metric in METRICS:
                return Limit(key, metric, seconds)
    if key in METRICS:
        return Limit(key, key, None)
    raise UsageError(f"unknown budget key {key!r}: use one of {', '.join(METRICS)}, optionally "
                     f"with a window suffix ({', '.join('_' + w for w in WINDOWS)})")


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

    Args:
        budget: the caps.
        lifetime: lifetime usage counters.
        windows: usage inside each window length (seconds) that the budget names.
    """
    for key, cap in budget.items():
        lim = parse_key(key)
        used = _value(lifetime if lim.window is None else windows.get(lim.window, {}), lim.metric)
        if used >= cap:
            return lim, used
    return None


def window_lengths(budget: Mapping[str, float]) -> set[float]:
    """The rolling windows a budget needs usage for."""
    return {w for k in budget if (w := parse_key(k).window) is not None}


def add(usage: dict[str, float], delta: Mapping[str, float]) -> None:
    """Add counters in place."""
    for k, v in delta.items():
        usage[k] = usage.get(k, 0.0) + v
