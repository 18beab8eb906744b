"""The MCP servers a toolset talks to: one launched as a subprocess over stdio, or one
reached over streamable HTTP. Each is a frozen description; :meth:`transport` makes the
SDK's transport for one connection (a new server process, or a new HTTP client).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from tether.core.canonical import digest
from tether.errors import UsageError

DEFAULT_TIMEOUT = 300.0
"""Seconds a tool call may take before it counts as lost (a long job should say so)."""


@dataclass(frozen=True, slots=True)
class StdioServer:
    """An MCP server launched as a subprocess and spoken to over its stdin and stdout.

    Each worker process (and each event loop in it) launches its own copy on its first
    call, and again if the process dies. Only ``env`` (over a minimal default environment:
    PATH, HOME and the like, as the MCP SDK does) reaches the server: pass what it needs.

    Example:
        >>> files = StdioServer("files", "npx", ["-y", "@modelcontextprotocol/server-filesystem",
        ...                                      "/srv/notes"])
    """

    name: str
    """Names the server in tool errors, logs and the dashboard's messages."""
    command: str
    """The executable (looked up on PATH)."""
    args: tuple[str, ...] | list[str] = ()
    env: Mapping[str, str] | None = None
    """Extra environment variables for the server (secrets here are never journaled)."""
    cwd: str | Path | None = None
    timeout: float = DEFAULT_TIMEOUT
    """Seconds one tool call may take; after that it counts as lost (see the docs)."""

    def __post_init__(self) -> None:
        _check_name(self.name)
        if not self.command:
            raise UsageError(f"MCP server {self.name}: command is empty; name the executable")
        _check_timeout(self.name, self.timeout)

    def describe(self) -> str:
        """The server in a message: its command line, never its environment."""
        return " ".join([self.command, *self.args])

    def key(self) -> str:
        """Identity of the server: one session per key per event loop."""
        return digest({"stdio": self.command, "args": list(self.args),
                       "env": dict(self.env or {}), "cwd": str(self.cwd or "")})

    def transport(self) -> contextlib.AbstractAsyncContextManager[Any]:
        """A new connection: launches the server process (stopped when it is closed)."""
        params = StdioServerParameters(command=self.command, args=list(self.args),
                                       env=dict(self.env) if self.env else None, cwd=self.cwd)
        return stdio_client(params, errlog=sys.stderr)


@dataclass(frozen=True, slots=True)
class HttpServer:
    """An MCP server reached over streamable HTTP at ``url``.

    Example:
        >>> search = HttpServer("search", "https://mcp.example.com/mcp",
        ...                     headers={"Authorization": f"Bearer {token}"})
    """

    name: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    """Sent with every request (authorization): never journaled nor shown."""
    timeout: float = DEFAULT_TIMEOUT

    def __post_init__(self) -> None:
        _check_name(self.name)
        if not self.url.startswith(("http://", "https://")):
            raise UsageError(f"MCP server {self.name}: url must start with http:// or "
                             f"https://, not {self.url!r}")
        _check_timeout(self.name, self.timeout)

    def describe(self) -> str:
        """The server in a message: its URL without a user:password part nor a query
        (either may hold a credential)."""
        scheme, _, rest = self.url.partition("://")
        host, slash, path = rest.partition("/")
        return f"{scheme}://{host.rpartition('@')[2]}{slash}{path.split('?')[0].split('#')[0]}"

    def key(self) -> str:
        """Identity of the server: one session per key per event loop."""
        return digest({"http": self.url, "headers": dict(self.headers)})

    def transport(self) -> contextlib.AbstractAsyncContextManager[Any]:
        """A new connection: an HTTP client of its own, closed with it."""
        return _http(self.url, dict(self.headers), self.timeout)


MCPServerSpec = StdioServer | HttpServer
"""Either kind of server."""


@contextlib.asynccontextmanager
async def _http(url: str, headers: dict[str, str], call_s: float) -> AsyncIterator[Any]:
    # The SDK's own defaults (30 s to connect, a long read for event streams), with the
    # read stretched to the call timeout: the call's own timeout decides when it is lost.
    limits = httpx2.Timeout(30.0, read=max(call_s, 30.0) + 5.0)
    async with httpx2.AsyncClient(headers=headers, timeout=limits) as client, \
            streamable_http_client(url, http_client=client) as streams:
        yield streams


def _check_name(name: str) -> None:
    if not name or not name.strip():
        raise UsageError("an MCP server needs a name (it names the server in every error)")


def _check_timeout(name: str, timeout: float) -> None:
    if not timeout > 0:
        raise UsageError(f"MCP server {name}: timeout must be a positive number of seconds, "
                         f"not {timeout!r}")
