"""Listing a server's tools when the toolset is built (at import of the agent's module).

A worker loads an agent by ``module:attr``, and the agent's tools (names, descriptions,
argument schemas) are part of its definition: the policy and the dashboard see them, the
model is offered them, and the definition hash covers them. So they are listed once, when
the toolset is built, from a server reached for that alone; the calls later use a session
of the worker's own loop (:mod:`tether.integrations.mcp.sessions`).

The listing runs on a thread with a loop of its own, so building a toolset works at import
time, from plain code or from inside a running loop alike. With ``cache=PATH`` each
successful listing is saved, and a server that cannot be reached is described by the saved
listing instead (with a warning in the log): a worker can start while the server is down,
and its runs pause on the first call instead of failing to load.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mcp import Client

from tether.errors import ToolDefinitionError
from tether.integrations.mcp.classes import Hints
from tether.integrations.mcp.servers import MCPServerSpec
from tether.integrations.mcp.sessions import OPEN_TIMEOUT, describe_error

log = logging.getLogger("tether.integrations.mcp")
PAGE_CAP = 100
"""Pages of ``tools/list`` followed at most: a server whose cursor never ends cannot hang."""


@dataclass(frozen=True, slots=True)
class ListedTool:
    """One tool as the server describes it."""

    name: str
    description: str
    input_schema: dict[str, Any]
    hints: Hints


def list_tools(server: MCPServerSpec, *, cache: str | Path | None = None) -> list[ListedTool]:
    """The server's tools, listed now (or, with ``cache``, from the last listing when the
    server cannot be reached).

    Raises:
        ToolDefinitionError: the server cannot be reached (and no saved listing), naming it.
    """
    try:
        with concurrent.futures.ThreadPoolExecutor(1, "tether-mcp-list") as pool:
            listed = pool.submit(asyncio.run, _list(server)).result()
    except Exception as exc:
        why = describe_error(exc)
        saved = _load(Path(cache), server) if cache is not None else None
        if saved is None:
            raise ToolDefinitionError(
                f"MCP server {server.name} ({server.describe()}): cannot list its tools: {why}. "
                "Start the server (or fix its command or URL) before loading the agent, or pass "
                "cache=PATH to fall back on the last listing") from None
        log.warning("MCP server %s unreachable (%s): using the listing saved in %s",
                    server.name, why, cache)
        return saved
    if cache is not None:
        _save(Path(cache), server, listed)
    return listed


async def _list(server: MCPServerSpec) -> list[ListedTool]:
    async def go() -> list[ListedTool]:
        out: list[ListedTool] = []
        async with Client(server.transport(), read_timeout_seconds=OPEN_TIMEOUT) as client:
            cursor: str | None = None
            for _ in range(PAGE_CAP):
                page = await client.list_tools(cursor=cursor)
                out.extend(_listed(t) for t in page.tools)
                cursor = page.next_cursor
                if not cursor:
                    return out
        raise ToolDefinitionError(f"MCP server {server.name}: its tool listing did not end "
                                  f"after {PAGE_CAP} pages")
    return await asyncio.wait_for(go(), OPEN_TIMEOUT)


def _listed(tool: Any) -> ListedTool:
    ann = tool.annotations
    hints = Hints() if ann is None else Hints(ann.read_only_hint, ann.destructive_hint,
                                              ann.idempotent_hint)
    return ListedTool(tool.name, (tool.description or "").strip(), dict(tool.input_schema), hints)


def _save(path: Path, server: MCPServerSpec, tools: list[ListedTool]) -> None:
    body = {"server": server.key(), "name": server.name, "tools": [asdict(t) for t in tools]}
    tmp = path.with_name(path.name + ".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text(json.dumps(body, indent=1, sort_keys=True))
    os.replace(tmp, path)  # whole or not at all: a crash mid-write keeps the old listing


def _load(path: Path, server: MCPServerSpec) -> list[ListedTool] | None:
    try:
        body = json.loads(path.read_text())
        if body.get("server") != server.key():
            log.warning("MCP listing %s is for another server (not %s): not used", path,
                        server.name)
            return None
        return [ListedTool(t["name"], t["description"], t["input_schema"], Hints(**t["hints"]))
                for t in body["tools"]]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("MCP listing %s cannot be read (%s): not used", path, exc)
        return None
