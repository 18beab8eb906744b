"""Agents the control and CLI tests start by reference (``tests.sample_agents:NAME``)."""

from __future__ import annotations

import asyncio
import os
import secrets
import threading
import time
from pathlib import Path
from typing import Any

from tether import Done, SleepUntil, StepAgent, tool

RELEASE = threading.Event()


def _side(line: str) -> None:
    path = os.environ.get("TETHER_TEST_SIDE")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())


@tool(effect="irreversible")
def charge(amount: int) -> str:
    """Charge a card (irreversible); notes each execution in the side channel."""
    _side(f"charge {amount} pid={os.getpid()}")
    return f"charged {amount}"


@tool(effect="irreversible")
def charge_slowly(amount: int) -> str:
    """Charge, then hang until released (or forever): for kill and stop tests."""
    _side(f"charge {amount} pid={os.getpid()}")
    marker = os.environ.get("TETHER_TEST_MARKER")
    if marker:
        Path(marker).write_text("in tool")
    deadline = time.monotonic() + 60
    while not RELEASE.is_set() and time.monotonic() < deadline:
        time.sleep(0.01)
    return f"charged {amount}"


async def _pay_fast(ctx: Any, state: dict[str, Any]) -> Any:
    state["result"] = await ctx.call(charge, amount=7)
    return Done(state["result"])


async def _ticker(ctx: Any, state: dict[str, Any]) -> Any:
    await asyncio.sleep(0.01)
    state["n"] = state.get("n", 0) + 1
    return None


async def _pay_once(ctx: Any, state: dict[str, Any]) -> Any:
    result = await ctx.call(charge_slowly, amount=42)
    state["result"] = result
    return Done(result)


async def _sleeper(ctx: Any, state: dict[str, Any]) -> Any:
    state["n"] = state.get("n", 0) + 1
    return SleepUntil(await ctx.now() + 3600)


@tool(effect="reversible", idempotent=True)
def slow_undo(path: str, old: str) -> str:
    """Undo of ``put``: write the old text back; with a marker set, hang once written."""
    from tether.tools import current
    ws = current().workspace
    assert ws is not None
    (ws / path).write_text(old)
    _side(f"undo {path}")
    marker = os.environ.get("TETHER_TEST_MARKER")
    if marker:
        Path(marker).write_text("undoing")
        time.sleep(60)
    return f"restored {path}"


@tool(effect="reversible")
def put(path: str, text: str) -> str:
    """Write a file in the workspace; registers ``slow_undo``."""
    from tether.tools import current, register_undo
    ws = current().workspace
    assert ws is not None
    target = ws / path
    old = target.read_text() if target.exists() else ""
    register_undo(slow_undo, path=path, old=old)
    target.write_text(text)
    return "ok"


async def _putter(ctx: Any, state: dict[str, Any]) -> Any:
    n = state.get("n", 0) + 1
    state["n"] = n
    await ctx.call(put, path=f"f{n}.txt", text=f"v{n}")
    return Done() if n >= 3 else None


def _hoarder(ctx: Any, state: dict[str, Any]) -> Any:
    # 32 KB of incompressible state per step: a few steps fill a small disk.
    state.setdefault("blobs", []).append(secrets.token_hex(16_384))
    return Done(len(state["blobs"])) if len(state["blobs"]) >= HOARD_STEPS else None


async def _hoard_files(ctx: Any, state: dict[str, Any]) -> Any:
    n = len(state.setdefault("blobs", [])) + 1
    await ctx.call(put, path=f"h{n}.txt", text=f"v{n}")  # an effect every step
    state["blobs"].append(secrets.token_hex(16_384))
    return Done(n) if n >= HOARD_STEPS else None


HOARD_STEPS = 10
ticker = StepAgent(_ticker, name="ticker")
hoarder = StepAgent(_hoarder, name="hoarder")
file_hoarder = StepAgent(_hoard_files, name="file_hoarder", tools=[put, slow_undo])
putter = StepAgent(_putter, name="putter", tools=[put, slow_undo])
pay_once = StepAgent(_pay_once, name="pay_once", tools=[charge_slowly])
pay_fast = StepAgent(_pay_fast, name="pay_fast", tools=[charge])
sleeper = StepAgent(_sleeper, name="sleeper")


def main() -> None:
    """``python -m tests.sample_agents worker STORE``: a real worker, forever."""
    import sys

    from tether import Worker
    from tether.store.sqlite import SQLiteStore
    store = SQLiteStore(sys.argv[2])
    asyncio.run(Worker(store, lease_ttl=2.0).run(handle_signals=True))


if __name__ == "__main__":
    main()
