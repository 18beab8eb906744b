"""PydanticAI's messages as tether journals them: the request a model call's fingerprint
covers, the response in tether's chat shape, and PydanticAI's own JSON for both.

PydanticAI's types are serialised only through its own type adapter
(``ModelMessagesTypeAdapter``), so a replay deserialises exactly what the live call
returned: the same parts, ids, usage and provider details.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic_ai.messages import (
    ModelMessage,
    ModelMessagesTypeAdapter,
    TextPart,
    ToolCallPart,
)
from pydantic_ai.messages import ModelResponse as PydanticResponse
from pydantic_ai.models import ModelRequestParameters
from pydantic_ai.settings import ModelSettings
from pydantic_ai.tools import ToolDefinition
from pydantic_core import to_jsonable_python

from tether.models.base import ModelResponse, ToolCall, Usage

# Fields PydanticAI fills afresh each time a message is built (the clock, the run's ids): a
# re-run step builds its request again, so the fingerprint must not cover them. The
# conversation itself (parts, instructions, tool calls and results) is covered whole.
_VOLATILE = frozenset({"timestamp", "run_id", "conversation_id"})


def dump_messages(messages: Sequence[ModelMessage]) -> list[dict[str, Any]]:
    """Messages as JSON, by PydanticAI's own adapter (what a run's state keeps)."""
    out: list[dict[str, Any]] = ModelMessagesTypeAdapter.dump_python(list(messages), mode="json")
    return out


def load_messages(data: Sequence[Any]) -> list[ModelMessage]:
    """Inverse of :func:`dump_messages`."""
    return ModelMessagesTypeAdapter.validate_python(list(data))


def dump_response(response: PydanticResponse) -> dict[str, Any]:
    """A model response as JSON (the ``raw`` a replay hands back)."""
    return dump_messages([response])[0]


def load_response(raw: Any) -> PydanticResponse:
    """Inverse of :func:`dump_response`; refuses anything that is not a model response."""
    (message,) = load_messages([raw])
    if not isinstance(message, PydanticResponse):
        raise TypeError(f"a journaled model call holds a {type(message).__name__}, "
                        "not a PydanticAI ModelResponse")
    return message


def _steady(message: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in message.items() if k not in _VOLATILE}
    out["parts"] = [{k: v for k, v in p.items() if k not in _VOLATILE}
                    for p in message.get("parts") or ()]
    return out


def _named(value: Any) -> str:
    # A value JSON cannot hold is fingerprinted by its type: a repr may carry a memory
    # address, which would differ in the worker that replays the step.
    return type(value).__qualname__


def _tool(d: ToolDefinition) -> dict[str, Any]:
    return {"name": d.name, "description": d.description, "kind": d.kind,
            "parameters": d.parameters_json_schema, "strict": d.strict}


def request_json(messages: Sequence[ModelMessage], settings: ModelSettings | None,
                 params: ModelRequestParameters) -> dict[str, Any]:
    """What a model call's fingerprint covers: the conversation (without clock readings and
    run ids), the model settings, the tools offered and how output is asked for."""
    return {
        "messages": [_steady(m) for m in dump_messages(messages)],
        "settings": to_jsonable_python(settings or {}, fallback=_named),
        "tools": [_tool(d) for d in params.function_tools],
        "output_tools": [_tool(d) for d in params.output_tools],
        "output_object": to_jsonable_python(params.output_object, fallback=_named),
        "instructions": to_jsonable_python(params.instruction_parts, fallback=_named),
        "output_mode": params.output_mode,
        "allow_text_output": params.allow_text_output,
    }


def raw_arguments(part: ToolCallPart) -> str:
    """A tool call's arguments as the model sent them (malformed JSON stays as it came)."""
    return part.args if isinstance(part.args, str) else part.args_as_json_str()


def summary(response: PydanticResponse) -> ModelResponse:
    """The response in tether's chat shape: its text, the tools it asked for (arguments as
    JSON text), tokens, the model that answered and why it stopped."""
    text = "".join(p.content for p in response.parts if isinstance(p, TextPart))
    calls = tuple(ToolCall(p.tool_call_id, p.tool_name, raw_arguments(p))
                  for p in response.parts if isinstance(p, ToolCallPart))
    usage = Usage(response.usage.input_tokens, response.usage.output_tokens)
    return ModelResponse(text or None, calls, usage, response.model_name or "",
                         response.finish_reason)
