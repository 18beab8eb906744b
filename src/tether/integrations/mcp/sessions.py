"""Long-lived client sessions: one per server per event loop (a worker's loop), opened on
the first call made in that loop, checked before each call and reopened when the server
died, closed when the loop ends (or by :func:`close_sessions`).

The SDK's transports live in anyio task groups, which must be left by the task that
entered them; a step's task ends long before the session should. So each session is
owned by a task of its own, which enters the client, hands it over and waits to be told
to close. Calls from any task of the loop use the client meanwhile.
"""

from __future__ import annotations

import asyncio
import contextvars
import weakref

from mcp import Client
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from tether.integrations.mcp.servers import MCPServerSpec

PROBE_TIMEOUT = 10.0
"""Seconds a live server has to answer the probe before a call (else it is reopened)."""
OPEN_TIMEOUT = 60.0
"""Seconds to launch or reach a server and agree a protocol version with it."""


class Unreachable(Exception):
    """The server could not be reached, so nothing was sent to it."""


class _Session:
    """One server's client on one loop, owned by a task of its own."""

    def __init__(self, server: MCPServerSpec) -> None:
        self.server = server
        self.client: Client | None = None
        self._closing = asyncio.Event()
        self._owner: asyncio.Task[None] | None = None

    async def open(self) -> Client:
        ready: asyncio.Future[Client] = asyncio.get_running_loop().create_future()
        # A fresh context: the owner outlives the step that opened it and must not keep
        # (or see) that step's tether context.
        self._owner = asyncio.get_running_loop().create_task(
            self._own(ready), name=f"tether-mcp:{self.server.name}",
            context=contextvars.Context())
        try:
            self.client = await asyncio.wait_for(asyncio.shield(ready), OPEN_TIMEOUT)
        except BaseException:
            await self.close()
            raise
        return self.client

    async def _own(self, ready: asyncio.Future[Client]) -> None:
        try:
            # The handshake's own limit; each call passes the server's call timeout.
            async with Client(self.server.transport(), read_timeout_seconds=OPEN_TIMEOUT) as client:
                ready.set_result(client)
                await self._closing.wait()
        except BaseException as exc:  # the session's end, however it came: told to the opener
            if not ready.done():
                ready.set_exception(Unreachable(describe_error(exc)))
            if isinstance(exc, asyncio.CancelledError):
                raise

    async def alive(self) -> bool:
        """Whether the server still answers a probe; False once it died."""
        if self.client is None or self._owner is None or self._owner.done():
            return False
        try:
            await asyncio.wait_for(_probe(self.client), PROBE_TIMEOUT)
        except Exception:
            return False
        return True

    async def close(self) -> None:
        """Stop the server process (stdio) or end the HTTP session; never raises."""
        self._closing.set()
        owner, self._owner, self.client = self._owner, None, None
        if owner is not None and not owner.done():
            try:
                await asyncio.wait_for(asyncio.shield(owner), OPEN_TIMEOUT)
            except (Exception, asyncio.CancelledError):
                owner.cancel()


async def _probe(client: Client) -> None:
    """One round trip that proves the server is there: ``server/discover`` at the agreed
    version (2026-07-28 and later, where ``ping`` is gone), ``ping`` before."""
    version = client.protocol_version
    if version in MODERN_PROTOCOL_VERSIONS:
        await client.session.send_discover(version)
    else:
        await client.send_ping()


class _Pool:
    """The sessions of one event loop, by server key."""

    def __init__(self) -> None:
        self.sessions: dict[str, _Session] = {}
        self.locks: dict[str, asyncio.Lock] = {}


_POOLS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Pool] = weakref.WeakKeyDictionary()


def _pool() -> _Pool:
    loop = asyncio.get_running_loop()
    pool = _POOLS.get(loop)
    if pool is None:
        pool = _POOLS[loop] = _Pool()
    return pool


async def session_for(server: MCPServerSpec) -> Client:
    """The open client for ``server`` on this loop: the live one, or a new one.

    Raises:
        Unreachable: the server cannot be launched or reached (nothing was sent).
    """
    pool = _pool()
    key = server.key()
    lock = pool.locks.setdefault(key, asyncio.Lock())
    async with lock:  # one opener at a time: concurrent first calls share one session
        current = pool.sessions.get(key)
        if current is not None and await current.alive():
            assert current.client is not None
            return current.client
        if current is not None:  # died since its last call: the server is started again
            del pool.sessions[key]
            await current.close()
        fresh = _Session(server)
        client = await fresh.open()
        pool.sessions[key] = fresh
        return client


async def close_sessions() -> None:
    """Close every MCP session opened on the running loop (stops stdio server processes).

    Sessions also close when their loop ends (a worker's ``asyncio.run`` returning); call
    this to close them earlier, e.g. before a long pause.
    """
    pool = _pool()
    sessions, pool.sessions = list(pool.sessions.values()), {}
    for s in sessions:
        await s.close()


def describe_error(exc: BaseException) -> str:
    """An exception (often an anyio ExceptionGroup) in one line an operator can act on."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled while connecting"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if type(exc).__name__ not in text else text


def open_count() -> int:
    """How many sessions are open on the running loop (tests and diagnostics)."""
    return len(_pool().sessions)
