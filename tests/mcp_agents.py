"""An Agent whose tools come from a real MCP server (tests/mcpkit.py, over stdio), built
when the module is imported, as a worker imports it: ``tests.mcp_agents:shop``; and a
worker entry point for the crash test.

Set first: ``OPENAI_BASE_URL`` (a loopback FakeChatServer), ``MCP_CALLS`` (the server's
side file). ``MCP_HOLD`` (a file) makes the local ``hold`` tool wait until that file
exists: the crash test kills the worker there, after the MCP effect before it is durable.

    python -m tests.mcp_agents worker STORE READY
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

from tests.mcpkit import ROOT, stdio_args
from tether import Agent, Worker, tool
from tether.integrations.mcp import StdioServer, close_sessions, mcp_tools
from tether.models.openai import OpenAIModel
from tether.store import open_store

SHOP = StdioServer("shop", sys.executable, stdio_args(Path(os.environ.get("MCP_CALLS", "/dev/null"))),
                   cwd=ROOT)


@tool(effect="irreversible", idempotent=True)
def hold(note: str) -> str:
    """Waits while $MCP_HOLD names a file that does not exist yet."""
    gate = os.environ.get("MCP_HOLD")
    while gate and not Path(gate).exists():
        time.sleep(0.02)
    return f"held {note}"


shop = Agent("shop", model=OpenAIModel("gpt-4o-mini", api_key="test"),
             instructions="Book what the user asks for.",
             tools=[*mcp_tools(SHOP, effects={"search": "read"}), hold])


async def _work(store_path: str) -> None:
    try:
        await Worker(open_store(store_path), poll_interval=0.02).run(until_idle=True)
    finally:
        await close_sessions()


if __name__ == "__main__":
    if sys.argv[1] == "worker":
        Path(sys.argv[3]).write_text(str(os.getpid()))
        asyncio.run(_work(sys.argv[2]))
