"""``python -m bench``: run the benchmarks and write the report.

Examples:
    python -m bench --out docs/benchmarks.md      # the full run (3-4 minutes)
    python -m bench --quick                        # smoke run (~20 s) to bench/out/
    python -m bench --quick --profile prof.txt     # also cProfile tether's hot path
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from bench.config import FULL, QUICK
from bench.report import render
from bench.suite import log, run_all


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench",
                                 description="tether vs LangGraph + SqliteSaver benchmarks")
    ap.add_argument("--quick", action="store_true", help="small N and few repeats (< 1 minute)")
    ap.add_argument("--out", type=Path, default=None,
                    help="where to write the report (default: docs/benchmarks.md, or "
                         "bench/out/benchmarks-quick.md with --quick)")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="folder for the database files (default: a new temporary folder); "
                         "its disk is what the fsyncs measure")
    ap.add_argument("--profile", type=Path, default=None, metavar="FILE",
                    help="write cProfile output of tether's hot path and of one `impact` call to FILE")
    args = ap.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    out: Path = args.out or Path("bench/out/benchmarks-quick.md" if args.quick else "docs/benchmarks.md")
    own = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="tether-bench-")) if own else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        res = run_all(cfg, workdir, profile=args.profile is not None)
    finally:
        if own:
            shutil.rmtree(workdir, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(res))
    log(f"wrote {out} in {res.seconds:.0f} s")
    if args.profile:
        args.profile.write_text("".join(d.profile for d in res.diagnoses)
                                + "".join(s.profile for s in res.impacts))
        log(f"wrote {args.profile}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
