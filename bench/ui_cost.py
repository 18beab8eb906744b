"""Dashboard cost: the overview of many runs, and a commit's way to an open page.

Issue 12's targets: the overview with 1,000 runs renders in at most 200 ms
server-side, an event reaches an open page at most 1 s after its commit, and 100 open
live pages slow the worker's per-step benchmark by at most 5% (measured by
:mod:`bench.ui_step_cost`, run from here).

- Overview: a store of ``runs`` runs (started by ``start_run``, one commit each),
  then ``GET /`` through the app in process (the whole page: every read and the
  template), median of ``repeats``; and the same page's data alone
  (:func:`tether.ui.views.overview`).
- Commit to page: a real uvicorn server in a thread of this process on a loopback
  port, one client holding ``/api/live`` open in another thread; each round commits
  a new run in the store, then waits for the ``change`` event and fetches the
  page's live region as the page's script does. The figure is commit to that fetch
  done, median and worst of ``rounds``.

- Open pages' cost to a worker: :func:`bench.ui_step_cost.measure` (its docstring says how).

Run alone: ``python -m bench.ui_cost --runs 1000`` (``--pairs 0``: without the pages'
cost to a worker).
"""

from __future__ import annotations

import argparse
import socket
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.testclient import TestClient

from bench import ui_step_cost
from tether import StepAgent, start_run
from tether.store.sqlite import SQLiteStore
from tether.ui import views
from tether.ui.app import create_app
from tether.ui.context import UiContext


async def _idle(ctx: Any, state: dict[str, Any]) -> Any:
    return None


AGENT = StepAgent(_idle, name="idle")


@dataclass(frozen=True, slots=True)
class UiSample:
    runs: int
    page_ms: float
    """``GET /`` in process, median."""
    data_ms: float
    """The overview's data alone, median."""
    page_bytes: int
    live_ms: float
    """Commit to the live region fetched again, median."""
    live_max_ms: float
    rounds: int
    steps: ui_step_cost.StepCostSample | None = None
    """The worker's CPU per step with 0 and 100 open pages (None: not measured)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _median_ms(fn: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def _live_rounds(store: SQLiteStore, rounds: int) -> list[float]:
    port = _free_port()
    app = create_app(store, port=port)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error",
                                           timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    while not server.started:
        time.sleep(0.01)
    changes: list[float] = []
    seen = threading.Event()

    def listen() -> None:
        try:
            with httpx.Client(base_url=base, timeout=60) as c, \
                    c.stream("GET", "/api/live") as r:
                for line in r.iter_lines():
                    if line.startswith("event: change"):
                        changes.append(time.perf_counter())
                        seen.set()
        except httpx.HTTPError:  # the server closed the stream at the end
            return
    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    time.sleep(0.5)  # the stream is open (its hello sent)
    out = []
    with httpx.Client(base_url=base) as page:
        for i in range(rounds):
            seen.clear()
            t0 = time.perf_counter()
            start_run(store, AGENT, agent_ref="bench:idle", goal="g", name=f"live-{i}")
            seen.wait(10)
            page.get("/", headers={"X-Tether-Part": "live"})
            out.append(time.perf_counter() - t0)
            time.sleep(0.05)
    app.state.ctx.poller.close_streams()
    server.should_exit = True
    thread.join(5)
    return out


def run_ui(workdir: Path, runs: int = 1000, repeats: int = 20, rounds: int = 20, *,
           pairs: int = 5, pages: int = 100, step_runs: int = 4, steps: int = 2500,
           log: Any = print) -> UiSample:
    path = workdir / f"ui-{runs}.db"
    path.unlink(missing_ok=True)
    store = SQLiteStore(path, synchronous="NORMAL")
    for i in range(runs):
        start_run(store, AGENT, agent_ref="bench:idle", goal="g", name=f"r{i}",
                  swarm=f"s{i % 10}")
    app = create_app(store, port=8765)
    ctx: UiContext = app.state.ctx
    with TestClient(app, base_url="http://127.0.0.1:8765") as c:
        size = len(c.get("/").content)
        page = _median_ms(lambda: c.get("/"), repeats)
    data = _median_ms(lambda: views.overview(ctx.ops()), repeats)
    live = _live_rounds(store, rounds)
    store.close()
    path.unlink(missing_ok=True)
    cost = ui_step_cost.measure(pages, step_runs, steps, pairs, workdir, log) if pairs else None
    return UiSample(runs, page, data, size, statistics.median(live) * 1e3, max(live) * 1e3,
                    len(live), cost)


def describe(s: UiSample) -> str:
    return (f"overview of {s.runs} runs: {s.page_ms:.1f} ms the page ({s.page_bytes / 1e3:.0f} kB), "
            f"{s.data_ms:.1f} ms its data; commit to live region refetched: "
            f"{s.live_ms:.0f} ms median, {s.live_max_ms:.0f} ms worst of {s.rounds}"
            + (f"; {ui_step_cost.describe(s.steps)}" if s.steps else ""))


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.ui_cost")
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp"))
    args = ap.parse_args()
    print(describe(run_ui(args.workdir, args.runs, pairs=args.pairs)))


if __name__ == "__main__":
    main()
