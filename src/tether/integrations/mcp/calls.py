"""One MCP tool call, as the function of a tether tool: what the server said, mapped onto
tether's outcomes.

- The server answered: its result is the tool's result; an ``isError`` result, or a
  protocol error (unknown tool, invalid parameters), is :class:`~tether.errors.ToolFailed`
  (the model is told; an effect is journaled ``effect.failed``: the server said it did not
  do it).
- The server could not be reached (launch failed, connection refused): ToolFailed too,
  naming the server and the tool: nothing was sent, so nothing happened.
- The request left and no answer came (the server died, the connection dropped, the call
  timed out): for a read tool, ToolFailed; for an effect, the outcome is unknown, so
  :class:`~tether.errors.EffectInDoubt`: tether journals ``effect.in_doubt`` and pauses the
  run for a person (``tether resolve``), as after a crash. An idempotent tool is first sent
  once more, with the same idempotency key, on a fresh session.

The idempotency key of the effect (:func:`tether.current`) goes to the server in the
request's ``_meta`` as ``tether/idempotency_key``, so an idempotent server can recognise a
repeat and do the work once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import mcp_types as types
from mcp import MCPError

from tether.errors import EffectInDoubt, ToolFailed, UsageError
from tether.integrations.mcp import sessions
from tether.integrations.mcp.results import content_text, tool_result
from tether.integrations.mcp.servers import MCPServerSpec
from tether.tools import current

IDEMPOTENCY_META_KEY = "tether/idempotency_key"
"""The ``_meta`` key that carries tether's idempotency key to the server."""
_LOST = (types.CONNECTION_CLOSED, types.REQUEST_TIMEOUT)


class _Lost(Exception):
    """The request was (or may have been) sent and no answer came."""


class ServerUnreachable(ToolFailed):
    """The MCP server could not be launched or reached: nothing was sent to it."""


class ToolReportedError(ToolFailed):
    """The MCP server ran the tool and it reported an error (``isError``)."""


class CallRefused(ToolFailed):
    """The MCP server refused the call with a protocol error (unknown tool, bad params)."""


class NoAnswer(ToolFailed):
    """A read tool's request got no answer (the server died, the connection dropped)."""


def caller(server: MCPServerSpec, remote: str, local: str, *, effect: str,
           idempotent: bool) -> Callable[..., Awaitable[Any]]:
    """The async function a tether tool runs: call ``remote`` on ``server``."""
    async def call_mcp_tool(**arguments: Any) -> Any:
        meta = _meta()
        try:
            return await _call(server, remote, local, arguments, meta)
        except _Lost as first:
            why = str(first)
        if effect != "read" and idempotent and meta:
            # The session is not closed here: other runs' calls may be in flight on it (a
            # timeout is one slow call, not a dead server). The probe before the next call
            # finds a dead one, and a fresh session is opened for the repeat.
            try:  # the same key: a server that dedupes acts once
                return await _call(server, remote, local, arguments, meta)
            except _Lost as again:
                why = f"{why}; sent again with the same key: {again}"
            except ServerUnreachable as unsent:  # the first attempt's outcome still unknown
                why = f"{why}; sent again: {unsent}"
        raise _outcome(server, local, effect, why)
    call_mcp_tool.__qualname__ = call_mcp_tool.__name__ = f"mcp_{server.name}_{remote}"
    return call_mcp_tool


async def _call(server: MCPServerSpec, remote: str, local: str, arguments: dict[str, Any],
                meta: dict[str, Any] | None) -> Any:
    """One attempt; ``local`` (the name the model knows) names the tool in messages."""
    try:
        client = await sessions.session_for(server)
    except sessions.Unreachable as exc:
        raise ServerUnreachable(f"MCP server {server.name} ({server.describe()}) cannot be "
                                f"reached, so tool {local} was not called: {exc}") from None
    try:
        result = await client.call_tool(remote, arguments, read_timeout_seconds=server.timeout,
                                        meta=meta)  # type: ignore[arg-type]
    except MCPError as exc:
        if exc.code in _LOST:
            raise _Lost(f"{exc.message} (MCP error {exc.code})") from None
        raise CallRefused(f"MCP server {server.name} refused the call of {local}: "
                          f"{exc.message} (MCP error {exc.code})") from None
    except Exception as exc:  # the transport broke under the call: it may have run
        raise _Lost(sessions.describe_error(exc)) from None
    if result.is_error:
        raise ToolReportedError(f"MCP server {server.name} says: "
                                f"{content_text(result.content) or '(no message)'}")
    return tool_result(result)


def _outcome(server: MCPServerSpec, tool: str, effect: str, lost: str) -> ToolFailed:
    where = f"MCP server {server.name} ({server.describe()})"
    if effect == "read":
        return NoAnswer(f"{where} gave no answer to the call of {tool}: {lost}")
    return EffectInDoubt(f"{where} gave no answer to the call of {tool} after it was sent "
                         f"({lost}): it may or may not have acted")


def _meta() -> dict[str, Any] | None:
    try:
        key = current().idempotency_key
    except UsageError:  # called directly, outside tether (a test, a script): no key
        return None
    return {IDEMPOTENCY_META_KEY: key} if key else None
