"""Any LangChain chat model, its calls made through tether's journal.

:class:`TetherChatModel` wraps a ``BaseChatModel`` (``ChatOpenAI``, ``ChatAnthropic``,
a fake one in tests) and is one itself, so a LangGraph node uses it as it would the
model it wraps (``bind_tools``, ``ainvoke``, ``with_structured_output``). Each
generation goes through ``ctx.model_call`` of the tether step in progress:

- the request the fingerprint covers: the messages (``messages_to_dict``, without
  their random ids), the bound tools and call options, and the model's parameters;
- the call: the wrapped model's own ``agenerate``, its provider errors mapped to
  :class:`~tether.errors.ModelError` (the run pauses, naming the model);
- ``raw``: the generation serialised (LangChain's ``dumpd`` of the ``AIMessage``,
  its ``generation_info`` and ``llm_output``), which a replay turns back into the
  same ``AIMessage`` without calling the model;
- ``response`` in tether's shape (text, tool calls, token usage) for budgets,
  prices, monitors, telemetry and the dashboard.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.load import dumpd
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from pydantic import ConfigDict

from tether.errors import ModelError, Signal
from tether.integrations.langgraph.blocking import run_blocking
from tether.integrations.langgraph.codec import message_dict, plain, revive
from tether.models.base import ForeignResponse, ModelResponse, ToolCall, Usage
from tether.runtime.step_api import current_step

_RETRYABLE = frozenset({408, 409, 429, 500, 502, 503, 504})


class TetherChatModel(BaseChatModel):
    """A LangChain chat model whose calls tether journals, gates, prices and replays.

    Args:
        inner: the chat model that really answers.
        model_name: the name tether prices, budgets and the policy's model rules use;
            the wrapped model's ``model_name`` (or ``model``) by default.

    Example:
        >>> llm = TetherChatModel(inner=ChatOpenAI(model="gpt-4o-mini"))
        >>> async def agent(state):
        ...     return {"messages": [await llm.bind_tools(tools).ainvoke(state["messages"])]}
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)
    inner: BaseChatModel
    model_name: str | None = None

    def __init__(self, inner: BaseChatModel | None = None, /, **data: Any) -> None:
        if inner is not None:
            data["inner"] = inner
        super().__init__(**data)

    @property
    def _llm_type(self) -> str:
        return f"tether:{self.inner._llm_type}"

    @property
    def priced_name(self) -> str:
        """The model's name for tether's prices, budgets and policy."""
        return str(self.model_name or getattr(self.inner, "model_name", None)
                   or getattr(self.inner, "model", None) or self.inner._llm_type)

    def bind_tools(self, tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
                   *, tool_choice: str | None = None,
                   **kwargs: Any) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools as the wrapped model formats them; the calls still go through tether."""
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        bound = self.inner.bind_tools(tools, **kwargs)
        return self.bind(**getattr(bound, "kwargs", {}))

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None,
                  **kwargs: Any) -> ChatResult:
        return run_blocking(self._agenerate(messages, stop, None, **kwargs),
                            f"chat model {self.priced_name}")

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: AsyncCallbackManagerForLLMRun | None = None,
                         **kwargs: Any) -> ChatResult:
        ctx = current_step()
        name = self.priced_name
        request = {"messages": [message_dict(m) for m in messages], "stop": stop,
                   "options": plain(kwargs), "model": plain(self._params())}

        async def call() -> ForeignResponse:
            return await self._call(messages, stop, run_manager, kwargs)
        raw = await ctx.model_call(name, request, call)
        return ChatResult(
            generations=[ChatGeneration(message=revive(raw["message"]),
                                        generation_info=raw.get("generation_info"))],
            llm_output=raw.get("llm_output"))

    def _params(self) -> dict[str, Any]:
        # What configures the wrapped model (name, temperature...): a changed setting on
        # replay is a different request. Secrets and clients are not JSON: left out.
        return {k: v for k, v in self.inner._identifying_params.items()
                if v is None or isinstance(v, bool | int | float | str)}

    async def _call(self, messages: list[BaseMessage], stop: list[str] | None,
                    run_manager: AsyncCallbackManagerForLLMRun | None,
                    kwargs: dict[str, Any]) -> ForeignResponse:
        try:
            # The wrapper's own run is what LangChain's callbacks (tracing) see; the
            # wrapped model is called bare, so nothing is reported twice.
            result = await self.inner.agenerate([messages], stop=stop, **kwargs)
        except Signal:
            raise
        except Exception as exc:
            status = getattr(exc, "status_code", None)
            raise ModelError(f"{type(exc).__name__}: {exc}", provider_message=str(exc),
                             retryable=status is None or status in _RETRYABLE) from exc
        gen = result.generations[0][0]
        if not isinstance(gen, ChatGeneration) or not isinstance(gen.message, AIMessage):
            raise ModelError(f"chat model {self.priced_name} answered with "
                             f"{type(gen).__name__}, not an AIMessage")
        raw = {"message": dumpd(gen.message), "generation_info": plain(gen.generation_info),
               "llm_output": plain(result.llm_output)}
        return ForeignResponse(summary(gen.message), raw)


def summary(message: AIMessage) -> ModelResponse:
    """An ``AIMessage`` in tether's chat shape: text, tool calls (malformed ones with the
    text the model sent), token usage, model and finish reason."""
    calls = [ToolCall(str(c.get("id") or ""), c["name"],
                      orjson.dumps(c.get("args", {})).decode()) for c in message.tool_calls]
    calls += [ToolCall(str(c.get("id") or ""), str(c.get("name") or ""), str(c.get("args") or ""))
              for c in message.invalid_tool_calls]
    usage: Mapping[str, Any] = message.usage_metadata or {}
    meta = message.response_metadata or {}
    text = str(message.text)
    return ModelResponse(content=text or None, tool_calls=tuple(calls),
                         usage=Usage(int(usage.get("input_tokens", 0)),
                                     int(usage.get("output_tokens", 0))),
                         model=str(meta.get("model_name") or meta.get("model") or ""),
                         finish_reason=meta.get("finish_reason"))
