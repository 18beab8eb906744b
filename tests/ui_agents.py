"""Agents the dashboard's tests drive with a real worker (``tether worker`` loads them
by reference, ``tests.ui_agents:NAME``, from the repository root)."""

from __future__ import annotations

import asyncio
from typing import Any

from tether import Done, StepAgent, tool
from tether.errors import ToolFailed
from tether.tools import current, register_undo


@tool(effect="irreversible")
def send(to: str, amount: int) -> str:
    """Send money (irreversible: the default policy asks a person first)."""
    return f"sent {amount} to {to}"


@tool(effect="read")
def balance() -> int:
    """Read the balance."""
    return 100


async def _pay(ctx: Any, state: dict[str, Any]) -> Any:
    state["balance"] = await ctx.call(balance)
    try:
        state["result"] = await ctx.call(send, to="bob", amount=5)
    except ToolFailed as exc:  # denied: the step is told why and goes on
        state["result"] = f"failed: {exc}"
    return Done(state["result"])


@tool(effect="reversible", idempotent=True)
def unwrite(path: str, old: str) -> str:
    """Undo of ``write``: put the old text back."""
    ws = current().workspace
    assert ws is not None
    (ws / path).write_text(old)
    return f"restored {path}"


@tool(effect="reversible")
def write(path: str, text: str) -> str:
    """Write a file in the run's workspace; registers ``unwrite``."""
    ws = current().workspace
    assert ws is not None
    target = ws / path
    register_undo(unwrite, path=path, old=target.read_text() if target.exists() else "")
    target.write_text(text)
    return "ok"


async def _writer(ctx: Any, state: dict[str, Any]) -> Any:
    n = state.get("n", 0) + 1
    state["n"] = n
    state.setdefault("written", []).append(f"f{n}.txt")
    await ctx.call(write, path=f"f{n}.txt", text=f"v{n}")
    return Done(n) if n >= 3 else None


async def _ticker(ctx: Any, state: dict[str, Any]) -> Any:
    state["n"] = state.get("n", 0) + 1
    await asyncio.sleep(0.02)  # a step takes a moment: there is time to stop it mid-run
    return None


payer = StepAgent(_pay, name="payer", tools=[send, balance])
writer = StepAgent(_writer, name="writer", tools=[write, unwrite])
ticker = StepAgent(_ticker, name="ticker")
