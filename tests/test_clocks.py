"""Time is read through two injected clocks, and stamping events shares no state.

A run clock (what the journal and the agent see) and a wall clock (leases,
heartbeats, expiry); `tether.system_clock` is the one module that reads the
system's time, so a test moves a wall clock instead of sleeping.
"""

from __future__ import annotations

import ast
import asyncio
import threading
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tether import Done, StepAgent, Worker, start_run
from tether.core.ids import iso, iso_stamper
from tether.store.sqlite import SQLiteStore
from tether.system_clock import ShiftedClock

SRC = Path(__file__).resolve().parent.parent / "src" / "tether"
# Surfaces may make the system clocks; nothing else reads the time itself.
ALLOWED = {"system_clock.py", "cli", "demo"}
READS = {("time", "time"), ("time", "monotonic"), ("time", "time_ns"), ("time", "perf_counter"),
         ("datetime", "now"), ("datetime", "utcnow"), ("date", "today")}


def _reads(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and (node.value.id, node.attr) in READS:
            found.append(f"{path.relative_to(SRC)}:{node.lineno} {node.value.id}.{node.attr}")
        if isinstance(node, ast.ImportFrom) and node.module == "time" \
                and any(a.name in ("time", "monotonic") for a in node.names):
            found.append(f"{path.relative_to(SRC)}:{node.lineno} from time import")
    return found


def test_only_the_system_clock_reads_the_time() -> None:
    found = [r for p in sorted(SRC.rglob("*.py"))
             if p.relative_to(SRC).parts[0] not in ALLOWED for r in _reads(p)]
    assert found == []


@given(st.floats(min_value=-2e9, max_value=2e11, allow_nan=False))
def test_stamps_are_iso(t: float) -> None:
    assert iso_stamper()(t) == iso(t)


def test_threads_stamping_through_one_stamper_never_mix_their_seconds() -> None:
    stamps = iso_stamper()
    wrong: list[tuple[float, str]] = []

    def stamp(base: float) -> None:
        for i in range(20_000):
            t = base + (i % 2) * 3600 + 0.25  # a different second at every call
            got = stamps(t)
            if got != iso(t):
                wrong.append((t, got))
    threads = [threading.Thread(target=stamp, args=(1_700_000_000 + k * 86_400,)) for k in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert wrong == []


def _once(ctx: Any, state: dict[str, Any]) -> Any:
    return Done({"ok": True})


ONCE = StepAgent(_once, name="once")


def test_a_lease_expires_on_the_wall_clock_without_waiting(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "t.db")
    try:
        rid = start_run(store, ONCE, agent_ref="once", goal="end")
        # A live owner on another host holds the run for 30 s: nothing reclaims it early.
        # (--until-idle would wait for it: this worker is stopped after some passes.)
        assert store.acquire(rid, "elsewhere:1:worker", 30.0, store.clock.now()) is not None
        assert store.held_by_others("here", store.clock.now()) == [rid]

        async def a_while() -> Any:
            stop = asyncio.Event()
            asyncio.get_running_loop().call_later(0.5, stop.set)
            return await Worker(store, agents={"once": ONCE}).run(until_idle=True, stop=stop)
        stats = asyncio.run(a_while())
        assert stats.runs_driven == 0
        later = ShiftedClock()
        later.advance(31.0)
        stats = asyncio.run(Worker(store, agents={"once": ONCE}, wall=later).run(until_idle=True))
        assert stats.runs_driven == 1
        assert store.get_run(rid).status == "done"  # type: ignore[union-attr]
    finally:
        store.close()
