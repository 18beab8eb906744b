"""A real loopback HTTP server that speaks the Chat Completions wire format.

Tests talk to it over real sockets with the real ``openai`` client, so they
exercise exactly what production does (headers, status codes, timeouts)
without patching anything and without ever reaching a real provider.

Example:
    >>> with FakeChatServer([completion("hi")]) as server:  # doctest: +SKIP
    ...     model = OpenAIModel("m", base_url=server.base_url)
    ...     # ... await model.complete(...); then inspect server.requests
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from tether.system_clock import SYSTEM_CLOCK

__all__ = ["FakeChatServer", "ReceivedRequest", "Reply", "completion", "error", "tool_call"]


@dataclass(frozen=True, slots=True)
class Reply:
    """One scripted HTTP answer, served to one request in order."""

    status: int = 200
    """HTTP status code."""
    body: Any = None
    """A JSON-serialisable value, or ``str``/``bytes`` sent verbatim (for malformed bodies)."""
    headers: Mapping[str, str] = field(default_factory=dict)
    """Extra response headers, e.g. ``{"Retry-After": "2"}``."""
    delay: float = 0.0
    """Seconds to wait before answering, to simulate a hanging server."""


@dataclass(frozen=True, slots=True)
class ReceivedRequest:
    """One request the server received."""

    method: str
    """HTTP method."""
    path: str
    """Request path, e.g. ``/v1/chat/completions``."""
    headers: dict[str, str]
    """Request headers, names lower-cased."""
    body: Any
    """The decoded JSON body, or the raw text when it is not JSON."""


def tool_call(id: str, name: str, arguments: str) -> dict[str, Any]:
    """A wire-format tool call; ``arguments`` is sent verbatim, malformed or not."""
    return {"id": id, "type": "function", "function": {"name": name, "arguments": arguments}}


def completion(content: str | None = None, *, tool_calls: Sequence[dict[str, Any]] = (),
               usage: tuple[int, int] | None = (10, 5), model: str = "fake-model",
               finish_reason: str | None = None, headers: Mapping[str, str] | None = None,
               delay: float = 0.0) -> Reply:
    """A 200 reply carrying one chat completion choice.

    Args:
        content: the assistant's text.
        tool_calls: wire-format tool calls (see :func:`tool_call`).
        usage: ``(prompt_tokens, completion_tokens)``, or ``None`` to omit usage.
        model: the model name the server reports.
        finish_reason: defaults to ``"tool_calls"`` when there are tool calls, else ``"stop"``.
        headers: extra response headers.
        delay: seconds to wait before answering.
    """
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = list(tool_calls)
    body: dict[str, Any] = {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(SYSTEM_CLOCK.now()),
        "model": model,
        "choices": [{
            "index": 0,
            "message": message,
            "finish_reason": finish_reason or ("tool_calls" if tool_calls else "stop"),
        }],
    }
    if usage is not None:
        body["usage"] = {"prompt_tokens": usage[0], "completion_tokens": usage[1],
                         "total_tokens": usage[0] + usage[1]}
    return Reply(200, body, dict(headers or {}), delay)


def error(status: int, message: str, *, type: str = "error",
          headers: Mapping[str, str] | None = None, delay: float = 0.0) -> Reply:
    """An error reply in OpenAI's shape: ``{"error": {"message", "type", "code"}}``."""
    body = {"error": {"message": message, "type": type, "code": None, "param": None}}
    return Reply(status, body, dict(headers or {}), delay)


class _Server(ThreadingHTTPServer):
    # Join handler threads on close so no socket outlives the server (ResourceWarning).
    daemon_threads = False
    block_on_close = True

    def __init__(self, owner: FakeChatServer) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.owner = owner


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    # HTTP/1.0 closes each connection after one answer, so no handler thread
    # lingers on an idle keep-alive connection when the server shuts down.
    protocol_version = "HTTP/1.0"
    timeout = 10  # a client that connects and never sends must not block close()

    def do_POST(self) -> None:
        self._serve()

    def do_GET(self) -> None:
        self._serve()

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode("utf-8", "replace") if length else ""
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        headers = {k.lower(): v for k, v in self.headers.items()}
        owner = self.server.owner
        reply = owner._record(ReceivedRequest(self.command, self.path, headers, body))
        if reply.delay and owner._stopping.wait(reply.delay):
            return  # shutting down: drop the connection instead of answering late
        payload = _encode(reply.body)
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (e.g. its timeout fired); nothing to tell it

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean; requests are recorded instead


def _encode(body: Any) -> bytes:
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    return json.dumps(body).encode()


_EXHAUSTED = error(410, "FakeChatServer has no scripted reply left; push() more replies")


class FakeChatServer:
    """A Chat Completions server on 127.0.0.1 with an ephemeral port, run in a thread.

    Replies are served in order, one per request, whatever the path. When none
    is left the server answers 410 with an error saying so (410 is not retried,
    so a test that under-scripts fails fast and clearly).

    Example:
        >>> with FakeChatServer([error(429, "slow down", headers={"Retry-After": "1"}),
        ...                      completion("hello")]) as server:  # doctest: +SKIP
        ...     ...  # point a client at server.base_url
        ...     assert len(server.requests) == 2

    Args:
        replies: scripted replies, served first to last.
    """

    def __init__(self, replies: Iterable[Reply] = ()) -> None:
        self._replies: deque[Reply] = deque(replies)
        self._requests: list[ReceivedRequest] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """The URL to give a client, ending with ``/v1``."""
        if self._server is None:
            raise RuntimeError("FakeChatServer is not running; use it as a context manager")
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    @property
    def requests(self) -> list[ReceivedRequest]:
        """A snapshot of the requests received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def push(self, *replies: Reply) -> None:
        """Append replies to the script."""
        with self._lock:
            self._replies.extend(replies)

    def _record(self, request: ReceivedRequest) -> Reply:
        with self._lock:
            self._requests.append(request)
            return self._replies.popleft() if self._replies else _EXHAUSTED

    def start(self) -> FakeChatServer:
        """Bind and start serving in a background thread."""
        if self._server is not None:
            raise RuntimeError("FakeChatServer is already running")
        self._stopping.clear()
        self._server = _Server(self)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name="FakeChatServer", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving, wake any delayed reply, and release the socket."""
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        if self._thread is not None:
            self._thread.join()
        self._server.server_close()
        self._server = None
        self._thread = None

    def __enter__(self) -> FakeChatServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
