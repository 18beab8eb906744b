"""One journaled call at a time inside a step, and signals that LangGraph cannot lose.

tether numbers a step's calls in the order they are made, and a re-run step must
make them in the same order. LangGraph runs a superstep's nodes, and a
``ToolNode`` the tool calls of one message, concurrently: left alone, which call
is made first would depend on timing. :func:`turn` makes the calls take turns in
the order LangGraph starts them (an ``asyncio.Lock`` is first come, first served),
so a replayed step asks in the same order as the live one.

A tether :class:`~tether.errors.Signal` (a pause, an approval to wait for, a stop)
raised inside LangGraph must end the step. Signals are ``BaseException``s, which
LangGraph and LangChain do not catch, but a node's own code might; so each is also
kept in the step's :class:`Turns`, re-raised by every later call of the step and by
:class:`~tether.integrations.langgraph.graph.TetherGraph` once the graph returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

from tether.errors import Signal

T = TypeVar("T")


class Turns:
    """The journaled calls of one step of a graph: their lock, the loop, the first signal."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.loop = asyncio.get_running_loop()
        self.signal: Signal | None = None

    def check(self) -> None:
        """Re-raise the signal an earlier call of the step raised (no call after a pause)."""
        if self.signal is not None:
            raise self.signal


_TURNS: contextvars.ContextVar[Turns | None] = contextvars.ContextVar("tether_lg_turns",
                                                                     default=None)
_HOLDING: contextvars.ContextVar[bool] = contextvars.ContextVar("tether_lg_holding",
                                                               default=False)


@contextlib.contextmanager
def turns_for_step() -> Any:
    """Give the code inside (one graph invocation) a fresh :class:`Turns`."""
    t = Turns()
    token = _TURNS.set(t)
    try:
        yield t
    finally:
        _TURNS.reset(token)


@contextlib.asynccontextmanager
async def turn() -> AsyncIterator[None]:
    """Hold the step's turn around one journaled call; keep a signal it raises."""
    t = _TURNS.get()
    if t is None or _HOLDING.get():  # outside a graph, or a call made inside a call
        yield
        return
    async with t.lock:
        t.check()
        token = _HOLDING.set(True)
        try:
            yield
        except Signal as sig:
            t.signal = t.signal or sig
            raise
        finally:
            _HOLDING.reset(token)


def run_blocking(coro: Coroutine[Any, Any, T], what: str) -> T:
    """Run ``coro`` on the step's loop from a thread LangGraph runs sync code in."""
    from tether.errors import UsageError
    t = _TURNS.get()
    if t is None:
        coro.close()
        raise UsageError(f"{what} was called synchronously outside a tether step; run the "
                         "graph with TetherGraph under a tether Worker, or call it with "
                         "ainvoke")
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run_coroutine_threadsafe(coro, t.loop).result()
    coro.close()
    raise UsageError(f"{what} was called synchronously inside the event loop (it would block "
                     "it); make the node async and use ainvoke")
