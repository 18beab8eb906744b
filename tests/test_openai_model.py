"""OpenAIModel against a real loopback Chat Completions server (no patched client)."""

from __future__ import annotations

import asyncio
import email.utils
import socket
import time
from collections.abc import Sequence
from typing import Any

import pytest

from tether.errors import ModelError, UsageError
from tether.models.base import Message, ModelResponse, ToolCall, ToolSpec, Usage
from tether.models.openai import OpenAIModel, backoff_delay, parse_retry_after
from tether.testing.openai_server import FakeChatServer, Reply, completion, error, tool_call

USER: list[Message] = [{"role": "user", "content": "What's the weather in Paris?"}]
WEATHER: ToolSpec = {
    "name": "weather",
    "description": "Current weather for a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]},
}


@pytest.fixture(autouse=True)
def _hermetic_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's real credentials or proxy must never steer a test off the loopback.
    for var in ("TETHER_MODEL", "OPENAI_BASE_URL", "OPENAI_API_KEY", "OPENAI_ORG_ID",
                "OPENAI_PROJECT_ID", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY",
                "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)


class Sleeps:
    """An injected sleep that records how long it was asked to wait, and returns at once."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def make(server: FakeChatServer, sleeps: Sleeps, **kwargs: Any) -> OpenAIModel:
    kwargs.setdefault("api_key", "sk-test")
    return OpenAIModel(kwargs.pop("model", "m"), base_url=server.base_url, sleep=sleeps,
                       timeout=kwargs.pop("timeout", 5.0), **kwargs)


def ask(model: OpenAIModel, *calls: tuple[Sequence[Message], Sequence[ToolSpec]],
        ) -> list[ModelResponse]:
    """Run calls in one event loop and always close the client (no ResourceWarning)."""
    async def main() -> list[ModelResponse]:
        async with model:
            return [await model.complete(m, t) for m, t in calls or [(USER, [])]]
    return asyncio.run(main())


def ask_error(model: OpenAIModel) -> ModelError:
    with pytest.raises(ModelError) as info:
        ask(model)
    return info.value


def test_plain_content_answer() -> None:
    with FakeChatServer([completion("Sunny, 21 °C.", model="served-model")]) as server:
        [r] = ask(make(server, Sleeps()))
    assert r == ModelResponse("Sunny, 21 °C.", (), Usage(10, 5), "served-model", "stop")


def test_tool_calls_keep_raw_argument_strings_even_malformed() -> None:
    calls = [tool_call("call_1", "weather", '{"city": "Paris"}'),
             tool_call("call_2", "weather", '{"city": "Par')]  # truncated JSON, kept as is
    with FakeChatServer([completion(None, tool_calls=calls)]) as server:
        [r] = ask(make(server, Sleeps()), (USER, [WEATHER]))
    assert r.content is None
    assert r.finish_reason == "tool_calls"
    assert r.tool_calls == (ToolCall("call_1", "weather", '{"city": "Paris"}'),
                            ToolCall("call_2", "weather", '{"city": "Par'))


def test_usage_is_mapped_and_zero_when_missing() -> None:
    with FakeChatServer([completion("a", usage=(123, 45)), completion("b", usage=None)]) as server:
        first, second = ask(make(server, Sleeps()), (USER, []), (USER, []))
    assert first.usage == Usage(input_tokens=123, output_tokens=45)
    assert second.usage == Usage(0, 0)


def test_messages_and_tools_are_sent_in_wire_shape() -> None:
    messages: list[Message] = [
        {"role": "system", "content": "Be brief."},
        *USER,
        {"role": "assistant", "content": None, "tool_calls": [
            tool_call("call_1", "weather", '{"city": "Paris"}')]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    with FakeChatServer([completion("ok"), completion("ok")]) as server:
        ask(make(server, Sleeps(), extra_body={"top_k": 3}), (messages, [WEATHER]), (USER, []))
        with_tools, without_tools = server.requests
    assert with_tools.method == "POST"
    assert with_tools.path == "/v1/chat/completions"
    assert with_tools.headers["authorization"] == "Bearer sk-test"
    assert with_tools.body["model"] == "m"
    assert with_tools.body["messages"] == messages
    assert with_tools.body["tools"] == [{"type": "function", "function": WEATHER}]
    assert with_tools.body["top_k"] == 3
    assert "tools" not in without_tools.body


@pytest.mark.parametrize(("headers", "expected"), [
    ({"Retry-After": "7"}, 7.0),
    ({"retry-after-ms": "250"}, 0.25),
    ({"Retry-After": "120"}, 30.0),  # capped at backoff_max
])
def test_429_waits_as_retry_after_says_then_succeeds(headers: dict[str, str],
                                                     expected: float) -> None:
    sleeps = Sleeps()
    replies = [error(429, "Rate limit reached", headers=headers), completion("done")]
    with FakeChatServer(replies) as server:
        [r] = ask(make(server, sleeps, backoff_max=30.0))
        assert len(server.requests) == 2
    assert r.content == "done"
    assert sleeps.calls == [expected]


def test_retry_after_as_http_date() -> None:
    sleeps = Sleeps()
    date = email.utils.formatdate(time.time() + 20, usegmt=True)
    replies = [error(429, "slow down", headers={"Retry-After": date}), completion("done")]
    with FakeChatServer(replies) as server:
        ask(make(server, sleeps))
    [waited] = sleeps.calls
    assert 18.0 < waited <= 20.0  # the date has one-second resolution


def test_500_then_success_backs_off() -> None:
    sleeps = Sleeps()
    with FakeChatServer([error(500, "boom"), completion("recovered")]) as server:
        [r] = ask(make(server, sleeps, backoff_base=0.5))
        assert len(server.requests) == 2
    assert r.content == "recovered"
    [waited] = sleeps.calls
    assert 0.25 <= waited <= 0.5


def test_401_fails_immediately_naming_status_and_provider_message() -> None:
    sleeps = Sleeps()
    with FakeChatServer([error(401, "Incorrect API key provided.")]) as server:
        err = ask_error(make(server, sleeps, model="gpt-x"))
        assert len(server.requests) == 1
        assert server.base_url in str(err)
    assert "401" in str(err)
    assert "'gpt-x'" in str(err)
    assert "Incorrect API key provided." in str(err)
    assert "API key" in str(err).split("provided.")[-1]  # says what to do
    assert err.provider_message == "Incorrect API key provided."
    assert err.retryable is False
    assert sleeps.calls == []


@pytest.mark.parametrize("status", [400, 403, 404, 422])
def test_other_client_errors_are_not_retried(status: int) -> None:
    with FakeChatServer([error(status, "nope"), completion("never")]) as server:
        err = ask_error(make(server, Sleeps()))
        assert len(server.requests) == 1
    assert f"HTTP {status}" in str(err)
    assert err.retryable is False


def test_retries_exhausted_is_a_retryable_model_error() -> None:
    sleeps = Sleeps()
    with FakeChatServer([error(503, "overloaded")] * 3 + [completion("too late")]) as server:
        err = ask_error(make(server, sleeps, max_retries=2))
        assert len(server.requests) == 3
    assert err.retryable is True
    assert err.provider_message == "overloaded"
    assert "HTTP 503" in str(err)
    assert "after 3 attempts" in str(err)
    assert len(sleeps.calls) == 2


def test_hanging_server_times_out() -> None:
    sleeps = Sleeps()
    with FakeChatServer([completion("late", delay=5)] * 2) as server:
        started = time.monotonic()
        err = ask_error(make(server, sleeps, timeout=0.5, max_retries=1))
        assert len(server.requests) == 2
    assert time.monotonic() - started < 4
    assert err.retryable is True
    assert "timed out" in str(err)
    assert "timeout=" in str(err)


def test_connection_refused_is_retried_then_reported() -> None:
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sleeps = Sleeps()
    model = OpenAIModel("m", base_url=f"http://127.0.0.1:{port}/v1", max_retries=1, sleep=sleeps)
    err = ask_error(model)
    assert err.retryable is True
    assert f"127.0.0.1:{port}" in str(err)
    assert "base URL" in str(err)
    assert len(sleeps.calls) == 1


def test_empty_choices_is_a_model_error() -> None:
    body = {"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": []}
    with FakeChatServer([Reply(200, body)]) as server:
        err = ask_error(make(server, Sleeps()))
    assert "no choices" in str(err)


def test_non_json_answer_is_a_model_error_naming_the_base_url() -> None:
    with FakeChatServer([Reply(200, "<html>Welcome to the web UI</html>")]) as server:
        err = ask_error(make(server, Sleeps()))
    assert "not JSON" in str(err)
    assert "base URL" in str(err)
    assert err.retryable is False


def test_lenient_servers_object_arguments_and_missing_ids() -> None:
    calls = [{"type": "function", "function": {"name": "weather", "arguments": {"city": "Oslo"}}}]
    with FakeChatServer([completion(None, tool_calls=calls)]) as server:
        [r] = ask(make(server, Sleeps()), (USER, [WEATHER]))
    assert r.tool_calls == (ToolCall("call_0", "weather", '{"city": "Oslo"}'),)


def test_env_fallbacks(monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeChatServer([completion("hi")]) as server:
        monkeypatch.setenv("TETHER_MODEL", "env-model")
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
        model = OpenAIModel(sleep=Sleeps())
        assert model.name == "env-model"
        assert model.base_url == server.base_url
        ask(model)
        [req] = server.requests
    assert req.body["model"] == "env-model"
    assert req.headers["authorization"] == "Bearer sk-env"


def test_explicit_arguments_beat_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TETHER_MODEL", "env-model")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")  # discard port
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    with FakeChatServer([completion("hi")]) as server:
        ask(OpenAIModel("arg-model", base_url=server.base_url, api_key="sk-arg"))
        [req] = server.requests
    assert req.body["model"] == "arg-model"
    assert req.headers["authorization"] == "Bearer sk-arg"


def test_local_server_needs_no_api_key() -> None:
    with FakeChatServer([completion("hi")]) as server:
        [r] = ask(OpenAIModel("llama", base_url=server.base_url))
        [req] = server.requests
    assert r.content == "hi"
    assert req.headers["authorization"] == "Bearer not-needed"


def test_missing_model_name_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match=r"model=.*TETHER_MODEL"):
        OpenAIModel(base_url="http://127.0.0.1:9/v1")


def test_parse_retry_after_edge_cases() -> None:
    assert parse_retry_after({}, now=0.0) is None
    assert parse_retry_after({"retry-after": "soon"}, now=0.0) is None
    assert parse_retry_after({"retry-after": "-3"}, now=0.0) == 0.0
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}, now=0.0) == 1.5
    past = email.utils.formatdate(1_000, usegmt=True)
    assert parse_retry_after({"retry-after": past}, now=2_000.0) == 0.0


def test_backoff_grows_and_is_capped() -> None:
    assert backoff_delay(0, 0.5, 30.0, rand=0.0) == 0.25
    assert backoff_delay(3, 0.5, 30.0, rand=0.999) == pytest.approx(4.0, abs=0.01)
    assert backoff_delay(50, 0.5, 30.0, rand=0.999) <= 30.0
