"""LangChain's sync entry points, run on the step's event loop.

LangGraph runs a sync node (and a model's or tool's sync ``invoke``) in a thread.
The journal lives on the step's loop, so a wrapped model or tool called from such
a thread hands its call to that loop and waits for it. The calls of a step take
turns and a signal ends the step in the runtime itself
(:class:`tether.runtime.stepping.StepCalls`), for every framework alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

from tether.errors import UsageError

T = TypeVar("T")

_LOOP: contextvars.ContextVar[asyncio.AbstractEventLoop | None] = contextvars.ContextVar(
    "tether_lg_loop", default=None)


@contextlib.contextmanager
def on_step_loop() -> Iterator[None]:
    """Let sync code inside (one graph invocation, its threads included) reach the loop."""
    token = _LOOP.set(asyncio.get_running_loop())
    try:
        yield
    finally:
        _LOOP.reset(token)


def run_blocking(coro: Coroutine[Any, Any, T], what: str) -> T:
    """Run ``coro`` on the step's loop from a thread LangGraph runs sync code in."""
    loop = _LOOP.get()
    if loop is None:
        coro.close()
        raise UsageError(f"{what} was called synchronously outside a tether step; run the "
                         "graph with TetherGraph under a tether Worker, or call it with "
                         "ainvoke")
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run_coroutine_threadsafe(coro, loop).result()
    coro.close()
    raise UsageError(f"{what} was called synchronously inside the event loop (it would block "
                     "it); make the node async and use ainvoke")
