"""Soak the crash invariants: kill/restart trials in a loop for a number of minutes.

Each trial starts runs of the crash agents (``tests/crashkit.py``), SIGKILLs (or,
with ``--term``, SIGTERMs) a real worker subprocess at random moments, restarts,
drives everything to rest, settles in-doubt effects through ``tether.control`` and
checks the invariants. One summary line per trial; the exit status is 1 if any
trial broke an invariant (its folder is kept for inspection).

    .venv/bin/python scripts/soak.py --minutes 10
    .venv/bin/python scripts/soak.py --minutes 60 --kills 3 --steps 80 --seed 1000

Not run by pytest; ``tests/test_crash.py`` is the short version.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # so ``tests.crashkit`` imports, here and in the workers

from tests import crashkit as ck  # noqa: E402 (needs the path above)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=5.0, help="how long to soak")
    p.add_argument("--seed", type=int, default=0, help="first trial's seed (then +1 each)")
    p.add_argument("--kills", type=int, default=0,
                   help="kills per trial (default: 1 to 3, varying by seed)")
    p.add_argument("--steps", type=int, default=60, help="steps of the step agents' runs")
    p.add_argument("--pace", type=float, default=0.015, help="seconds a read tool waits")
    p.add_argument("--ttl", type=float, default=0.3, help="the killed workers' lease (seconds)")
    p.add_argument("--max-delay", type=float, default=1.2,
                   help="longest wait before a kill (seconds; the shortest is 0.05)")
    p.add_argument("--term", action="store_true", help="SIGTERM instead of SIGKILL")
    p.add_argument("--keep", action="store_true", help="keep every trial's folder")
    a = p.parse_args(argv)

    deadline = time.monotonic() + a.minutes * 60
    seed, ok, failed = a.seed, 0, 0
    totals = {"kills": 0, "in_doubt": 0, "retries": 0, "lines": 0}
    while time.monotonic() < deadline:
        folder = Path(tempfile.mkdtemp(prefix=f"tether-soak-{seed}-"))
        os.environ[ck.SIDE_ENV] = str(folder / "side.log")
        kills = a.kills or 1 + seed % 3
        try:
            t = ck.kill_restart_trial(folder, seed, kills=kills, steps=a.steps, pace=a.pace,
                                      ttl=a.ttl, delay=(0.05, a.max_delay), term=a.term)
        except Exception:
            failed += 1
            print(f"seed={seed} FAILED (kept {folder}):", flush=True)
            traceback.print_exc()
        else:
            ok += 1
            totals["kills"] += t.kills
            totals["in_doubt"] += len(t.resolved)
            totals["retries"] += t.summary.retried_keys
            totals["lines"] += t.summary.lines
            print(t.line(), flush=True)
            if not a.keep:
                shutil.rmtree(folder, ignore_errors=True)
        seed += 1
    print(f"soak: {ok + failed} trials, {failed} failed; {totals['kills']} kills, "
          f"{totals['in_doubt']} effects in doubt (settled), {totals['retries']} idempotent "
          f"retries, {totals['lines']} effects executed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
