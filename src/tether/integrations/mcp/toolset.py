"""An MCP server's tools as tether tools."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

from tether.errors import ToolDefinitionError
from tether.integrations.mcp.calls import caller
from tether.integrations.mcp.classes import check_declarations, classify
from tether.integrations.mcp.listing import ListedTool, list_tools
from tether.integrations.mcp.servers import HttpServer, MCPServerSpec, StdioServer
from tether.tools import Tool, schema_tool


def mcp_tools(server: MCPServerSpec, *, prefix: str = "",
              effects: Mapping[str, str] | None = None, idempotent: Collection[str] = (),
              trust_annotations: bool = False, only: Collection[str] | None = None,
              cache: str | Path | None = None,
              listing: Sequence[ListedTool] | None = None) -> tuple[Tool, ...]:
    # long: the docstring is the reference for every option; the body is a dozen lines
    """The tools of an MCP server, as tether tools for an ``Agent`` or a ``StepAgent``.

    The server is reached now, to list its tools (names, descriptions, argument schemas):
    they define the agent, so build the toolset where the agent is defined (the module a
    worker loads by ``module:attr``). Calls are made later, on a session the worker's loop
    opens on the first call.

    Every tool is ``irreversible`` (waits for an allow rule or a person's approval) unless
    declared otherwise: the server's annotations are hints it gives about itself, used only
    with ``trust_annotations=True``.

    Args:
        server: a :class:`StdioServer` or an :class:`HttpServer`.
        prefix: put before every tool name (``"fs_"``: ``read_file`` -> ``fs_read_file``),
            so two servers' tools cannot clash.
        effects: effect class per tool, by the server's tool name: ``"read"`` or
            ``"irreversible"``.
        idempotent: tools safe to repeat with the same idempotency key (sent in the
            request's ``_meta`` as ``tether/idempotency_key``).
        trust_annotations: let the server's ``readOnlyHint`` make a tool ``read`` and its
            ``idempotentHint`` make it idempotent (what ``effects``/``idempotent`` say wins).
        only: offer just these tools (by the server's names); the rest are left out.
        cache: a JSON file that keeps the last listing, used when the server cannot be
            reached at build time (a warning is logged).
        listing: the server's tools as :func:`list_tools` returned them, to build several
            toolsets from one listing (the server is not reached then).

    Raises:
        ToolDefinitionError: the server cannot be reached (and no cached listing), a
            declaration names a tool the server lacks, or a tool's schema is broken;
            the message names the server.

    Example:
        >>> files = StdioServer("files", "python", ["-m", "my_files_server"])
        >>> tools = mcp_tools(files, prefix="files_", effects={"read_file": "read"})
        >>> agent = Agent("clerk", model=model, instructions="...", tools=tools)
    """
    if not isinstance(server, StdioServer | HttpServer):  # a URL or a command line as text
        raise ToolDefinitionError(f"mcp_tools takes a StdioServer or an HttpServer, not "
                                  f"{type(server).__name__} {server!r:.80}; e.g. "
                                  "mcp_tools(HttpServer(\"name\", \"https://host/mcp\"))")
    effects = dict(effects or {})
    listed = list(listing) if listing is not None else list_tools(server, cache=cache)
    names = [t.name for t in listed]
    check_declarations(server.name, names, effects, {*idempotent, *(only or ())})
    chosen = [t for t in listed if only is None or t.name in only]
    tools = tuple(_tool(server, t, prefix, effects, idempotent, trust_annotations)
                  for t in chosen)
    seen = [t.name for t in tools]
    if len(set(seen)) != len(seen):
        raise ToolDefinitionError(f"MCP server {server.name} lists a tool name twice: "
                                  f"{sorted(n for n in set(seen) if seen.count(n) > 1)}")
    return tools


def _tool(server: MCPServerSpec, listed: ListedTool, prefix: str, effects: Mapping[str, str],
          idempotent: Collection[str], trust: bool) -> Tool:
    c = classify(listed.name, listed.hints, effects=effects, idempotent=idempotent,
                 trust_annotations=trust)
    local = f"{prefix}{listed.name}"
    fn = caller(server, listed.name, local, effect=c.effect, idempotent=c.idempotent)
    schema = dict(listed.input_schema) or {"type": "object"}
    try:
        return schema_tool(local, fn, schema=schema, description=listed.description,
                           effect=c.effect, idempotent=c.idempotent)
    except ToolDefinitionError as exc:
        raise ToolDefinitionError(f"MCP server {server.name}: {exc}") from None
