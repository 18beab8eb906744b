"""Scores the monitors' flags against the labels: precision, recall, F1 per label
family, false positives on the controls, detection latency in steps.

A run labelled F is *detected* by F when a monitor of family F flags it (any verdict
above ``ok``) at or after its onset step; a flag before the onset is reported
apart (``early``), not counted as a detection. A flag of family F on a run not
labelled F is a false positive, unless F is in the run's ``also`` (a loop makes no
progress either: a no-progress alert on it is fair and counts neither way).
Latency is the detected run's first flag step minus its onset; a loop is *in time*
when flagged by its deadline (the step of its third repeat).

Which family a monitor belongs to is read from its name and rule
(:func:`family`): the built-ins are written in parallel, so the map is here, not in
the labels.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.eval.feed import Flag

FAMILIES = ("loops", "pingpong", "no_progress", "runaway", "drift", "invariants")
BY_MONITOR = {"loop": "loops", "loops": "loops", "pingpong": "pingpong", "ping_pong": "pingpong",
              "swarm": "pingpong", "storms": "pingpong", "swarm_loops": "pingpong",
              "no_progress": "no_progress", "progress": "no_progress", "runaway": "runaway",
              "drift": "drift", "invariants": "invariants", "invariant": "invariants"}
BY_RULE = {"no_progress": "no_progress", "flat_progress": "no_progress", "flat_state": "no_progress",
           "ping_pong": "pingpong", "pingpong": "pingpong"}


def family(monitor: str, rule: str) -> str:
    """The label family a flag counts for: its monitor's (a rule's name does not move it:
    the loops monitor's ``no_progress`` rule is a loop); a monitor not known here by its
    rule, else its own name."""
    return BY_MONITOR.get(monitor) or BY_RULE.get(rule) or monitor


@dataclass
class Tally:
    tp: int = 0
    fn: int = 0
    fp: int = 0
    early: int = 0
    latencies: list[int] = field(default_factory=list)
    in_time: int = 0
    with_deadline: int = 0
    fp_runs: list[str] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)
    monitors: set[str] = field(default_factory=set)

    @property
    def precision(self) -> float | None:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None

    @property
    def recall(self) -> float | None:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else None

    @property
    def f1(self) -> float | None:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p and r else (0.0 if p is not None and r is not None else None)


def first_by_family(flags: Iterable[Flag]) -> dict[str, int]:
    out: dict[str, int] = {}
    for f in flags:
        fam = family(f.monitor, f.rule)
        out[fam] = min(out.get(fam, f.step), f.step)
    return out


def tally(labels: Sequence[Mapping[str, Any]], flags: Mapping[str, list[Flag]]) -> dict[str, Tally]:
    """Per family, over every labelled run (keyed ``scenario/run`` in ``flags``)."""
    out: dict[str, Tally] = defaultdict(Tally)
    for lab in labels:
        key = f"{lab['scenario']}/{lab['run']}"
        fl = flags.get(key, [])
        for f in fl:
            out[family(f.monitor, f.rule)].monitors.add(f.monitor)
        fams = {family(f.monitor, f.rule) for f in fl}
        label = lab["label"]
        if label:
            _positive(out[label], lab, key, [f for f in fl if family(f.monitor, f.rule) == label])
        for fam in fams - {label} - set(lab["also"]):
            out[fam].fp += 1
            out[fam].fp_runs.append(key)
    for fam in FAMILIES:
        out.setdefault(fam, Tally())
    return dict(out)


def _positive(t: Tally, lab: Mapping[str, Any], key: str, fl: list[Flag]) -> None:
    onset = lab["onset"] or 0
    after = [f.step for f in fl if f.step >= onset]
    if fl and not after:
        t.early += 1
    if after:
        t.tp += 1
        first = min(after)
        t.latencies.append(first - onset)
        if lab["deadline"] is not None:
            t.with_deadline += 1
            t.in_time += first <= lab["deadline"]
    else:
        t.fn += 1
        t.missed.append(key)
        if lab["deadline"] is not None:
            t.with_deadline += 1


def by_kind(labels: Sequence[Mapping[str, Any]], flags: Mapping[str, list[Flag]]) -> list[dict[str, Any]]:
    """Per scenario kind: runs, how many its own family detected (or, for a control, how
    many anything flagged), latency, in time, and which monitors flagged."""
    rows: dict[str, dict[str, Any]] = {}
    for lab in labels:
        key = f"{lab['scenario']}/{lab['run']}"
        fl = flags.get(key, [])
        r = rows.setdefault(lab["kind"], {"kind": lab["kind"], "label": lab["label"], "runs": 0,
                                          "hit": 0, "lat": [], "in_time": 0, "deadlines": 0,
                                          "others": defaultdict(int)})
        r["runs"] += 1
        onset = lab["onset"] or 0
        own = [f.step for f in fl if family(f.monitor, f.rule) == lab["label"] and f.step >= onset]
        if lab["label"] is None:
            own = [f.step for f in fl]
        if own:
            r["hit"] += 1
            r["lat"].append(min(own) - onset)
        if lab["deadline"] is not None:
            r["deadlines"] += 1
            r["in_time"] += bool(own) and min(own) <= lab["deadline"]
        for m in {f"{f.monitor}:{f.rule}" for f in fl
                  if family(f.monitor, f.rule) != lab["label"]}:
            r["others"][m] += 1
    return list(rows.values())


def median(xs: list[int]) -> str:
    return f"{statistics.median(xs):g}" if xs else "–"


def fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"
