"""A deterministic model for tests and the demo.

Its answer depends only on the conversation it is given, never on hidden
counters, so a step re-run after a crash gets the same answer it got before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from tether.models.base import Message, ModelResponse, ToolSpec, Usage

Script = Callable[[Sequence[Message], Sequence[ToolSpec]], ModelResponse]


def _estimate_tokens(messages: Sequence[Message]) -> int:
    # About four characters a token: enough for budgets and the demo's cost figures.
    return sum(len(str(m.get("content") or "")) for m in messages) // 4 + 4 * len(messages)


class ScriptedModel:
    """Answers from a list (by the number of assistant turns so far) or a function.

    Example:
        >>> m = ScriptedModel([ModelResponse(content="done")])

    Args:
        script: responses, the k-th answering a conversation with k assistant
            messages (the last one repeats), or a function of (messages, tools).
        name: model name reported for pricing.
        delay: seconds to wait per call (``tether demo --pace``).
    """

    def __init__(self, script: Sequence[ModelResponse] | Script, *, name: str = "scripted",
                 delay: float = 0.0) -> None:
        if not callable(script) and not script:
            raise ValueError("ScriptedModel needs at least one response")
        self._script = script
        self._name = name
        self.delay = delay

    @property
    def name(self) -> str:
        return self._name

    async def complete(self, messages: Sequence[Message], tools: Sequence[ToolSpec]) -> ModelResponse:
        if self.delay:
            await asyncio.sleep(self.delay)
        if callable(self._script):
            r = self._script(messages, tools)
        else:
            turns = sum(1 for m in messages if m.get("role") == "assistant")
            r = self._script[min(turns, len(self._script) - 1)]
        if r.usage == Usage():
            out = len(r.content or "") // 4 + sum(len(c.arguments) for c in r.tool_calls) // 4
            r = ModelResponse(r.content, r.tool_calls, Usage(_estimate_tokens(messages), out + 1),
                              r.model or self._name, r.finish_reason)
        elif not r.model:
            r = ModelResponse(r.content, r.tool_calls, r.usage, self._name, r.finish_reason)
        return r
