"""Agents that put a NUL character (``\\x00``) where a store keeps text
(tests/test_nul_text.py): PostgreSQL's text cannot hold one, SQLite's can."""

from __future__ import annotations

import os
from typing import Any

from tether import Continue, Done, StepAgent

RENAME_ENV = "NUL_RENAME"


async def _failer(ctx: Any, state: dict[str, Any]) -> Done:
    raise RuntimeError("boom\x00boom")


async def _board_nul(ctx: Any, state: dict[str, Any]) -> Done:
    await ctx.board.set("k\x00ey", 1)
    return Done("set")


async def _fine(ctx: Any, state: dict[str, Any]) -> Continue | Done:
    await ctx.board.set("key", ctx.step)
    return Done("fine") if ctx.step >= 2 else Continue()


failer = StepAgent(_failer, name="failer")
board_nul = StepAgent(_board_nul, name="board_nul")
fine = StepAgent(_fine, name="fine")
renamed = StepAgent(_fine, name="nul\x00named" if os.environ.get(RENAME_ENV) else "renamed")
"""An agent whose name (the actor of its steps' events) holds NUL in a process with
``$NUL_RENAME`` set: its code changed after its runs started (a new run's agent name is
checked), so only the PostgreSQL store's own check (the safety net) meets it."""
