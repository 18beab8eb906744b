"""What running a framework's agent under tether costs per turn, against the framework alone.

The same small tool-calling agent (``bench/int_agents.py``) in PydanticAI, the OpenAI
Agents SDK and LangGraph: ``turns`` turns, each one model call that asks the read tool
``lookup`` once, over a history that grows by two messages a turn, then a final
answer. Its model is the framework's own OpenAI client against a loopback
``FakeChatServer`` (the same server, and so the same server cost, for all). Each
framework runs

* alone (``plain``): the framework's own run loop, nothing durable;
* LangGraph only, with its own durable checkpointer (``saver``): ``AsyncSqliteSaver``
  on a file in WAL mode, ``synchronous=FULL``, ``durability="sync"``;
* under tether (``tether``): its integration's agent, started with ``start_run`` on a
  ``SQLiteStore`` (default ``synchronous=FULL``) and driven by one
  ``Worker(...).run(until_idle=True)``: every model call through ``ctx.model_call``
  (journaled), every tool call through ``ctx.call`` (policy, journal), the framework's
  state checkpointed after every step (a turn for PydanticAI and the Agents SDK, a
  superstep for LangGraph: two per turn).

A turn's time is from one ``lookup`` call to the next (the tool notes
``perf_counter`` and ``process_time``): the tool's result going back into the history,
whatever the framework and tether do between turns, the next model request and its
answer. CPU is the whole process's (every thread: the worker's committer, aiosqlite's,
and the server's, which is the same in every mode). Repeats interleave every
(framework, mode), so a machine that slows down slows all alike.

``python -m bench.integrations_cost [--turns N] [--repeats N] [--write FILE]`` prints the
section, or writes it into the report in place of its previous version.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import int_agents as ia
from bench.workload import fresh_db, remove_db
from tether.testing.openai_server import FakeChatServer

FRAMEWORKS = ("pydantic-ai", "openai-agents", "langgraph")
MODES = {"plain": "the framework alone", "saver": "LangGraph + AsyncSqliteSaver (durable)",
         "tether": "under tether (SQLite, one Worker)"}
_PLAIN: dict[str, Callable[[str, int], Awaitable[str]]] = {
    "pydantic-ai": ia.pydantic_plain, "openai-agents": ia.agents_plain,
    "langgraph": ia.langgraph_plain}
_TETHER: dict[str, Callable[[str], Any]] = {
    "pydantic-ai": ia.pydantic_tether, "openai-agents": ia.agents_tether,
    "langgraph": ia.langgraph_tether}


@dataclass(frozen=True, slots=True)
class IntSample:
    """One run of the agent: ``turns`` turns in one (framework, mode)."""

    framework: str
    mode: str
    turns: int
    wall: float
    """The whole run, seconds (tether: ``Worker.run`` from start to idle)."""
    cpu: float
    ticks: tuple[tuple[float, float], ...]
    """(perf_counter, process_time) at each turn's tool call."""
    history: int
    """Messages the model was sent in the last request (the history it grew)."""
    steps: int = 0
    """tether steps the run took (0 outside tether)."""

    def per_turn(self, cpu: bool = False) -> list[float]:
        """Seconds from each turn's tool call to the next: turns 2..N."""
        i = 1 if cpu else 0
        return [b[i] - a[i] for a, b in zip(self.ticks, self.ticks[1:], strict=False)]

    def window(self, end: int, width: int = 5, cpu: bool = False) -> float:
        """Mean seconds per turn over the ``width`` turns ending at turn ``end``."""
        xs = self.per_turn(cpu)[max(end - width, 1) - 1:end - 1]
        return sum(xs) / len(xs)


def _check(s: IntSample, output: str, requests: int) -> IntSample:
    if output != ia.FINAL or len(s.ticks) != s.turns or requests != s.turns + 1:
        raise RuntimeError(f"{s.framework} {s.mode}: the agent did not run its {s.turns} turns "
                           f"(output {output!r}, {len(s.ticks)} tool calls, {requests} model "
                           "requests)")
    if s.history < 2 * s.turns + 1:
        raise RuntimeError(f"{s.framework} {s.mode}: the last request held {s.history} messages, "
                           f"not the {2 * s.turns + 1}+ of the whole history")
    return s


def _timed(run: Callable[[], Any]) -> tuple[Any, float, float]:
    ia.TICKS.clear()
    gc.collect()
    w0, c0 = time.perf_counter(), time.process_time()
    out = run()
    return out, time.perf_counter() - w0, time.process_time() - c0


