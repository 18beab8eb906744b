"""A PydanticAI model whose every request goes through tether's journal.

:class:`TetherModel` wraps the agent's own model (PydanticAI's ``WrapperModel``
seam): a request is journaled as ``model.called`` (gated by the run's budget, the
policy's model rules and the stop button; priced; redacted) before PydanticAI
sees the answer, and a replayed step gets the journaled answer back without
calling the provider.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from pydantic_ai.exceptions import (
    ModelAPIError,
    ModelConnectionError,
    ModelRateLimitError,
    ModelServerError,
    ModelUnavailableError,
)
from pydantic_ai.messages import ModelMessage
from pydantic_ai.messages import ModelResponse as PydanticResponse
from pydantic_ai.models import Model, ModelRequestParameters, StreamedResponse
from pydantic_ai.models.wrapper import WrapperModel
from pydantic_ai.settings import ModelSettings

from tether.errors import ModelError, UsageError
from tether.integrations.pydantic_ai._messages import (
    dump_response,
    load_response,
    request_json,
    summary,
)
from tether.models.base import ForeignResponse
from tether.runtime.step_api import current_step

_RETRYABLE = (ModelRateLimitError, ModelServerError, ModelConnectionError, ModelUnavailableError)


class TetherModel(WrapperModel):
    """Wraps a PydanticAI model so each request is a journaled tether model call.

    Used by :class:`~tether.integrations.pydantic_ai.TetherAgent`; outside a tether
    step a request raises :class:`~tether.errors.UsageError` (there is no journal to
    write to).

    Args:
        wrapped: the model that really answers (e.g. an ``OpenAIChatModel``).

    A tether signal (pause, approval, budget, stop) a request raises ends the step even
    if the framework swallows it: the runtime keeps it and raises it when the step returns.
    """

    def __init__(self, wrapped: Model):
        super().__init__(wrapped)

    async def request(self, messages: list[ModelMessage], model_settings: ModelSettings | None,
                      model_request_parameters: ModelRequestParameters) -> PydanticResponse:
        ctx = current_step()
        _refuse_native_tools(ctx.run_id, ctx.step, model_request_parameters)
        body = request_json(messages, model_settings, model_request_parameters)
        wrapped = self.wrapped

        async def call() -> ForeignResponse:
            try:
                resp = await wrapped.request(messages, model_settings, model_request_parameters)
            except ModelAPIError as exc:  # after the provider client's own retries
                raise ModelError(f"{type(exc).__name__}: {exc}", provider_message=str(exc),
                                 retryable=isinstance(exc, _RETRYABLE)) from exc
            return ForeignResponse(summary(resp), dump_response(resp))

        return load_response(await ctx.model_call(self.model_name, body, call))

    @asynccontextmanager
    async def request_stream(self, messages: list[ModelMessage],
                             model_settings: ModelSettings | None,
                             model_request_parameters: ModelRequestParameters,
                             run_context: Any = None) -> AsyncIterator[StreamedResponse]:
        raise UsageError("a PydanticAI agent run by tether is driven node by node "
                         "(agent.iter), not streamed; streaming requests are not journaled")
        yield  # pragma: no cover - makes this an async generator, as the seam expects


def _refuse_native_tools(run: str, step: int, params: ModelRequestParameters) -> None:
    """Native tools (a remote MCP server, code execution, web search...) run on the
    provider's side, where tether's policy never sees them: refused before the request
    leaves, as the OpenAI Agents integration refuses hosted tools."""
    native = getattr(params, "native_tools", None) or ()
    if native:
        names = sorted({type(t).__name__ for t in native})
        raise UsageError(f"run {run} step {step}: the request carries native tools "
                         f"{', '.join(names)}, which the provider runs where tether cannot gate "
                         "or journal them; give the agent function tools (for an MCP server, "
                         "tether.integrations.mcp or a local MCP toolset) instead")
