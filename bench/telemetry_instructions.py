"""Telemetry cost in instructions: callgrind's counts, which other work on the machine does
not change.

The telemetry benchmark's rounds (bench/telemetry_cost.py) run under ``valgrind
--tool=callgrind``, one process a mode, and the instructions between a round's two
``time.process_time()`` reads are counted (``--dump-before=time_process_time``: the reads
that time a round natively mark it here): per step with the sink off, with spans and
metrics on, and for the sink alone fed the same writes. A run takes about a minute a mode
at 1000 steps (the loop runs some 50 times slower). The sink alone's count repeats to
0.3%; a whole round's to about 1% (the group committer's batches vary with the threads'
timing), so the end-to-end difference to about ±15k a step, some 12% of it: the way to
tell whether a change moved the sink's cost, where the native figures' noise is wider than
the 15 µs target. It does not see what instructions cost (cache misses, the kernel's
share of a step): the native figures do.

Under callgrind a round lasts minutes, so the sink's thread would fold every second, in
many small rounds; ``OTEL_BSP_SCHEDULE_DELAY`` is set high so that, as in a native round
of under a second, the sink folds once, at close.

Usage: ``python -m bench.telemetry_instructions [--steps N] [--repeats R]``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import telemetry_cost as tc

MODES = ("off", "spans+metrics", "alone")
MEASURED_PART = 4
"""The dump that ends at a child's fourth ``process_time`` read: the warm-up round reads
it twice, then the measured round (or feed) begins and ends with one read each."""


def child(mode: str, steps: int) -> None:
    """One warm-up round, then the measured round (``alone``: one feed of the sink)."""
    with tc.receiver() as endpoint, tempfile.TemporaryDirectory() as d:
        tc.one_round("spans+metrics", 50, Path(d), endpoint)
        if mode == "alone":
            tc.sink_alone(steps, Path(d), endpoint, feeds=1)
        else:
            tc.one_round(mode, steps, Path(d), endpoint)


def count(mode: str, steps: int, folder: Path) -> float:
    """Instructions per step of ``mode``'s measured round, counted by callgrind."""
    out = folder / f"callgrind.{mode}"
    env = {**os.environ, "OTEL_BSP_SCHEDULE_DELAY": str(10**9)}
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", "--dump-before=time_process_time",
         f"--callgrind-out-file={out}", sys.executable, "-m", "bench.telemetry_instructions",
         "--child", mode, "--steps", str(steps)],
        env=env, capture_output=True, text=True, check=False)
    part = Path(f"{out}.{MEASURED_PART}")
    if done.returncode != 0 or not part.exists():
        raise SystemExit(f"callgrind run of mode {mode} failed (exit {done.returncode}):\n"
                         + done.stderr[-2000:])
    totals = re.search(r"^totals: (\d+)", part.read_text(), re.MULTILINE)
    if totals is None:
        raise SystemExit(f"no totals in {part}: is this valgrind's callgrind?")
    return int(totals.group(1)) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.steps)
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    got: dict[str, list[float]] = {m: [] for m in MODES}
    for r in range(args.repeats):
        for mode in MODES:
            with tempfile.TemporaryDirectory() as d:
                got[mode].append(count(mode, args.steps, Path(d)))
            print(f"repeat {r + 1}: {mode} {got[mode][-1] / 1e3:,.1f}k instructions a step",
                  flush=True)
    med = {m: statistics.median(v) for m, v in got.items()}
    extra = med["spans+metrics"] - med["off"]
    print(f"instructions per step, median of {args.repeats} ({args.steps} steps):")
    print(f"  off {med['off'] / 1e3:,.1f}k, spans+metrics {med['spans+metrics'] / 1e3:,.1f}k: "
          f"{extra / 1e3:+,.1f}k with both on")
    print(f"  the sink alone {med['alone'] / 1e3:,.1f}k (end to end ÷ alone: "
          f"{extra / med['alone']:.2f})")


if __name__ == "__main__":
    main()