def run_plain(framework: str, mode: str, turns: int, workdir: Path) -> IntSample:
    """The framework alone (``mode`` ``plain``), or LangGraph with its saver (``saver``)."""
    db = fresh_db(workdir, f"int-{framework}-{mode}")
    try:
        with FakeChatServer(ia.script(turns)) as server:
            if mode == "saver":
                coro: Callable[[], Awaitable[str]] = lambda: ia.langgraph_saver(  # noqa: E731
                    server.base_url, turns, db)
            else:
                coro = lambda: _PLAIN[framework](server.base_url, turns)  # noqa: E731
            out, wall, cpu = _timed(lambda: asyncio.run(coro()))
            reqs = server.requests
        s = IntSample(framework, mode, turns, wall, cpu, tuple(ia.TICKS),
                      len(reqs[-1].body["messages"]))
        return _check(s, out, len(reqs))
    finally:
        remove_db(db)


def run_tether(framework: str, turns: int, workdir: Path) -> IntSample:
    """The framework's agent under tether: one run, one Worker until idle."""
    from tether import Worker, start_run
    from tether.store.sqlite import SQLiteStore
    db = fresh_db(workdir, f"int-{framework}-tether")
    store = SQLiteStore(db)
    try:
        with FakeChatServer(ia.script(turns)) as server:
            agent = _TETHER[framework](server.base_url)
            ref = f"bench.int_agents:{framework}"
            run = start_run(store, agent, agent_ref=ref, goal=ia.GOAL)
            worker = Worker(store, agents={ref: agent}, poll_interval=0.01)
            _, wall, cpu = _timed(lambda: asyncio.run(worker.run(until_idle=True)))
            reqs = server.requests
        row = store.get_run(run)
        if row is None or row.status != "done":
            raise RuntimeError(f"{framework} under tether: run {run} ended "
                               f"{row.status if row else 'missing'}, not done")
        done = [e for e in store.events(run) if e.kind == "run.done"][-1]
        s = IntSample(framework, "tether", turns, wall, cpu, tuple(ia.TICKS),
                      len(reqs[-1].body["messages"]), row.step)
        return _check(s, str(done.payload.get("result")), len(reqs))
    finally:
        store.close()
        remove_db(db)


def has_saver() -> bool:
    """Whether LangGraph's SQLite checkpointer is installed (the bench extra; ``make test``'s
    dev extra has LangGraph without it)."""
    try:
        return importlib.util.find_spec("langgraph.checkpoint.sqlite") is not None
    except ModuleNotFoundError:
        return False


def cases() -> list[tuple[str, str]]:
    """Every (framework, mode) measured, in the report's order."""
    out = []
    for fw in FRAMEWORKS:
        out.append((fw, "plain"))
        if fw == "langgraph" and has_saver():
            out.append((fw, "saver"))
        out.append((fw, "tether"))
    return out


def run_one(framework: str, mode: str, turns: int, workdir: Path) -> IntSample:
    if mode == "tether":
        return run_tether(framework, turns, workdir)
    return run_plain(framework, mode, turns, workdir)


def measure(turns: int, repeats: int, workdir: Path,
            log: Callable[[str], None] = lambda s: None) -> list[IntSample]:
    """``repeats`` rounds, each running every case once (after one untimed warm-up round
    that imports the frameworks and fills their caches)."""
    for fw, mode in cases():
        run_one(fw, mode, min(turns, 3), workdir)
    out: list[IntSample] = []
    for rep in range(repeats):
        for fw, mode in cases():
            s = run_one(fw, mode, turns, workdir)
            out.append(s)
            med = sorted(s.per_turn())[len(s.per_turn()) // 2]
            log(f"integrations rep {rep + 1}: {fw} {mode}: {med * 1e3:.2f} ms/turn median, "
                f"{(s.ticks[-1][1] - s.ticks[0][1]) / (turns - 1) * 1e3:.2f} ms CPU/turn")
    return out


def main(argv: list[str] | None = None) -> None:
    import argparse
    import shutil
    import sys
    import tempfile
    from datetime import UTC, datetime

    from bench.config import FULL
    from bench.integrations_report import section, write_into
    from bench.machine import load_average
    ap = argparse.ArgumentParser(prog="python -m bench.integrations_cost", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--turns", type=int, default=FULL.int_turns)
    ap.add_argument("--repeats", type=int, default=FULL.int_repeats)
    ap.add_argument("--write", type=Path, default=None, metavar="FILE",
                    help="write the section into FILE (docs/benchmarks.md) in place of its "
                         "previous version, instead of printing it")
    args = ap.parse_args(argv)
    if args.turns < 2 or args.repeats < 1:
        raise SystemExit("--turns must be at least 2 and --repeats at least 1")
    workdir = Path(tempfile.mkdtemp(prefix="tether-bench-int-"))
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M")
    loads = [load_average()]
    try:
        samples = measure(args.turns, args.repeats, workdir,
                          log=lambda m: print(m, file=sys.stderr, flush=True))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    loads.append(load_average())
    text = section(samples, loads=(loads[0], loads[1]), when=when)
    if args.write is None:
        print(text)
    else:
        write_into(args.write, text)
        print(f"wrote the integrations section into {args.write}")


if __name__ == "__main__":
    main()
