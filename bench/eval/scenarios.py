"""The labelled scenario suite: seeded, so the same seed makes the same plans.

``generate()`` returns the scenarios; ``labels()`` the per-run labels that
``labels.json`` commits (with a hash of each run's plan, so a changed generator is
caught instead of being scored against stale labels).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.eval import families as f1
from bench.eval import families2 as f2
from bench.eval.families import Run

SEED = 20261204
LABELS_FILE = Path(__file__).with_name("labels.json")

Scenario = dict[str, Any]

# (kind, how many, maker): one rng per scenario, derived from the seed and its id.
SUITE: list[tuple[str, int, Callable[[random.Random, int], Run | list[Run]]]] = [
    ("loop_identical_exact", 22, lambda r, i: f1.loop_identical(r, True)),
    ("loop_identical_volatile", 22, lambda r, i: f1.loop_identical(r, False)),
    ("loop_alternation", 22, lambda r, i: f1.loop_alternation(r)),
    ("loop_error_streak", 22, lambda r, i: f1.loop_errors(r)),
    ("loop_parroted_answer", 22, lambda r, i: f1.loop_parrot(r)),
    ("pingpong", 15, lambda r, i: f2.pair(r, True)),
    ("no_progress_declared", 18, lambda r, i: f1.no_progress(r, True)),
    ("no_progress_state", 18, lambda r, i: f1.no_progress(r, False)),
    ("runaway_spike", 10, lambda r, i: f1.runaway(r, "spike")),
    ("runaway_growth", 10, lambda r, i: f1.runaway(r, "growth")),
    ("runaway_rate", 10, lambda r, i: f1.runaway(r, "rate")),
    ("drift_injected_goal", 24, lambda r, i: f2.drift(r, i % 3)),
    ("invariant_break", 24, lambda r, i: f2.invariant(r, i % 4)),
    ("control_reads", 16, lambda r, i: f2.control(r, "reads")),
    ("control_poll_queue", 16, lambda r, i: f2.control(r, "poll")),
    ("control_retry_success", 16, lambda r, i: f2.control(r, "retry")),
    ("control_classifier", 16, lambda r, i: f2.control(r, "classifier")),
    ("control_steady_spender", 16, lambda r, i: f2.control(r, "steady")),
    ("control_request_response", 6, lambda r, i: f2.pair(r, False)),
]


def generate(seed: int = SEED) -> list[Scenario]:
    out = []
    for kind, n, make in SUITE:
        for i in range(n):
            sid = f"{kind}-{i:02d}"
            rng = random.Random(f"{seed}:{sid}")
            made = make(rng, i)
            runs = made if isinstance(made, list) else [made]
            if not kind.startswith("no_progress"):
                _maybe_undeclared(rng, runs)
            out.append({"id": sid, "kind": kind, "runs": runs})
    return out


def _maybe_undeclared(rng: random.Random, runs: list[Run]) -> None:
    """Half the agents declare no progress metric (most real ones do not): a monitor that
    needs one must cope with its absence."""
    if rng.random() < 0.5:
        for r in runs:
            for s in r["steps"]:
                s["progress"] = None


def plan_hash(r: Run) -> str:
    text = json.dumps(r["steps"], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def labels(scenarios: list[Scenario]) -> list[dict[str, Any]]:
    """One entry per run: what should fire, from which step (0-based), by which step."""
    out = []
    for sc in scenarios:
        for r in sc["runs"]:
            out.append({"scenario": sc["id"], "kind": sc["kind"], "run": r["name"],
                        "label": r["label"], "rule": r["rule"], "also": r["also"],
                        "onset": r["onset"], "deadline": r["deadline"],
                        "steps": len(r["steps"]), "plan": plan_hash(r)})
    return out


def write_labels(path: Path = LABELS_FILE, seed: int = SEED) -> list[dict[str, Any]]:
    rows = labels(generate(seed))
    body = {"seed": seed, "runs": len(rows),
            "about": "bench/eval/families.py says what each field means; steps are 0-based",
            "labels": rows}
    # One run per line: small, and a diff names the runs whose labels changed.
    head = json.dumps({k: v for k, v in body.items() if k != "labels"})[:-1]
    lines = ",\n".join(json.dumps(r) for r in rows)
    path.write_text(f'{head}, "labels": [\n{lines}\n]}}\n')
    return rows


def check_labels(scenarios: list[Scenario], path: Path = LABELS_FILE) -> list[str]:
    """How the generated scenarios differ from the committed labels (empty: they agree)."""
    committed = json.loads(path.read_text())["labels"]
    fresh = labels(scenarios)
    if len(committed) != len(fresh):
        return [f"{len(fresh)} runs generated, {len(committed)} labelled in {path.name}"]
    return [f"{a['scenario']}/{a['run']}: generated {a} but labelled {b}"
            for a, b in zip(fresh, committed, strict=True) if a != b]
