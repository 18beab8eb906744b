"""Every model call the Agents SDK makes, through tether's journal (``ctx.model_call``).

:class:`TetherModel` wraps the SDK :class:`agents.Model` an agent would have used. Its
``get_response`` describes the request as JSON (what the journal's fingerprint covers:
instructions, input items, tool and handoff definitions, output schema, model settings),
makes the real call inside ``ctx.model_call``, and hands the SDK back a
:class:`agents.ModelResponse` rebuilt from the journaled JSON: live and on replay the SDK
sees the same thing, so a replayed turn goes exactly as the first one did.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import openai
import orjson
from agents.exceptions import ModelBehaviorError
from agents.items import ModelResponse as SDKResponse
from agents.items import TResponseInputItem, TResponseStreamEvent
from agents.models.interface import Model, ModelTracing
from agents.tool import FunctionTool, Tool
from agents.usage import deserialize_usage, serialize_usage
from openai.types.responses import (
    ResponseFunctionToolCall,
    ResponseOutputItem,
    ResponseOutputMessage,
    ResponseOutputRefusal,
    ResponseOutputText,
)
from pydantic import BaseModel, TypeAdapter

from tether.errors import ModelError, UsageError
from tether.models.base import ForeignResponse, ToolCall, Usage
from tether.models.base import ModelResponse as TetherResponse
from tether.models.openai import is_retryable, provider_message
from tether.runtime.step_api import current_step

from .turn import current_turn

if TYPE_CHECKING:
    from agents.agent_output import AgentOutputSchemaBase
    from agents.handoffs import Handoff
    from agents.model_settings import ModelSettings
    from openai.types.responses.response_prompt_param import ResponsePromptParam

_OUTPUT_ITEM: TypeAdapter[Any] = TypeAdapter(ResponseOutputItem)


class TetherModel(Model):
    """An SDK model whose calls are journaled, gated, budgeted and replayed by tether.

    Args:
        inner: the SDK model that makes the real call, or a function making it on first
            use (a model named by a string is resolved through a provider only when a
            live call needs it; a replay needs no client and no key).
        name: the model's name, for prices, budgets and the policy's model rules.

    Raises (from ``get_response``):
        UsageError: called outside a step tether runs (``Runner.run`` on a wrapped agent
            directly); run it through :class:`~tether.integrations.openai_agents.TetherAgent`.
    """

    def __init__(self, inner: Model | Callable[[], Model], name: str) -> None:
        self._inner = inner if isinstance(inner, Model) else None
        self._make = None if isinstance(inner, Model) else inner
        self.name = name

    def _model(self) -> Model:
        if self._inner is None:
            assert self._make is not None
            self._inner = self._make()
        return self._inner

    async def get_response(
        self, system_instructions: str | None, input: str | list[TResponseInputItem],
        model_settings: ModelSettings, tools: list[Tool], output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff], tracing: ModelTracing, *, previous_response_id: str | None,
        conversation_id: str | None, prompt: ResponsePromptParam | None,
    ) -> SDKResponse:
        """The SDK's model call, through ``ctx.model_call``: live once, then from the journal."""
        ctx = current_step()
        request = describe_request(system_instructions, input, model_settings, tools,
                                   output_schema, handoffs, previous_response_id,
                                   conversation_id, prompt)

        async def call() -> ForeignResponse:
            try:
                got = await self._model().get_response(
                    system_instructions, input, model_settings, tools, output_schema, handoffs,
                    tracing, previous_response_id=previous_response_id,
                    conversation_id=conversation_id, prompt=prompt)
            except openai.APIError as exc:  # after the client's own retries
                raise ModelError(f"model {self.name}: {provider_message(exc)}",
                                 provider_message=provider_message(exc),
                                 retryable=is_retryable(exc)) from exc
            except (json.JSONDecodeError, ModelBehaviorError) as exc:
                # The provider answered with something that is not a response (an HTML
                # error page, a body with no choices): its failure, not the agent's.
                said = f"{type(exc).__name__}: {exc}"
                raise ModelError(f"model {self.name}: the provider's answer is not a model "
                                 f"response ({said})", provider_message=said) from exc
            return ForeignResponse(summarise(got, self.name), dump_response(got))

        got = load_response(await ctx.model_call(self.name, request, call))
        turn = current_turn()
        if turn is not None:  # a call of a tool that does not exist is journaled with these
            turn.calls.update((item.call_id, item.arguments) for item in got.output
                              if isinstance(item, ResponseFunctionToolCall))
        return got

    def stream_response(
        self, system_instructions: str | None, input: str | list[TResponseInputItem],
        model_settings: ModelSettings, tools: list[Tool], output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff], tracing: ModelTracing, *, previous_response_id: str | None,
        conversation_id: str | None, prompt: ResponsePromptParam | None,
    ) -> AsyncIterator[TResponseStreamEvent]:
        """Not offered: a journaled turn is one whole response (use ``Runner.run``)."""
        raise UsageError(f"model {self.name}: streaming (Runner.run_streamed) is not supported "
                         "under tether; a turn is journaled as one whole response")

    async def _cleanup_on_run_end(self, owner: object) -> None:
        # The SDK's hook for run-scoped resources (a Responses websocket): the inner's own.
        if self._inner is not None:
            await self._inner._cleanup_on_run_end(owner)

    async def close(self) -> None:
        """Close the inner model, if one was made."""
        if self._inner is not None:
            await self._inner.close()


