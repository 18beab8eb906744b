"""MCP (Model Context Protocol) tool servers as tether tools.

Declare a server (:class:`StdioServer`: a subprocess over stdio; :class:`HttpServer`:
streamable HTTP), list its tools with :func:`mcp_tools` where the agent is defined, and
give them to a :class:`tether.Agent` or a :class:`tether.StepAgent`. Every call goes
through ``ctx.call``: the policy, write-ahead intents, approvals, redaction and replay
apply as to any tether tool. Every MCP tool is ``irreversible`` unless declared otherwise.

Example:
    >>> from tether.integrations.mcp import StdioServer, mcp_tools
    >>> notes = StdioServer("notes", "python", ["-m", "notes_server"])
    >>> tools = mcp_tools(notes, prefix="notes_", effects={"search": "read"})
    >>> agent = Agent("clerk", model=model, instructions="...", tools=tools)

See docs/integrations/mcp.md.
"""

try:
    import mcp as _mcp  # noqa: F401  (the guard: the extra is installed)
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("tether.integrations.mcp needs the mcp extra: "
                      "pip install 'tether[mcp]'") from exc

from tether.integrations.mcp.calls import (
    IDEMPOTENCY_META_KEY,
    CallRefused,
    NoAnswer,
    ServerUnreachable,
    ToolReportedError,
)
from tether.integrations.mcp.listing import ListedTool, list_tools
from tether.integrations.mcp.servers import DEFAULT_TIMEOUT, HttpServer, MCPServerSpec, StdioServer
from tether.integrations.mcp.sessions import close_sessions
from tether.integrations.mcp.toolset import mcp_tools

__all__ = [
    "DEFAULT_TIMEOUT",
    "IDEMPOTENCY_META_KEY",
    "CallRefused",
    "HttpServer",
    "ListedTool",
    "MCPServerSpec",
    "NoAnswer",
    "ServerUnreachable",
    "StdioServer",
    "ToolReportedError",
    "close_sessions",
    "list_tools",
    "mcp_tools",
]
