"""The SDK's function tools, each run through tether (``ctx.call`` on a ``schema_tool``).

For every :class:`agents.FunctionTool` two things are made:

- a tether :class:`~tether.tools.base.Tool` from the tool's ``params_json_schema``, with
  the effect class the user declared (``irreversible`` when undeclared), so the policy,
  write-ahead intents, approvals, idempotency keys and replay apply to every call;
- a copy of the SDK tool whose ``on_invoke_tool`` sends the model's call through that
  tether tool. What the model sent that is not JSON, or does not fit the schema, is
  journaled as a rejected call and the model is told, as is a call a policy or a person
  refused; a tool that raised is told with the SDK tool's own failure formatter.

tether's signals (an approval to wait for, a pause, a stop, a budget spent) are
``BaseException``\\ s: the SDK's ``except Exception`` handlers let them pass, and they
leave ``Runner.run`` untouched. Calls of one turn run one at a time, in the order they
reach tether, and once one raised a signal the turn's later calls raise it too without
running: nothing acts after the run was told to stop acting.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

import orjson
from agents.exceptions import ToolTimeoutError
from agents.tool import (
    FunctionTool,
    invoke_function_tool,
    resolve_function_tool_failure_error_function,
    set_function_tool_failure_error_function,
)
from agents.tool_context import ToolContext as SDKToolContext

from tether.core.effect_classes import Effect
from tether.errors import EffectInDoubt, ToolDenied, ToolFailed, UsageError
from tether.runtime.agent import json_loads_object
from tether.runtime.step_api import current_step
from tether.tools.base import Tool
from tether.tools.schema import schema_tool

from .model import jsonable
from .turn import current_turn

_SDK_CONTEXT: ContextVar[SDKToolContext[Any]] = ContextVar("tether_openai_agents_tool_context")


def wrap_tool(ft: FunctionTool, effect: Effect, idempotent: bool) -> tuple[FunctionTool, Tool]:
    """The SDK tool that runs through tether, and the tether tool it runs through."""
    if ft.needs_approval is not False and effect != "irreversible":
        raise UsageError(f"tool {ft.name} asks the SDK for approval (needs_approval) but is "
                         f"declared {effect!r}: under tether approvals come from the policy; "
                         "declare it irreversible or drop needs_approval")
    raw = copy.copy(ft)  # the copy raises what the tool raised, so tether sees it fail
    set_function_tool_failure_error_function(raw, None)
    if effect != "read" and raw.timeout_seconds is not None:
        raw.timeout_behavior = "raise_exception"  # an effect cut off is in doubt (_runner)
    tool = schema_tool(ft.name, _runner(raw), schema=ft.params_json_schema,
                       description=ft.description, effect=effect, idempotent=idempotent)
    wrapped = copy.copy(ft)
    wrapped.on_invoke_tool = _invoker(ft, tool)
    wrapped.needs_approval = False  # tether's policy decides, journaled
    wrapped.timeout_seconds = None  # applied inside the tether call, where tether sees it
    return wrapped, tool


def _runner(raw: FunctionTool) -> Callable[..., Awaitable[Any]]:
    async def run(**arguments: Any) -> Any:
        # The SDK's own invocation: its argument parsing, its timeout; the SDK's context
        # of this call is the one the invoker set (a replay never gets here).
        try:
            out = await invoke_function_tool(function_tool=raw, context=_SDK_CONTEXT.get(),
                                             arguments=orjson.dumps(arguments).decode())
        except ToolTimeoutError as exc:  # raised for effects only (wrap_tool): it may have acted
            raise EffectInDoubt(f"tool {raw.name} was cut off by its timeout after "
                                f"{exc.timeout_seconds} s: it may or may not have acted") from exc
        try:
            return jsonable(out)  # structured outputs (ToolOutputText...) as their dicts
        except TypeError:
            return str(out)  # what the SDK would tell the model of any other object
    run.__name__ = raw.name
    return run


def _invoker(ft: FunctionTool, tool: Tool) -> Callable[[SDKToolContext[Any], str], Awaitable[Any]]:
    async def invoke(sdk_ctx: SDKToolContext[Any], arguments: str) -> Any:
        ctx = current_step()
        turn = current_turn()
        if turn is None:
            raise UsageError(f"tool {ft.name} was called outside a turn tether runs; run the "
                             "agent through TetherAgent")
        try:
            args = tool.validate(json_loads_object(arguments))
        except ValueError as exc:  # not JSON: journaled, the model told, nothing ran
            return ctx.reject(ft.name, arguments, str(exc))
        except UsageError as exc:  # JSON of the wrong shape: likewise
            return ctx.reject(ft.name, arguments, str(exc).removeprefix(f"tool {ft.name}: "))
        token = _SDK_CONTEXT.set(sdk_ctx)
        try:
            return await ctx.call(tool, **args)
        except ToolDenied as exc:  # a policy or a person said no: the model is told why
            return f"error: {exc}"
        except ToolFailed as exc:
            return await _told_failure(ft, sdk_ctx, exc)
        finally:
            _SDK_CONTEXT.reset(token)
    return invoke


async def _told_failure(ft: FunctionTool, sdk_ctx: SDKToolContext[Any], exc: ToolFailed) -> Any:
    """A tool that raised, told as the SDK tool would tell it (its failure formatter); a
    tool built to fail the run on error (``failure_error_function=None``) fails it."""
    formatter = resolve_function_tool_failure_error_function(ft, sdk_ctx)
    if formatter is None:
        raise exc
    said = formatter(sdk_ctx, exc)
    return await said if inspect.isawaitable(said) else said
