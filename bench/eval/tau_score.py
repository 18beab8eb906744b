"""The tau-bench figures: which runs each monitor flags, against their reward; the
thresholds tuned on half the tasks; the confusion tables and Wilson intervals.

Tuning searches, per monitor and on the tuning half only, one numeric parameter at
a time over a few multiples of its default (each monitor's other parameters at their
defaults), for the setting that flags the most runs while at least 85% of what it
flags failed (else the one with the highest such share). Monitors are then added,
best first, to the "any monitor" union while it stays at 85% on the tuning half.
The chosen settings are then applied, unchanged, to the other half and to all 200.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from bench.eval.feed import Flag, feed
from tether.core.monitors import KINDS

TARGET = 0.85
SCALES = (0.5, 0.75, 1.5, 2.0, 3.0, 5.0)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion k/n."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, c - h), min(1.0, c + h))


Settings = dict[str, dict[str, Any]]
"""Per monitor name, its parameters (missing: the defaults)."""


def flags_of(runs: Sequence[dict[str, Any]], settings: Settings,
             names: set[str] | None = None) -> dict[int, list[Flag]]:
    """Per record, the flags of the monitors in ``names`` (all: None) with ``settings``."""
    def params(name: str, defaults: Mapping[str, Any], run: Mapping[str, Any]) -> dict[str, Any]:
        return {**defaults, **settings.get(name, {})}
    return {r["record"]: feed(r["events"], params=params, names=names) for r in runs}


def flagged_by(flags: Mapping[int, list[Flag]], monitor: str | None = None) -> set[int]:
    return {rec for rec, fl in flags.items() if any(monitor in (None, f.monitor) for f in fl)}


def precision(flagged: set[int], failed: set[int]) -> tuple[int, int]:
    return len(flagged & failed), len(flagged)


def candidates(name: str) -> list[dict[str, Any]]:
    """The settings tried for one monitor: its defaults, then each numeric parameter scaled."""
    kind = KINDS[name]
    out: list[dict[str, Any]] = [{}]
    for key, v in kind.defaults.items():
        if isinstance(v, bool) or not isinstance(v, int | float):
            continue
        for s in SCALES:
            nv: int | float = max(1, round(v * s)) if isinstance(v, int) else v * s
            if nv != v and {key: nv} not in out:
                out.append({key: nv})
    return out


def tune(runs: Sequence[dict[str, Any]], failed: set[int],
         only: Callable[[int], bool]) -> tuple[Settings, dict[str, set[int]]]:
    """Per monitor, its best setting on the runs ``only`` admits; and the union's members."""
    tuning = [r for r in runs if only(r["record"])]
    best: dict[str, tuple[tuple[int, float, int], dict[str, Any], set[int]]] = {}
    for name in KINDS:
        for cand in candidates(name):
            fl = flagged_by(flags_of(tuning, {name: cand}, {name}), name)
            k, n = precision(fl, failed)
            share = k / n if n else 0.0
            score = (int(share >= TARGET and n > 0), n if share >= TARGET else share, -len(cand))
            if name not in best or score > best[name][0]:
                best[name] = (score, cand, fl)
    chosen: Settings = {}
    union: set[int] = set()
    members: dict[str, set[int]] = {}
    for name, (_, cand, fl) in sorted(best.items(), key=lambda kv: kv[1][0], reverse=True):
        k, n = precision(union | fl, failed)
        if fl and n and k / n >= TARGET:
            union |= fl
            chosen[name] = cand
            members[name] = fl
    return chosen, members
