"""Medians and spreads of repeated measurements, and how the report prints them."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Summary:
    """Median and range of a sample."""

    median: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        if not values:
            raise ValueError("no samples")
        return cls(statistics.median(values), min(values), max(values), len(values))


def us(seconds: float) -> str:
    """Seconds as microseconds (or milliseconds above 10 ms)."""
    if seconds >= 0.01:
        return f"{seconds * 1e3:,.1f} ms"
    return f"{seconds * 1e6:,.1f} µs"


def size(nbytes: float) -> str:
    """Bytes in B, kB or MB (powers of 1000, as the issue's figures are)."""
    if nbytes >= 1e6:
        return f"{nbytes / 1e6:,.1f} MB"
    if nbytes >= 1e4:
        return f"{nbytes / 1e3:,.1f} kB"
    return f"{nbytes:,.0f} B"


def spread(s: Summary, fmt: Callable[[float], str] = us) -> str:
    """``median (min-max, n=k)``; a single sample prints alone."""
    if s.n == 1 or s.low == s.high:
        return f"{fmt(s.median)} (n={s.n})"
    return f"{fmt(s.median)} ({fmt(s.low)}–{fmt(s.high)}, n={s.n})"


def ratio(a: float, b: float) -> float:
    """a / b, infinite when b is zero."""
    return a / b if b else float("inf")


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0-1) of ``values`` by nearest rank: the smallest value with at least
    ``q`` of the sample at or below it (p99 of 100 values is the 99th smallest)."""
    if not values:
        raise ValueError("no samples")
    ordered = sorted(values)
    return ordered[max(math.ceil(q * len(ordered)) - 1, 0)]


def table(head: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"
