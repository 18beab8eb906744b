"""The demo's kill-and-rerun promise at every point of its set-up: a real ``tether demo``
SIGKILLed right after each store transaction of its set-up (and as its first worker pass
starts), then run again, completes with the same summary as a night never interrupted."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.demo_kill import SETUP_DONE

# About 30 whole demos in a row (one per set-up transaction, killed and run again): a minute
# on a quiet machine, more under load, so it gets more than the suite's 120 s.
pytestmark = [pytest.mark.crash, pytest.mark.timeout(400)]

ROOT = Path(__file__).resolve().parent.parent
TETHER = Path(sys.executable).with_name("tether")
ULID = re.compile(r"\b[0-9A-HJKMNP-TV-Z]{26}\b")


def demo(folder: Path, point: str | None = None) -> subprocess.CompletedProcess[str]:
    cmd = ([sys.executable, "-m", "tests.demo_kill", point, "--", "--dir", str(folder)]
           if point else [str(TETHER), "demo", "--dir", str(folder)])
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "300"}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300, check=False)


def summary(out: str, folder: Path) -> str:
    """The summary the demo ends with, less what differs between any two nights: the
    folder, run and approval ids, and how writes happened to be grouped into commits."""
    text = out[out.index("the night shift at"):].replace(str(folder), "DIR")
    text = ULID.sub("<id>", text)
    text = re.sub(r"(\w+) [0-9A-HJKMNP-TV-Z]{6}\b", r"\1 <id>", text)
    return re.sub(r"in \d+ commit batches", "in N commit batches", text)


def test_a_demo_killed_at_any_point_of_its_set_up_completes_when_run_again(
        tmp_path: Path) -> None:
    ref = demo(tmp_path / "dref")
    assert ref.returncode == 0, ref.stdout + ref.stderr
    want = summary(ref.stdout, tmp_path / "dref")
    k = 1
    while True:
        folder = tmp_path / f"d{k:03d}"
        killed = demo(folder, f"tx:{k}")
        if killed.returncode == SETUP_DONE:
            break
        assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
        again = demo(folder)
        assert again.returncode == 0, (k, again.stdout + again.stderr)
        assert summary(again.stdout, folder) == want, f"killed after transaction {k}"
        k += 1
    assert k > 3, killed.stdout  # the set-up was really walked, transaction by transaction
    folder = tmp_path / "dwrk"
    assert demo(folder, "worker").returncode == -signal.SIGKILL
    again = demo(folder)
    assert again.returncode == 0 and summary(again.stdout, folder) == want, again.stdout
