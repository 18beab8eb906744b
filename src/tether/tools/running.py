"""Running a tool under its :class:`~tether.tools.base.ToolContext`: the one way tether
calls a tool, for a step's effects and reads, a rollback's undos and a fork's rewind.

The context is set for the call (``current()``, ``register_undo``, ``record_after``
see it); an async tool is awaited, a sync one runs on a thread of :func:`tool_threads`
in a copy of the caller's context, so the call does not block the event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import os
from collections.abc import Callable, Iterator
from typing import Any

from tether.tools.base import Tool, ToolContext, _current

_THREADS: list[concurrent.futures.ThreadPoolExecutor] = []


def tool_threads() -> concurrent.futures.ThreadPoolExecutor:
    """The threads sync tools (and their hooks) run on: like the loop's default pool, but
    its futures tell whether a cancelled call's thread still runs."""
    if not _THREADS:
        _THREADS.append(concurrent.futures.ThreadPoolExecutor(
            max_workers=min(32, (os.cpu_count() or 1) + 4), thread_name_prefix="tether-tool"))
    return _THREADS[0]


async def run_tool(tool: Tool, args: dict[str, Any], tc: ToolContext, *,
                   orphaned: Callable[[concurrent.futures.Future[Any]], None] | None = None
                   ) -> Any:
    """Call ``tool`` with (validated) ``args`` under ``tc``; its result, or what it raised.

    A sync tool cancelled (a stop, a shutdown) while its thread still acts is given to
    ``orphaned``: whoever holds a lock for it keeps it until that thread is done.
    """
    with _under(tc):
        if tool.is_async:
            return await tool.fn(**args)
        # The thread runs in a copy of this context, so it sees ``tc`` too.
        call = functools.partial(contextvars.copy_context().run, tool.fn, **args)
        fut = tool_threads().submit(call)
        try:
            return await asyncio.wrap_future(fut)
        except asyncio.CancelledError:
            if orphaned is not None and not fut.done():
                orphaned(fut)
            raise


def run_tool_blocking(tool: Tool, args: dict[str, Any], tc: ToolContext) -> Any:
    """:func:`run_tool` for a caller with no event loop (a rollback's undos, a fork's
    rewind, from the CLI), to completion: an async tool on a loop of its own (awaited,
    never dropped as an unawaited coroutine); a sync one in this thread, which has
    nothing else to do meanwhile (a loop and a thread per undo would slow a rollback of
    a thousand file effects by a second).
    """
    if tool.is_async:
        return asyncio.run(run_tool(tool, args, tc))
    with _under(tc):
        return tool.fn(**args)


@contextlib.contextmanager
def _under(tc: ToolContext) -> Iterator[None]:
    """``tc`` is the context of the tool call in progress (``current()``) meanwhile."""
    token = _current.set(tc)
    try:
        yield
    finally:
        _current.reset(token)
