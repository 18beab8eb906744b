"""A real MCP server (the SDK's MCPServer, FastMCP's successor) for the MCP tests, and how
to run it: as a stdio subprocess, or over streamable HTTP on loopback in a subprocess.

Every tool call appends one JSON line to the file ``$MCP_CALLS`` (flushed and fsynced)
before it acts: tool, arguments, the ``tether/idempotency_key`` the request's ``_meta``
carried, pid. That side file is what the server really did; the tests compare it with
what tether journaled.

Run as a module, from the repository root::

    python -m tests.mcpkit stdio CALLS
    python -m tests.mcpkit http CALLS PORTFILE
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ImageContent, TextContent, ToolAnnotations

ROOT = Path(__file__).resolve().parent.parent
META_KEY = "tether/idempotency_key"
VARIANT_ENV = "MCP_VARIANT"


def calls(path: Path) -> list[dict[str, Any]]:
    """Every call the server received, in order."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def stdio_args(calls_file: Path) -> list[str]:
    """``args`` for a StdioServer running this module (its command: sys.executable)."""
    return ["-m", "tests.mcpkit", "stdio", str(calls_file)]


class HttpServerProcess:
    """The server over streamable HTTP on 127.0.0.1, in a subprocess a test can kill."""

    def __init__(self, calls_file: Path, port_file: Path) -> None:
        self.calls_file, self.port_file = calls_file, port_file
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self) -> HttpServerProcess:
        self.port_file.unlink(missing_ok=True)
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.mcpkit", "http",
                                      str(self.calls_file), str(self.port_file)], cwd=ROOT)
        for _ in range(600):  # written once the socket listens
            if self.port_file.exists() and self.port_file.read_text().strip():
                self.port = int(self.port_file.read_text())
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"MCP HTTP server exited with {self.proc.returncode}")
            time.sleep(0.05)
        raise RuntimeError("MCP HTTP server did not start")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def __enter__(self) -> HttpServerProcess:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.kill()


# -- the server ---------------------------------------------------------------
def build(calls_file: Path) -> MCPServer:
    """The MCP server: a read tool, an irreversible one, an idempotent one, a failing one,
    one with structured output, one returning an image and one that kills its process."""
    server = MCPServer("tether-test")
    done: dict[str, str] = {}  # idempotency key -> result (the server's own dedupe)

    def note(ctx: Context, tool: str, **arguments: Any) -> str | None:
        meta = ctx.request_context.meta or {}
        key = meta.get(META_KEY)
        auth = (ctx.headers or {}).get("authorization")
        line = json.dumps({"tool": tool, "arguments": arguments, "key": key, "pid": os.getpid(),
                           "auth": auth})
        with calls_file.open("a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())
        return key if isinstance(key, str) else None

    @server.tool(annotations=ToolAnnotations(read_only_hint=True))
    def search(query: str, ctx: Context) -> str:
        """Search the catalogue."""
        note(ctx, "search", query=query)
        return f"3 results for {query}"

    @server.tool(annotations=ToolAnnotations(destructive_hint=True))
    def book(item: str, ctx: Context) -> str:
        """Book an item (cannot be undone)."""
        note(ctx, "book", item=item)
        return f"booked {item}"

    @server.tool(annotations=ToolAnnotations(idempotent_hint=True, read_only_hint=False))
    def upsert(name: str, value: str, ctx: Context) -> dict[str, Any]:
        """Set a record (the same key twice acts once)."""
        key = note(ctx, "upsert", name=name, value=value)
        if key is not None and key in done:
            return {"name": name, "value": done[key], "repeat": True}
        if key is not None:
            done[key] = value
        return {"name": name, "value": value, "repeat": False}

    @server.tool()
    def broken(x: int, ctx: Context) -> str:
        """Always fails."""
        note(ctx, "broken", x=x)
        raise ToolError(f"cannot handle {x}")

    @server.tool(structured_output=False)
    def picture(ctx: Context) -> list[Any]:
        """A picture and a caption."""
        note(ctx, "picture")
        return [TextContent(text="a red dot"),
                ImageContent(data="iVBORw0KGgo=", mime_type="image/png")]

    @server.tool()
    def crash(item: str, ctx: Context) -> str:
        """Dies in the middle of the call (after noting it), unless this idempotency key
        was seen before (a repeat finds the work done)."""
        key = note(ctx, "crash", item=item)
        if key is None or [c["key"] for c in calls(calls_file)].count(key) < 2:
            os.kill(os.getpid(), signal.SIGKILL)
        return f"done {item}"

    @server.tool()
    async def slow(seconds: float, ctx: Context) -> str:
        """Takes its time."""
        note(ctx, "slow", seconds=seconds)
        await anyio.sleep(seconds)
        return f"slept {seconds}"

    if os.environ.get(VARIANT_ENV) == "2":  # the server's tools changed (a new version)
        @server.tool()
        def refund(item: str, ctx: Context) -> str:
            """Refund an item."""
            note(ctx, "refund", item=item)
            return f"refunded {item}"

    return server


def _serve_http(calls_file: Path, port_file: Path) -> None:
    import uvicorn
    server = build(calls_file)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    config = uvicorn.Config(server.streamable_http_app(), log_level="warning", lifespan="on")
    userver = uvicorn.Server(config)

    async def main() -> None:
        async def announce() -> None:
            while not userver.started:  # noqa: ASYNC110 - uvicorn offers a flag, no event
                await anyio.sleep(0.01)
            await anyio.Path(port_file).write_text(str(sock.getsockname()[1]))
        async with anyio.create_task_group() as tg:
            tg.start_soon(announce)
            await userver.serve(sockets=[sock])
    anyio.run(main)


if __name__ == "__main__":
    mode, calls_path = sys.argv[1], Path(sys.argv[2])
    if mode == "stdio":
        build(calls_path).run("stdio")
    else:
        _serve_http(calls_path, Path(sys.argv[3]))
