"""Open live pages' cost to a worker: the core loop's CPU per step with 0 and with 100 pages.

Issue 12's third dashboard target: 100 open live pages, each following runs that are
being stepped, slow the worker's per-step benchmark by at most 5%.

Three processes, as in production:

- a ``tether ui serve`` on a loopback port, over the store file;
- a page process holding ``pages`` open pages, each a real HTTP client that follows
  ``/api/live`` and, on every ``change`` event, fetches its page's live region again
  (``X-Tether-Part: live``) exactly as ``ui.js`` does: one fetch at a time per page, a
  change that arrives during a fetch makes one more fetch 50 ms after it; a run page
  says the last event it holds (``X-Tether-Seq``) and gets the header and the events
  after it. Page ``i`` shows the run page of stepped run ``i % runs``, every tenth page
  the overview;
- this process, the worker: ``runs`` runs of the core loop's agent (one ~200-byte message
  appended per step, ``steps`` steps each) through the real Worker and SQLiteStore at
  ``synchronous=FULL``, stepped concurrently until done.

The figure is this process's CPU time (``process_time``) per step of the worker, with the
server running and no page open, against the same with every page open and following
(each page has its first live region before the worker starts). Rounds alternate the
order of the two cases; the verdict is on the median of the pairs' ratios. The server's
and the pages' CPU per step and the fetches done are reported beside it.

Run alone: ``python -m bench.ui_step_cost [--pages 100] [--pairs 5]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.tether_loop import AGENT_REF, grow_agent
from bench.workload import fresh_db, remove_db
from tether.runtime.runs import start_run
from tether.runtime.worker import Worker
from tether.store.sqlite import SQLiteStore

TETHER = Path(sys.executable).with_name("tether")
_TICK = os.sysconf("SC_CLK_TCK")
_DELTA_LAST = re.compile(r'<template id="timeline-delta" data-last="(\d+)"')


@dataclass(frozen=True, slots=True)
class Round:
    """One worker run, with ``pages`` pages open (0: the server alone)."""

    pages: int
    cpu_per_step: float
    """The worker process's CPU seconds per step."""
    wall_per_step: float
    server_cpu_per_step: float
    pages_cpu_per_step: float
    changes: int
    """``change`` events the pages received, all pages together."""
    fetches: int
    """Live regions fetched again, all pages together."""


