"""An adapter for OpenAI and every server that speaks its Chat Completions API.

vLLM, Ollama, llama.cpp, LM Studio and most hosted gateways accept the same
wire format, so one adapter serves them all: point ``base_url`` at the server.
:meth:`OpenAIModel.embed` calls the same server's ``/embeddings`` (the drift
monitor's goal similarity), and :meth:`OpenAIModel.sibling` reaches another model
of the same provider.

Retries are done here, not by the ``openai`` client (it is built with
``max_retries=0``): we honour ``Retry-After`` exactly, log every retry, and
turn the final failure into one :class:`tether.errors.ModelError` whose
message says what to do.
"""

# long: one adapter (chat and embeddings), its pure wire helpers beside the class doing I/O
from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import os
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar, cast

import openai
from openai.types.chat import (
    ChatCompletion,
    ChatCompletionMessage,
    ChatCompletionMessageParam,
    ChatCompletionToolUnionParam,
)

from tether.core.backoff import Backoff
from tether.errors import ModelError, UsageError
from tether.models.base import Message, ModelResponse, ToolCall, ToolSpec, Usage
from tether.system_clock import SYSTEM_CLOCK

__all__ = ["OpenAIModel"]

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
_NO_KEY_PLACEHOLDER = "not-needed"
_RETRYABLE_STATUS = frozenset({408, 409, 429})

Sleep = Callable[[float], Awaitable[None]]
_T = TypeVar("_T")


# --- pure helpers: decide, never do I/O ---------------------------------------------------


