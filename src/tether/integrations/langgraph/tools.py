"""LangChain tools as tether tools: every call gated, journaled and replayed.

:func:`wrap_tool` turns a LangChain ``BaseTool`` into a pair: the tether
:class:`~tether.tools.base.Tool` (made by :func:`tether.schema_tool` from the
JSON schema the model is offered, with the effect class the user declared) and
a LangChain tool of the same name, description and schema whose every call goes
through ``ctx.call`` of the tether step in progress. A ``ToolNode`` (or a node's
own code) runs the LangChain half as it would the original, so:

- the policy decides before anything runs (allow, deny, ask a person, defer);
- an effect's intent is durable before the tool runs, with an idempotency key;
- a re-run step gets a journaled call's recorded result without running it;
- a refused call, a tool's own failure and arguments that do not fit the schema
  come back to the model as the tool's error (``ToolMessage`` with status
  ``error``), and the run goes on;
- a tether signal (a pause, an approval to wait for) ends the step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from langchain_core.messages import ToolMessage
from langchain_core.tools import BaseTool, StructuredTool, ToolException

from tether.core.effect_classes import Effect
from tether.errors import ToolDefinitionError, ToolFailed, UsageError
from tether.integrations.langgraph.blocking import run_blocking
from tether.runtime.step_api import current_step
from tether.tools.base import Tool
from tether.tools.schema import schema_tool


@dataclass(frozen=True, slots=True)
class WrappedTool:
    """A LangChain tool and the tether tool its calls go through."""

    langchain: BaseTool
    """Give this to LangGraph (a ``ToolNode``, ``bind_tools``, a node's own code)."""
    tool: Tool
    """What tether's policy, journal and dashboard see."""
    original: BaseTool
    """The tool that really runs."""


def call_schema(tool: BaseTool) -> dict[str, Any]:
    """The JSON schema of the arguments the model sends to ``tool``."""
    schema = tool.tool_call_schema
    if isinstance(schema, dict):
        body = dict(schema)
    elif hasattr(schema, "model_json_schema"):
        body = schema.model_json_schema()
    else:  # a pydantic v1 model
        body = schema.schema()
    body.setdefault("type", "object")
    body.setdefault("properties", {})
    return body


def wrap_tool(tool: BaseTool, *, effect: Effect = "irreversible",
              idempotent: bool = False) -> WrappedTool:
    """Make ``tool`` a tether tool (``effect``: ``read``, ``reversible``, ``irreversible``).

    Raises:
        ToolDefinitionError: the tool takes arguments LangGraph injects (state, store,
            runtime, tool call id): tether cannot journal what it does not see.
    """
    schema = call_schema(tool)
    injected = sorted(set(_all_arguments(tool)) - set(schema.get("properties", {})))
    if injected:
        raise ToolDefinitionError(
            f"tool {tool.name}: takes injected arguments {injected} (InjectedState, "
            "InjectedStore, ToolRuntime...), which tether cannot journal; pass what it "
            "needs as ordinary arguments, or run it outside tether")

    async def run_original(**arguments: Any) -> Any:
        return _result(tool.name, await tool.ainvoke(arguments))

    t = schema_tool(tool.name, run_original, schema=schema, description=tool.description,
                    effect=effect, idempotent=idempotent)

    async def through_tether(**arguments: Any) -> Any:
        ctx = current_step()
        try:
            return await ctx.call(t, **arguments)
        except (ToolFailed, UsageError) as exc:  # refused, failed or malformed: the model is told
            raise ToolException(str(exc).removeprefix("error: ")) from None

    def blocking(**arguments: Any) -> Any:
        return run_blocking(through_tether(**arguments), f"tool {tool.name}")

    wrapped = StructuredTool(name=tool.name, description=tool.description, args_schema=schema,
                             func=blocking, coroutine=through_tether, handle_tool_error=True,
                             return_direct=tool.return_direct, tags=tool.tags,
                             metadata={**(tool.metadata or {}), "tether_effect": effect})
    return WrappedTool(wrapped, t, tool)


def _all_arguments(tool: BaseTool) -> dict[str, Any]:
    """Every argument of the tool, those LangGraph injects included."""
    full = tool.get_input_schema()
    if hasattr(full, "model_json_schema"):
        props: dict[str, Any] = full.model_json_schema().get("properties", {})
        return props
    return dict(tool.args)


def _result(name: str, out: Any) -> Any:
    """What a tool returned, as the JSON the journal keeps (and a replay returns)."""
    if isinstance(out, ToolMessage):
        out = out.content
    if out is None or isinstance(out, str | int | float | bool):
        return out
    try:
        return orjson.loads(orjson.dumps(out))
    except TypeError:
        raise ToolFailed(f"tool {name} returned {type(out).__name__}, which is not JSON; "
                         "return text or JSON (a Command is not supported under tether)") from None