def describe_request(instructions: str | None, input: str | list[TResponseInputItem],
                     settings: ModelSettings, tools: list[Tool],
                     output_schema: AgentOutputSchemaBase | None, handoffs: list[Handoff],
                     previous_response_id: str | None, conversation_id: str | None,
                     prompt: ResponsePromptParam | None) -> dict[str, Any]:
    """The request as JSON: what a replayed turn must ask again, word for word."""
    schema = None
    if output_schema is not None and not output_schema.is_plain_text():
        schema = {"name": output_schema.name(), "schema": output_schema.json_schema(),
                  "strict": output_schema.is_strict_json_schema()}
    return {"instructions": instructions, "input": jsonable(input),
            "settings": settings.to_json_dict(), "tools": [tool_definition(t) for t in tools],
            "handoffs": [{"name": h.tool_name, "description": h.tool_description,
                          "parameters": h.input_json_schema, "strict": h.strict_json_schema}
                         for h in handoffs],
            "output_schema": schema, "previous_response_id": previous_response_id,
            "conversation_id": conversation_id, "prompt": jsonable(prompt)}


def tool_definition(t: Tool) -> dict[str, Any]:
    """What the model is offered for one tool."""
    if isinstance(t, FunctionTool):
        return {"type": "function", "name": t.name, "description": t.description,
                "parameters": t.params_json_schema, "strict": t.strict_json_schema}
    return {"type": type(t).__name__, "name": getattr(t, "name", None)}


def dump_response(resp: SDKResponse) -> dict[str, Any]:
    """The SDK's response as JSON, enough to rebuild it exactly (:func:`load_response`)."""
    return {"output": [item.model_dump(mode="json", exclude_unset=True) for item in resp.output],
            "usage": serialize_usage(resp.usage), "response_id": resp.response_id,
            "request_id": resp.request_id, "raw_usage": resp.raw_usage}


def load_response(raw: dict[str, Any]) -> SDKResponse:
    """Rebuild the SDK's response from its journaled JSON."""
    return SDKResponse(output=[_OUTPUT_ITEM.validate_python(item) for item in raw["output"]],
                       usage=deserialize_usage(raw["usage"]), response_id=raw.get("response_id"),
                       request_id=raw.get("request_id"), raw_usage=raw.get("raw_usage"))


def summarise(resp: SDKResponse, name: str) -> TetherResponse:
    """The response in tether's shape, which monitors, telemetry and the dashboard read:
    its text, its function calls (handoffs are function calls too) and its token usage."""
    texts: list[str] = []
    calls: list[ToolCall] = []
    for item in resp.output:
        if isinstance(item, ResponseOutputMessage):
            for part in item.content:
                if isinstance(part, ResponseOutputText):
                    texts.append(part.text)
                elif isinstance(part, ResponseOutputRefusal):
                    texts.append(part.refusal)
        elif isinstance(item, ResponseFunctionToolCall):
            calls.append(ToolCall(item.call_id, item.name, item.arguments))
    return TetherResponse("".join(texts) or None, tuple(calls),
                          Usage(resp.usage.input_tokens, resp.usage.output_tokens), name,
                          "tool_calls" if calls else "stop")


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON (the SDK mixes dicts with pydantic objects in its items)."""
    return orjson.loads(orjson.dumps(value, default=_plain))


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_unset=True)
    raise TypeError(f"{type(value).__name__} is not JSON")