@dataclass(slots=True)
class StepCostSample:
    """Pairs of rounds, 0 pages and ``pages`` pages, order alternating."""

    pages: int
    runs: int
    steps: int
    pairs: list[tuple[Round, Round]] = field(default_factory=list)

    @property
    def ratios(self) -> list[float]:
        return [with_.cpu_per_step / none.cpu_per_step for none, with_ in self.pairs]

    @property
    def slowdown(self) -> float:
        """Median over the pairs of (CPU per step with pages ÷ without) - 1."""
        return statistics.median(self.ratios) - 1.0

    def median(self, pick: Callable[[Round], float], with_pages: bool) -> float:
        return statistics.median(pick(p[1] if with_pages else p[0]) for p in self.pairs)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (Linux ``/proc``; its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _process(args: list[str], *, stdout: Any = subprocess.DEVNULL) -> Iterator[
        subprocess.Popen[str]]:
    proc = subprocess.Popen(args, stdout=stdout, stderr=subprocess.STDOUT, text=True,
                            stdin=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT if proc.args[0] == str(TETHER) else signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(15)


def _wait_up(base: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    with httpx.Client(base_url=base, timeout=5) as c:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"tether ui serve exited ({proc.returncode})")
            try:
                if c.get("/api/session").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
    raise RuntimeError("tether ui serve did not answer in 60 s")


def one_round(pages: int, runs: int, steps: int, workdir: Path) -> Round:
    """Start ``runs`` runs, a server over them and ``pages`` pages; step the runs to the end."""
    path = fresh_db(workdir, f"ui-steps-{pages}")
    try:
        agent = grow_agent(steps)
        store = SQLiteStore(path, synchronous="FULL")
        ids = [start_run(store, agent, agent_ref=AGENT_REF, goal="grow", name=f"grow-{i}",
                         state={"messages": []}) for i in range(runs)]
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        paths = ["/" if i % 10 == 9 else f"/runs/{ids[i % runs]}" for i in range(pages)]
        with _process([str(TETHER), "--store", str(path), "ui", "serve", "--port",
                       str(port)]) as server:
            _wait_up(base, server)
            client = None
            if pages:
                client = subprocess.Popen(
                    [sys.executable, "-m", "bench.ui_step_cost", "--follow", base, *paths],
                    stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
                assert client.stdout is not None
                if client.stdout.readline().strip() != "ready":
                    raise RuntimeError("the pages did not all open")
            try:
                s0 = _cpu_seconds(server.pid)
                p0 = _cpu_seconds(client.pid) if client else 0.0
                worker = Worker(store, agents={AGENT_REF: agent})
                gc.collect()
                c0, t0 = time.process_time(), time.perf_counter()
                stats = asyncio.run(worker.run(until_idle=True))
                cpu, wall = time.process_time() - c0, time.perf_counter() - t0
                s1 = _cpu_seconds(server.pid)
                p1 = _cpu_seconds(client.pid) if client else 0.0
                if set(stats.finished or {}) != {"done"}:
                    raise RuntimeError(f"the runs did not all finish: {stats.finished}")
            finally:
                got: dict[str, int] = {}
                if client is not None:
                    time.sleep(0.6)  # the last change reaches the pages (counted, not timed)
                    client.send_signal(signal.SIGTERM)
                    out, _ = client.communicate(timeout=30)
                    got = json.loads(out.strip().splitlines()[-1])
        store.close()
        n = runs * steps
        return Round(pages, cpu / n, wall / n, (s1 - s0) / n, (p1 - p0) / n,
                     got.get("changes", 0), got.get("fetches", 0))
    finally:
        remove_db(path)


def measure(pages: int = 100, runs: int = 4, steps: int = 2500, pairs: int = 5,
            workdir: Path = Path("/tmp"), log: Callable[[str], None] = print) -> StepCostSample:
    """``pairs`` pairs of rounds without and with ``pages`` pages, the order alternating."""
    out = StepCostSample(pages, runs, steps)
    one_round(0, 1, 200, workdir)  # imports, the first server's start-up
    for i in range(pairs):
        order = (0, pages) if i % 2 == 0 else (pages, 0)
        done = {k: one_round(k, runs, steps, workdir) for k in order}
        out.pairs.append((done[0], done[pages]))
        log(f"pair {i + 1}: " + "; ".join(
            f"{k} pages {done[k].cpu_per_step * 1e6:.1f} µs CPU/step "
            f"({done[k].wall_per_step * 1e6:.1f} µs wall, server "
            f"{done[k].server_cpu_per_step * 1e6:.1f} µs, pages "
            f"{done[k].pages_cpu_per_step * 1e6:.1f} µs, {done[k].fetches} fetches)"
            for k in (0, pages)))
    return out


def describe(s: StepCostSample) -> str:
    cpu = (s.median(lambda r: r.cpu_per_step, False), s.median(lambda r: r.cpu_per_step, True))
    wall = (s.median(lambda r: r.wall_per_step, False),
            s.median(lambda r: r.wall_per_step, True))
    fetches = s.median(lambda r: r.fetches, True)
    server = s.median(lambda r: r.server_cpu_per_step, True)
    return (f"{s.runs} runs × {s.steps} steps, worker CPU per step {cpu[0] * 1e6:.1f} µs with "
            f"no page, {cpu[1] * 1e6:.1f} µs with {s.pages} pages ({s.slowdown * 100:+.1f}%, "
            f"median of {len(s.pairs)} pairs; wall {wall[0] * 1e6:.0f} -> {wall[1] * 1e6:.0f} "
            f"µs); the server {server * 1e6:.0f} µs CPU per step, {fetches:.0f} live regions "
            "fetched per round")


# -- the page process ----------------------------------------------------------------


class _Page:
    """One open page: its event stream, and its live region fetched again on each change."""

    def __init__(self, client: httpx.AsyncClient, path: str, tally: dict[str, int]) -> None:
        self.client, self.path, self.tally = client, path, tally
        self.busy = self.waiting = False
        self.opened = asyncio.Event()
        self.held: int | None = None
        """The last event the page's timeline shows (run pages)."""
        self.refreshing: asyncio.Task[None] | None = None

    async def follow(self) -> None:
        await self._fetch()  # the page as loaded
        async with self.client.stream("GET", "/api/live") as r:
            async for line in r.aiter_lines():
                if line.startswith("event: hello"):
                    self.opened.set()
                elif line.startswith("event: change"):
                    self.tally["changes"] += 1
                    if self.busy:
                        self.waiting = True
                    else:
                        self.refreshing = asyncio.create_task(self._refresh())

    async def _refresh(self) -> None:
        # ui.js: one fetch at a time; a change during it means one more, 50 ms after.
        self.busy = True
        while True:
            self.waiting = False
            await self._fetch()
            if not self.waiting:
                break
            await asyncio.sleep(0.05)
        self.busy = False

    async def _fetch(self) -> None:
        # ui.js on a run page: it says the last event it shows and gets only those after.
        headers = {"X-Tether-Part": "live"}
        if self.held is not None:
            headers["X-Tether-Seq"] = str(self.held)
        r = await self.client.get(self.path, headers=headers)
        r.raise_for_status()
        got = _DELTA_LAST.search(r.text)
        if got:
            self.held = int(got.group(1))
        self.tally["fetches"] += 1


async def _follow_all(base: str, paths: list[str]) -> dict[str, int]:
    tally = {"changes": 0, "fetches": 0}
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    clients = [httpx.AsyncClient(base_url=base, timeout=120) for _ in paths]
    pages = [_Page(c, p, tally) for c, p in zip(clients, paths, strict=True)]
    tasks = [asyncio.create_task(p.follow()) for p in pages]
    await asyncio.wait_for(asyncio.gather(*(p.opened.wait() for p in pages)), 120)
    tally["changes"] = tally["fetches"] = 0
    print("ready", flush=True)
    await stop.wait()
    for t in tasks + [p.refreshing for p in pages if p.refreshing]:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for c in clients:
        await c.aclose()
    return tally


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.ui_step_cost",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--pages", type=int, default=100)
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--steps", type=int, default=2500)
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp"))
    ap.add_argument("--follow", nargs="+", metavar=("BASE", "PATH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.follow:  # the page process
        print(json.dumps(asyncio.run(_follow_all(args.follow[0], args.follow[1:]))),
              flush=True)
        return
    s = measure(args.pages, args.runs, args.steps, args.pairs, args.workdir)
    print(describe(s))
    print(f"target: at most +5%: {'pass' if s.slowdown <= 0.05 else 'MISS'}")


if __name__ == "__main__":
    main()
