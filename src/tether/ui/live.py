"""Live updates: one poller per server, fanned out to every open page (server-sent events).

The poller reads the store's newest commit batch number
(:meth:`~tether.store.protocol.Store.latest_batch`, one indexed read) every
``interval`` seconds, and only while at least one page listens. When it grew, every
subscriber is told the new number; a page then fetches its live region again. A
subscriber that has not yet taken the last number keeps only the newest one (a slow
page skips to the present instead of queueing), so a hundred pages cost one read per
interval and one small message each per change.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import anyio.to_thread

__all__ = ["Poller", "sse_event"]


class Poller:
    """Follows the store's commits for every open page of one server.

    Args:
        read: the store's newest commit batch number (run in a worker thread: a store
            call blocks).
        interval: seconds between reads while anyone listens.
    """

    def __init__(self, read: Callable[[], int], interval: float = 0.25) -> None:
        self.read = read
        self.interval = interval
        self.head = 0
        self.reads = 0
        """How many times the store was read (a test checks pages share the reads)."""
        self._subscribers: set[asyncio.Queue[int]] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        """Start polling (on the server's event loop)."""
        self._loop = asyncio.get_running_loop()
        self.head = await anyio.to_thread.run_sync(self.read)
        self._task = asyncio.create_task(self._run(), name="tether-ui-poller")

    async def stop(self) -> None:
        """Stop polling; every subscriber's stream ends."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._end()

    def close_streams(self) -> None:
        """End every subscriber's stream now, from any thread (the server is stopping: open
        pages would otherwise hold it until its grace period ends)."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._end)

    def _end(self) -> None:
        for q in list(self._subscribers):
            _offer(q, -1)  # the end of the stream

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue[int]]:
        """A queue that receives the newest batch number after each change (-1: the
        server is stopping)."""
        q: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
        self._subscribers.add(q)
        self._wake.set()
        try:
            yield q
        finally:
            self._subscribers.discard(q)

    @property
    def listeners(self) -> int:
        return len(self._subscribers)

    async def _run(self) -> None:
        while True:
            if not self._subscribers:
                self._wake.clear()
                await self._wake.wait()
            await asyncio.sleep(self.interval)
            try:
                head = await anyio.to_thread.run_sync(self.read)
            except Exception:  # noqa: S112 - a busy or failing store: try again next time
                continue
            self.reads += 1
            if head != self.head:
                self.head = head
                for q in list(self._subscribers):
                    _offer(q, head)


def _offer(q: asyncio.Queue[int], value: int) -> None:
    """Put ``value``, replacing what the subscriber has not taken yet."""
    if q.full():
        with contextlib.suppress(asyncio.QueueEmpty):
            q.get_nowait()
    q.put_nowait(value)


def sse_event(event: str, data: str, *, id_: int | None = None) -> bytes:
    """One server-sent event (``data`` has no newline: it is one JSON text)."""
    head = f"id: {id_}\n" if id_ is not None else ""
    return f"{head}event: {event}\ndata: {data}\n\n".encode()
