"""The model protocol: messages and tool specs in; content, tool calls and usage out.

Messages use the Chat Completions shape (``role``, ``content``, ``tool_calls``,
``tool_call_id``) because every OpenAI-compatible server speaks it and the
other adapters can translate from it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

Message = dict[str, Any]
"""A chat message: ``{"role": "user"|"assistant"|"system"|"tool", ...}``."""

ToolSpec = dict[str, Any]
"""A tool offered to the model: ``{"name", "description", "parameters"}`` (JSON schema)."""


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One tool call the model asked for."""

    id: str
    """The provider's id, echoed back in the tool result message."""
    name: str
    """Tool name."""
    arguments: str
    """Arguments exactly as the model sent them: a JSON string, possibly malformed."""


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens a call consumed."""

    input_tokens: int = 0
    output_tokens: int = 0


@dataclass(frozen=True, slots=True)
class ModelResponse:
    """What a model returned for one call."""

    content: str | None
    tool_calls: tuple[ToolCall, ...] = ()
    usage: Usage = field(default_factory=Usage)
    model: str = ""
    finish_reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Serialise for the journal."""
        return {
            "content": self.content,
            "tool_calls": [{"id": c.id, "name": c.name, "arguments": c.arguments}
                           for c in self.tool_calls],
            "usage": {"input_tokens": self.usage.input_tokens,
                      "output_tokens": self.usage.output_tokens},
            "model": self.model,
            "finish_reason": self.finish_reason,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ModelResponse:
        """Inverse of :meth:`to_json` (used on replay)."""
        u = d.get("usage") or {}
        return cls(
            content=d.get("content"),
            tool_calls=tuple(ToolCall(c["id"], c["name"], c["arguments"])
                             for c in d.get("tool_calls") or ()),
            usage=Usage(int(u.get("input_tokens", 0)), int(u.get("output_tokens", 0))),
            model=d.get("model", ""),
            finish_reason=d.get("finish_reason"),
        )

    def as_message(self) -> Message:
        """The assistant message to append to a conversation."""
        msg: Message = {"role": "assistant", "content": self.content}
        if self.tool_calls:
            msg["tool_calls"] = [
                {"id": c.id, "type": "function",
                 "function": {"name": c.name, "arguments": c.arguments}}
                for c in self.tool_calls
            ]
        return msg


@dataclass(frozen=True, slots=True)
class ForeignResponse:
    """A framework's model response, as an integration hands it to the journal
    (``StepContext.model_call``)."""

    response: ModelResponse
    """The response in tether's shape: what monitors, budgets, telemetry, reports and the
    dashboard read (its text, the tools it asked for, tokens, the model that answered)."""
    raw: Any
    """The framework's own response, serialised to JSON: what a replay hands back."""


ForeignCall = Callable[[], Awaitable[ForeignResponse]]
"""Makes a framework's model call and returns it (``StepContext.model_call``)."""


@runtime_checkable
class Model(Protocol):
    """Anything that can answer a chat. Adapters raise :class:`tether.errors.ModelError`
    when a call still fails after their retries; the runtime then pauses the run."""

    @property
    def name(self) -> str:
        """The model's name, used for the price table and the journal."""
        ...

    async def complete(self, messages: Sequence[Message], tools: Sequence[ToolSpec]) -> ModelResponse:
        """Answer ``messages``, optionally asking for calls of ``tools``."""
        ...
