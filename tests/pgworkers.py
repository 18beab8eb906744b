"""Real ``tether worker`` processes on one store, for the many-workers tests.

Each worker is the console script of this environment (``tether --store URL worker
--json``), started in a working folder of its own (as workers on different machines would
be: nothing may depend on the folder a worker starts in), optionally under another host
name (a UTS namespace, ``unshare --uts``: a second machine as far as tether's lease owners
can tell, so a dead worker's leases are left to expire instead of being reclaimed by pid).
Its JSON log says which runs it took and left, and when.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.crashkit import EXIT_ENV, SIDE_ENV, wait_for
from tests.pg_agents import DWELL_ENV

ROOT = Path(__file__).resolve().parent.parent
TETHER = str(Path(sys.executable).with_name("tether"))
"""The ``tether`` console script of the environment running the tests."""


def tether_cmd() -> list[str]:
    """How to start the real CLI: the console script, else its entry point."""
    if Path(TETHER).exists():
        return [TETHER]
    return [sys.executable, "-c", "from tether.cli.app import main; main()"]


def other_host_prefix(host: str) -> list[str] | None:
    """A command prefix that runs what follows under host name ``host`` (its own UTS
    namespace), or None where this system does not allow it."""
    if shutil.which("unshare") is None:
        return None
    base = ["unshare", "--uts"] + ([] if os.geteuid() == 0 else ["--map-root-user"])
    probe = subprocess.run([*base, "hostname", host], capture_output=True, timeout=30,
                           check=False)
    if probe.returncode != 0:
        return None
    # The shell sets the name, then becomes the worker (exec): the pid is the worker's.
    return [*base, "sh", "-c", 'hostname "$0" && exec "$@"', host]


@dataclass
class CliWorker:
    """A ``tether worker --json`` subprocess, its folder and its logs."""

    proc: subprocess.Popen[bytes]
    folder: Path
    tag: str

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def out(self) -> Path:
        return self.folder / "worker.jsonl"

    @property
    def err(self) -> Path:
        return self.folder / "worker.err"

    def lines(self) -> list[dict[str, Any]]:
        """The complete JSON lines it logged so far."""
        out = []
        text = self.out.read_text(encoding="utf-8") if self.out.exists() else ""
        for raw in text.splitlines():
            try:
                out.append(json.loads(raw))
            except ValueError:
                continue  # the line being written
        return out

    def took(self) -> dict[str, float]:
        """Run -> when this worker first took it."""
        got: dict[str, float] = {}
        for x in self.lines():
            if x.get("event") == "took":
                got.setdefault(x["run"], x["time"])
        return got

    def left(self, status: str | None = None) -> list[dict[str, Any]]:
        """The runs it let go (with that status)."""
        return [x for x in self.lines() if x.get("event") == "left"
                and (status is None or x["status"] == status)]

    def logs(self) -> str:
        """Both logs, for an assertion's message."""
        err = self.err.read_text(encoding="utf-8", errors="replace") if self.err.exists() else ""
        out = self.out.read_text(encoding="utf-8", errors="replace") if self.out.exists() else ""
        return f"[{self.tag} pid {self.pid}] stdout:\n{out[-3000:]}\nstderr:\n{err[-3000:]}"

    def wait_started(self, timeout: float = 60.0) -> None:
        def started() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode} before it "
                                     f"started: {self.logs()}")
            return any(x.get("event") == "start" for x in self.lines())
        wait_for(started, timeout, f"worker {self.tag} to start")

    def wait_took(self, runs: Sequence[str], timeout: float = 60.0) -> dict[str, float]:
        """Wait until it has taken every one of ``runs``; when it took each."""
        def all_taken() -> dict[str, float] | None:
            got = self.took()
            if all(r in got for r in runs):
                return got
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}: {self.logs()}")
            return None
        return dict(wait_for(all_taken, timeout, f"worker {self.tag} to take {list(runs)}"))

    def signal(self, sig: signal.Signals) -> None:
        os.kill(self.pid, sig)

    def freeze(self) -> None:
        """SIGSTOP, and wait until it has stopped (the signal is delivered asynchronously:
        until then it may still commit, or start a transaction)."""
        os.kill(self.pid, signal.SIGSTOP)
        wait_for(lambda: _state(self.pid) in ("T", "t"), 10, f"worker {self.tag} to stop",
                 interval=0.001)

    def kill(self) -> None:
        self.proc.kill()  # SIGKILL
        self.proc.wait(timeout=30)

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM (the worker drains), then its exit status; SIGKILL if it will not go."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a stopped worker cannot drain
            self.proc.terminate()
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
            raise AssertionError(f"worker {self.tag} did not drain in {timeout}s: "
                                 f"{self.logs()}") from None

    def wait(self, timeout: float = 120.0) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
            raise AssertionError(f"worker {self.tag} still running after {timeout}s: "
                                 f"{self.logs()}") from None


def _state(pid: int) -> str:
    # /proc/PID/stat: "pid (comm) S ...", comm may hold spaces and parentheses.
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rpartition(")")[2].split()[0]


def spawn(url: str, base: Path, tag: str, *, side: Path, ttl: float, concurrency: int = 1000,
          until_idle: bool = False, host_prefix: Sequence[str] = (),
          env: dict[str, str] | None = None, via_env: bool = False) -> CliWorker:
    """Start ``tether worker --json`` on store ``url`` in folder ``base/tag`` (made here).

    ``via_env``: name the store with ``$TETHER_STORE`` instead of ``--store``.
    """
    folder = base / tag
    folder.mkdir()
    store_args = [] if via_env else ["--store", url]
    cmd = [*host_prefix, *tether_cmd(), *store_args, "worker", "--json", "--lease-ttl", str(ttl),
           "--concurrency", str(concurrency)]
    if until_idle:
        cmd.append("--until-idle")
    full = {k: v for k, v in os.environ.items() if k not in (EXIT_ENV, "TETHER_STORE")}
    full.update({SIDE_ENV: str(base / "side.log"), DWELL_ENV: str(base / "dwell.log"),
                 "PYTHONPATH": str(ROOT), **(env or {})})
    if via_env:
        full["TETHER_STORE"] = url
    assert side == base / "side.log"
    with open(folder / "worker.jsonl", "wb") as out, open(folder / "worker.err", "wb") as err:
        proc = subprocess.Popen(cmd, cwd=folder, env=full, stdout=out, stderr=err)
    return CliWorker(proc, folder, tag)


def cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
        timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run the real ``tether`` CLI once; its output as text."""
    full = {k: v for k, v in os.environ.items() if k != "TETHER_STORE"}
    full.update({"PYTHONPATH": str(ROOT), "COLUMNS": "200", **(env or {})})
    return subprocess.run([*tether_cmd(), *args], capture_output=True, text=True, cwd=cwd,
                          env=full, timeout=timeout, check=False)
