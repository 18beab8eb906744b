"""A PydanticAI toolset whose every call goes through tether.

:class:`TetherToolset` wraps the agent's toolset (PydanticAI's ``WrapperToolset``
seam): a call becomes ``await ctx.call(tool, **arguments)`` on a tether tool made
from the PydanticAI tool's JSON schema (:func:`tether.schema_tool`), so the policy,
approvals, write-ahead effect intents, idempotency keys, redaction and replay all
apply. A call tether refuses or that fails is told to the model as PydanticAI's own
tool failure (``pydantic_ai.exceptions.ToolFailed``); tether's signals propagate.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic_ai import exceptions as pai
from pydantic_ai.tools import RunContext, ToolDefinition
from pydantic_ai.toolsets import AbstractToolset, ToolsetTool, WrapperToolset
from pydantic_core import to_jsonable_python

from tether.core.effect_classes import Effect
from tether.errors import EffectInDoubt, ToolFailed, UsageError
from tether.runtime.step_api import current_step
from tether.tools.base import Tool
from tether.tools.schema import schema_tool


@dataclass(frozen=True, slots=True)
class _Pending:
    """The PydanticAI call a tether tool runs: set around ``ctx.call`` so the tool's body
    (run by tether after the policy and the intent) reaches the wrapped toolset."""

    toolset: AbstractToolset[Any]
    ctx: RunContext[Any]
    tool: ToolsetTool[Any]
    args: dict[str, Any]
    args_json: Any


_PENDING: contextvars.ContextVar[_Pending] = contextvars.ContextVar("tether_pydantic_ai_call")


def _body(name: str, effect: Effect) -> Callable[..., Any]:
    async def run(**arguments: Any) -> Any:
        try:
            p = _PENDING.get()
        except LookupError:
            raise UsageError(f"tool {name} of a PydanticAI agent runs only inside that "
                             "agent's tool call, in a step run by tether") from None
        args = p.args
        if arguments != p.args_json:  # an approver edited the arguments: PydanticAI checks them
            args = p.tool.args_validator.validate_python(arguments)
        try:
            result = await p.toolset.call_tool(name, args, p.ctx, p.tool)
        except pai.ModelRetry as exc:
            if effect != "read" and isinstance(exc.__context__, TimeoutError):
                # PydanticAI's tool timeout cut the effect off: it may have acted. Told to
                # the model as a retry, it could be done twice; in doubt, a person settles it.
                raise EffectInDoubt(f"tool {name} was cut off by its timeout ({exc.message}): "
                                    "it may or may not have acted") from exc
            raise
        # The model sees what the journal keeps, live as on replay.
        return to_jsonable_python(result, fallback=str)
    run.__name__ = name
    return run


def tether_tool(d: ToolDefinition, effects: Mapping[str, Effect], idempotent: frozenset[str]) -> Tool:
    """The tether tool for a PydanticAI tool definition; undeclared tools are irreversible."""
    effect = effects.get(d.name, "irreversible")
    return schema_tool(d.name, _body(d.name, effect), schema=d.parameters_json_schema,
                       description=d.description or "", effect=effect,
                       idempotent=d.name in idempotent)


@dataclass
class TetherToolset(WrapperToolset[Any]):
    """Wraps a PydanticAI toolset so each call is a tether tool call.

    Args:
        wrapped: the toolset to wrap (the agent's assembled toolset).
        tools: the tether tools known when the agent was built, by name; a tool a
            toolset lists only at run time (an MCP server's) gets one on first call.
        effects: effect class by tool name (undeclared: ``irreversible``).
        idempotent: names of tools safe to retry with the same idempotency key.
    """

    tools: Mapping[str, Tool] = field(default_factory=dict)
    effects: Mapping[str, Effect] = field(default_factory=dict)
    idempotent: frozenset[str] = frozenset()
    offered: Callable[[Collection[str]], None] | None = None
    """Told the names of the tools listed (a run's first step checks its declarations)."""

    async def get_tools(self, ctx: RunContext[Any]) -> dict[str, ToolsetTool[Any]]:
        tools = await super().get_tools(ctx)
        if self.offered is not None:
            self.offered(tools.keys())
        return tools

    async def call_tool(self, name: str, tool_args: dict[str, Any], ctx: RunContext[Any],
                        tool: ToolsetTool[Any]) -> Any:
        step = current_step()
        t = self.tools.get(name) or tether_tool(tool.tool_def, self.effects, self.idempotent)
        args_json = to_jsonable_python(tool_args, fallback=str)
        token = _PENDING.set(_Pending(self.wrapped, ctx, tool, tool_args, args_json))
        try:
            return await step.call(t, **args_json)
        except ToolFailed as exc:  # refused by the policy or a person, or the tool raised
            raise pai.ToolFailed(str(exc)) from None
        except UsageError as exc:  # tether's schema check refused what PydanticAI accepted
            raise pai.ModelRetry(str(exc)) from None
        finally:
            _PENDING.reset(token)