def to_wire_tools(tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    """Convert tether tool specs to the Chat Completions ``tools`` list.

    Specs already in wire form (``{"type": "function", "function": {...}}``) pass through.
    """
    wire: list[dict[str, Any]] = []
    for spec in tools:
        if spec.get("type") == "function" and "function" in spec:
            wire.append(dict(spec))
            continue
        fn: dict[str, Any] = {"name": spec["name"]}
        if spec.get("description"):
            fn["description"] = spec["description"]
        # Some servers reject a function without a schema; an empty object schema is neutral.
        fn["parameters"] = spec.get("parameters") or {"type": "object", "properties": {}}
        wire.append({"type": "function", "function": fn})
    return wire


def parse_retry_after(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds a server asked us to wait, from ``retry-after-ms`` or ``Retry-After``.

    ``Retry-After`` may be seconds or an HTTP date. Returns ``None`` when absent or
    unparseable, and never a negative number. Header names match case-insensitively.
    """
    headers = {k.lower(): v for k, v in headers.items()}
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - now)


def backoff_delay(attempt: int, base: float, cap: float, rand: float) -> float:
    """Exponential backoff with jitter for retry number ``attempt`` (0-based).

    Half the delay is fixed and half random (``rand`` in [0, 1)), so clients
    that failed together spread out while still backing off (see
    :class:`tether.core.backoff.Backoff`).
    """
    return Backoff(base=base, cap=cap).delay(attempt, rand)


def is_retryable(exc: openai.APIError) -> bool:
    """Whether trying again may succeed: timeouts, connection errors, 408/409/429 and 5xx."""
    if isinstance(exc, openai.APIConnectionError):
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in _RETRYABLE_STATUS or exc.status_code >= 500
    return False


def provider_message(exc: openai.APIError) -> str:
    """The provider's own words from an error, e.g. ``{"error": {"message": ...}}``."""
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__
        return f"{exc.message} ({cause})" if cause and str(cause) else exc.message
    body = exc.body
    # The client already unwraps {"error": {...}}; unwrap again for servers that nest or don't.
    for _ in range(2):
        if isinstance(body, Mapping) and "error" in body:
            body = body["error"]
    if isinstance(body, Mapping):
        for key in ("message", "detail", "msg"):
            if isinstance(body.get(key), str) and body[key]:
                return cast(str, body[key])
        return str(dict(body))[:500]
    if isinstance(body, str) and body.strip():
        return body.strip()[:500]
    return exc.message


def _hint(exc: openai.APIError) -> str:
    if isinstance(exc, openai.APITimeoutError):
        return "Raise timeout= if the model is slow, or try later."
    if isinstance(exc, openai.APIConnectionError):
        return ("Check the base URL (base_url= or OPENAI_BASE_URL) and that the server is "
                "running and reachable.")
    status = getattr(exc, "status_code", None)
    hints = {
        401: "Check the API key (api_key= or OPENAI_API_KEY).",
        403: "Check that the API key may use this model and endpoint.",
        404: ("Check the model name and the base URL (OpenAI-compatible servers usually "
              "serve under /v1)."),
        429: "The provider is rate limiting or out of quota; try later or raise the quota.",
    }
    if status in hints:
        return hints[status]
    if status in (400, 422):
        return "The provider rejected the request; check the messages and tool schemas."
    if status is not None and (status >= 500 or status in _RETRYABLE_STATUS):
        return "The provider is failing; try later."
    return "See the provider's message above."


class NoChoicesError(ValueError):
    """A response with an empty (or missing) ``choices`` list."""


def _tool_calls(message: ChatCompletionMessage) -> tuple[ToolCall, ...]:
    calls: list[ToolCall] = []
    for i, tc in enumerate(message.tool_calls or ()):
        if tc.type == "custom":
            name, arguments = tc.custom.name, tc.custom.input
        else:
            name, arguments = tc.function.name, tc.function.arguments
        # The client does not validate responses; a few servers send arguments as an
        # object or null. Keep them as JSON text so the runtime sees what was sent.
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments)
        # Some local servers omit ids; a positional one is deterministic, so replay agrees.
        calls.append(ToolCall(tc.id or f"call_{i}", name, arguments))
    return tuple(calls)


def to_model_response(completion: ChatCompletion, requested_model: str) -> ModelResponse:
    """Map a Chat Completions response to a :class:`ModelResponse`.

    Tool-call arguments stay the raw JSON string the model sent, even when malformed:
    the runtime decides what to do with bad arguments, and the journal keeps the truth.

    Raises:
        NoChoicesError: the response has no choices.
    """
    choices = getattr(completion, "choices", None) or []
    if not choices:
        raise NoChoicesError("the response has no choices")
    choice = choices[0]
    message = choice.message
    usage = getattr(completion, "usage", None)
    return ModelResponse(
        content=message.content,
        tool_calls=_tool_calls(message),
        usage=Usage(int(getattr(usage, "prompt_tokens", 0) or 0),
                    int(getattr(usage, "completion_tokens", 0) or 0)),
        model=getattr(completion, "model", None) or requested_model,
        finish_reason=choice.finish_reason,
    )


def _from_env(name: str, kind: type[float] | type[int], default: float) -> Any:
    """A number from the environment (the CLI's --model-timeout/--model-retries set it)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return kind(default)
    try:
        return kind(raw)
    except ValueError:
        what = "a whole number of retries" if kind is int else "a number of seconds"
        raise UsageError(f"{name}={raw!r} is not {what}") from None


# --- the adapter: owns the client and does the I/O ----------------------------------------


class OpenAIModel:
    """A :class:`tether.models.Model` for any OpenAI-compatible Chat Completions server.

    Example:
        >>> model = OpenAIModel("qwen2.5", base_url="http://localhost:8000/v1")  # doctest: +SKIP
        >>> response = await model.complete(  # doctest: +SKIP
        ...     [{"role": "user", "content": "hi"}], [])

    Close it with ``await model.aclose()`` (or ``async with model:``) in the event
    loop that used it; the HTTP client is created on the first call and bound to
    that loop.

    Args:
        model: model name; defaults to ``$TETHER_MODEL``.
        base_url: server URL, e.g. ``http://localhost:11434/v1``; defaults to
            ``$OPENAI_BASE_URL``, then OpenAI.
        api_key: defaults to ``$OPENAI_API_KEY``; when neither is set but a base URL
            is, a placeholder is sent, since local servers need no key.
        timeout: seconds per HTTP attempt; default ``$TETHER_MODEL_TIMEOUT``, else 60.
        max_retries: retries after the first attempt for retryable failures; default
            ``$TETHER_MODEL_RETRIES``, else 4.
        backoff_base: first backoff delay in seconds; doubles each retry.
        backoff_max: cap on any wait, including a server's ``Retry-After``.
        extra_body: extra JSON fields sent with every request (e.g. ``{"top_k": 20}``).
        sleep: how to wait between retries; tests inject a recorder.

    Raises:
        UsageError: no model name, or a negative ``max_retries``/non-positive ``timeout``
            (given, or in the environment).
    """

    def __init__(self, model: str | None = None, *, base_url: str | None = None,
                 api_key: str | None = None, timeout: float | None = None,
                 max_retries: int | None = None,
                 backoff_base: float = 0.5, backoff_max: float = 30.0,
                 extra_body: dict[str, Any] | None = None, sleep: Sleep = asyncio.sleep) -> None:
        model = model or os.environ.get("TETHER_MODEL")
        if not model:
            raise UsageError("OpenAIModel needs a model name: pass model= or set TETHER_MODEL")
        if timeout is None:
            timeout = _from_env("TETHER_MODEL_TIMEOUT", float, 60.0)
        if max_retries is None:
            max_retries = _from_env("TETHER_MODEL_RETRIES", int, 4)
        if max_retries < 0:
            raise UsageError(f"OpenAIModel max_retries must be >= 0, got {max_retries} (from "
                             "max_retries=, else TETHER_MODEL_RETRIES)")
        if not (timeout > 0 and timeout != float("inf")):  # NaN fails the first test
            raise UsageError(f"OpenAIModel timeout must be > 0 seconds, got {timeout} (from "
                             "timeout=, else TETHER_MODEL_TIMEOUT)")
        self._model = model
        self._base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        api_key = api_key or os.environ.get("OPENAI_API_KEY")
        if not api_key and self._base_url:
            api_key = _NO_KEY_PLACEHOLDER
        # Without any key (and no base URL) the client raises on creation; we check
        # lazily so constructing a model never fails for want of a secret.
        self._api_key = api_key
        self._timeout = timeout
        self._max_retries = max_retries
        self._backoff = Backoff(base=backoff_base, cap=backoff_max)  # checks them, too
        self._extra_body = dict(extra_body) if extra_body else None
        self._sleep = sleep
        self._client: openai.AsyncOpenAI | None = None

    @property
    def name(self) -> str:
        """The model name sent to the server."""
        return self._model

    @property
    def base_url(self) -> str:
        """The server's base URL."""
        return self._base_url or DEFAULT_BASE_URL

    def __repr__(self) -> str:
        return f"OpenAIModel({self._model!r}, base_url={self.base_url!r})"

    def _get_client(self) -> openai.AsyncOpenAI:
        if self._client is None:
            if not self._api_key:
                raise UsageError(f"{self._where()} needs an API key: pass api_key= or set "
                                 "OPENAI_API_KEY (or base_url= for a local server)")
            self._client = openai.AsyncOpenAI(api_key=self._api_key, base_url=self._base_url,
                                              timeout=self._timeout, max_retries=0)
        return self._client

    async def aclose(self) -> None:
        """Close the HTTP client. The model stays usable; a later call opens a new one."""
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def __aenter__(self) -> OpenAIModel:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def complete(self, messages: Sequence[Message], tools: Sequence[ToolSpec], *,
                       headers: Mapping[str, str] | None = None) -> ModelResponse:
        """Answer ``messages`` (Chat Completions shape), offering ``tools``; ``headers`` go
        with the request (e.g. the id of a monitor's ask, for the provider's logs).

        Raises:
            ModelError: the call failed after retries, failed in a way retrying cannot
                fix (401, 404, ...), or the server answered with no choices or no JSON.
            UsageError: no API key anywhere and no base URL (so it would call OpenAI).
        """
        client = self._get_client()
        wire_tools = to_wire_tools(tools)
        completion = await self._retrying(
            lambda: self._create_once(client, messages, wire_tools, headers))
        try:
            return to_model_response(completion, self._model)
        except NoChoicesError as exc:
            raise ModelError(f"{self._where()} returned no choices. Some servers do so "
                             "when they filter an answer (try again); otherwise check that "
                             "the base URL points at a Chat Completions server",
                             provider_message=str(exc), retryable=True) from None

    async def embed(self, texts: Sequence[str], *, dimensions: int | None = None,
                    headers: Mapping[str, str] | None = None
                    ) -> tuple[list[list[float]], Usage]:
        """Embeddings of ``texts`` (the server's ``/embeddings``), in order, and the usage.

        Raises:
            ModelError: as :meth:`complete`, or an answer without one vector per text.
        """
        client = self._get_client()
        got = await self._retrying(lambda: client.embeddings.create(
            model=self._model, input=list(texts),
            dimensions=dimensions if dimensions else openai.omit, encoding_format="float",
            extra_body=self._extra_body, extra_headers=headers))
        vectors = [list(d.embedding) for d in sorted(got.data, key=lambda d: d.index)]
        if len(vectors) != len(texts):
            raise ModelError(f"{self._where()} returned {len(vectors)} embeddings for "
                             f"{len(texts)} texts; check that the base URL points at an "
                             "OpenAI-compatible embeddings server", retryable=False)
        usage = getattr(got, "usage", None)
        return vectors, Usage(int(getattr(usage, "prompt_tokens", 0) or 0), 0)

    def sibling(self, model: str, *, timeout: float | None = None,
                max_retries: int | None = None,
                extra_body: dict[str, Any] | None = None) -> OpenAIModel:
        """Another model of the same provider (base URL and key), e.g. the monitors'
        embeddings or judge model; it has its own HTTP client."""
        return OpenAIModel(model, base_url=self._base_url, api_key=self._api_key,
                           timeout=self._timeout if timeout is None else timeout,
                           max_retries=self._max_retries if max_retries is None else max_retries,
                           backoff_base=self._backoff.base, backoff_max=self._backoff.cap,
                           extra_body=extra_body, sleep=self._sleep)

    async def _retrying(self, call: Callable[[], Awaitable[_T]]) -> _T:
        """``call()``, retried as the class docstring says; ModelError when it gives up."""
        attempt = 0
        while True:
            try:
                return await call()
            except openai.APIError as exc:
                if not is_retryable(exc) or attempt >= self._max_retries:
                    raise self._final_error(exc, attempt + 1) from exc
                delay = self._retry_delay(exc, attempt)
                attempt += 1
                log.warning("%s: %s; retry %d of %d in %.2f s", self._where(),
                            self._describe(exc), attempt, self._max_retries, delay)
                await self._sleep(delay)

    async def _create_once(self, client: openai.AsyncOpenAI, messages: Sequence[Message],
                           wire_tools: list[dict[str, Any]],
                           headers: Mapping[str, str] | None = None) -> ChatCompletion:
        try:
            return await client.chat.completions.create(
                model=self._model,
                # Messages are already in Chat Completions shape; the casts only tell
                # mypy so, since tether keeps them as plain dicts.
                messages=cast("list[ChatCompletionMessageParam]", list(messages)),
                tools=(cast("list[ChatCompletionToolUnionParam]", wire_tools)
                       if wire_tools else openai.omit),
                extra_body=self._extra_body,
                extra_headers=headers,
            )
        except json.JSONDecodeError as exc:
            # A 200 whose body is not JSON: usually a base URL that points at a web
            # page or a proxy rather than at a Chat Completions server.
            raise ModelError(f"{self._where()} answered with a body that is not JSON ({exc}). "
                             "Check that the base URL points at an OpenAI-compatible "
                             "server (usually ending in /v1)", provider_message=str(exc),
                             retryable=False) from exc

    def _retry_delay(self, exc: openai.APIError, attempt: int) -> float:
        if isinstance(exc, openai.APIStatusError):
            asked = parse_retry_after(exc.response.headers, SYSTEM_CLOCK.now())
            if asked is not None:
                return min(asked, self._backoff.cap)
        return self._backoff.delay(attempt, random.random())

    def _where(self) -> str:
        return f"model {self._model!r} at {self.base_url}"

    def _describe(self, exc: openai.APIError) -> str:
        if isinstance(exc, openai.APITimeoutError):
            return f"timed out after {self._timeout:g} s"
        if isinstance(exc, openai.APIConnectionError):
            return f"connection failed: {provider_message(exc)}"
        status = getattr(exc, "status_code", None)
        said = provider_message(exc)
        return f"HTTP {status}: {said}" if status is not None else said

    def _final_error(self, exc: openai.APIError, attempts: int) -> ModelError:
        tries = f"after {attempts} attempt{'s' if attempts != 1 else ''}"
        message = f"{self._where()} failed {tries}: {self._describe(exc).rstrip('.')}. {_hint(exc)}"
        return ModelError(message, provider_message=provider_message(exc),
                          retryable=is_retryable(exc))
