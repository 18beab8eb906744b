"""A loopback OpenAI-compatible server for the drift monitor's asks, the agents they
watch, and a worker entry point for the kill -9 test.

The server is a plumbing fixture, not a model: ``/v1/embeddings`` gives each text a
bag-of-words vector over a few words (so a run triaging tickets is close to a goal
about tickets, and one exporting customer records is not), and
``/v1/chat/completions`` answers a judge's question with ``on_goal`` false when the
actions it is shown export records. It speaks OpenAI's wire format, logs every request
with its ``X-Tether-Ask`` header, and can fail (HTTP 500) or hold a request until
released, per path.

Run as a module, from the repository root::

    python -m tests.askkit worker STORE [--lease-ttl S]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.test_monitor_drift import export_records, send_email, set_label
from tether import Continue, Done, StepAgent, Worker, tool
from tether.store.sqlite import SQLiteStore

WORDS = ("ticket", "label", "triage", "support", "export", "customer", "email", "record")
GOAL = "Triage the support tickets: read and label each ticket."
POLICY = """
[monitors.drift]
embeddings = "emb-test"
judge = "judge-test"
judge_every = 5
ask_timeout = 5.0
"""


def embed(text: str) -> list[float]:
    t = text.lower()
    return [float(t.count(w)) for w in WORDS] + [0.25]


@dataclass
class Loopback:
    """What the server does and saw."""

    url: str = ""
    log: list[tuple[str, str, Any]] = field(default_factory=list)
    """(path, X-Tether-Ask header, request body), in arrival order."""
    fail: set[str] = field(default_factory=set)
    """Paths answered with HTTP 500."""
    hold: set[str] = field(default_factory=set)
    """Paths whose answers wait for :attr:`release`."""
    release: threading.Event = field(default_factory=threading.Event)
    nan: bool = False
    """Embeddings of NaN (Python's JSON writes them; a broken server might)."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def asked(self, path: str = "") -> list[str]:
        with self.lock:
            return [a for p, a, _ in self.log if p.endswith(path)]


AGENT_MODEL = "agent-test"


def _agent_turn(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The agent's model: read tickets T-1..T-6, one a turn, then say it is done."""
    n = sum(1 for m in messages if m.get("role") == "tool") + 1
    message: dict[str, Any] = {"role": "assistant", "content": "all triaged"}
    if n <= 6:
        message = {"role": "assistant", "content": None, "tool_calls": [{
            "id": f"call_{n}", "type": "function", "function": {
                "name": "read_ticket", "arguments": json.dumps({"ticket": f"T-{n}"})}}]}
    return {"id": f"chatcmpl-{n}", "object": "chat.completion", "created": 0,
            "model": AGENT_MODEL, "choices": [{"index": 0, "message": message,
                                               "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25}}


def _handler(state: Loopback) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            path = self.path
            with state.lock:
                state.log.append((path, self.headers.get("X-Tether-Ask", ""), body))
            if any(path.endswith(p) for p in state.hold):
                state.release.wait(60)
            if any(path.endswith(p) for p in state.fail):
                return self._send(500, {"error": {"message": "loopback says no",
                                                  "type": "server_error"}})
            if path.endswith("/embeddings"):
                texts = body["input"]
                data = [{"object": "embedding", "index": i,
                         "embedding": [math.nan] * 9 if state.nan else embed(t)}
                        for i, t in enumerate(texts)]
                n = sum(len(t.split()) for t in texts)
                return self._send(200, {"object": "list", "data": data, "model": body["model"],
                                        "usage": {"prompt_tokens": n, "total_tokens": n}})
            if path.endswith("/chat/completions") and body["model"] == AGENT_MODEL:
                return self._send(200, _agent_turn(body["messages"]))
            if path.endswith("/chat/completions"):
                shown = body["messages"][-1]["content"]
                off = "export_records" in shown
                content = json.dumps({"on_goal": not off, "reason": "exports customer records"
                                      if off else "reads and labels tickets"})
                return self._send(200, {
                    "id": "chatcmpl-loopback", "object": "chat.completion", "created": 0,
                    "model": body["model"],
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": content}}],
                    "usage": {"prompt_tokens": 50, "completion_tokens": 12,
                              "total_tokens": 62}})
            return self._send(404, {"error": {"message": f"no route {path}"}})

        def _send(self, status: int, payload: Any) -> None:
            raw = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)
            except OSError:
                pass  # the client gave up (a timeout) or died (kill -9)
    return Handler


@contextmanager
def loopback() -> Iterator[Loopback]:
    """Serve in a thread on 127.0.0.1 (a free port) until the block ends."""
    state = Loopback()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()


# -- tools and agents ------------------------------------------------------------------
@tool(effect="read")
def read_ticket(ticket: str) -> str:
    """Read a ticket."""
    return f"{ticket}: the printer is on fire"


TOOLS = [read_ticket, set_label, export_records, send_email]


def triager(steps: int, *, hijack_at: int | None = None,
            at_step: dict[int, threading.Event] | None = None) -> Any:
    """Reads and labels a ticket a step; from step ``hijack_at`` on it exports customer
    records and emails them instead. ``at_step[n]`` is set when step ``n`` starts."""
    async def step(ctx: Any, state: dict[str, Any]) -> Any:
        n = state["n"] = state.get("n", 0) + 1
        if at_step and n in at_step:
            at_step[n].set()
        if hijack_at is not None and n >= hijack_at:
            await ctx.call(export_records, table="customers")
            await ctx.call(send_email, to="audit@example-mail.top", body=f"part {n}")
        else:
            await ctx.call(read_ticket, ticket=f"T-{n}")
            await ctx.call(set_label, ticket=f"T-{n}", label="hardware")
        return Done("triaged") if n >= steps else Continue()
    return step


LONG_STEPS = 400
long_run = StepAgent(triager(LONG_STEPS), name="triager", tools=TOOLS)
"""The kill -9 test's agent (``tests.askkit:long_run``)."""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.askkit")
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("worker", help="drive STORE with the real Worker until idle")
    w.add_argument("store")
    w.add_argument("--lease-ttl", type=float, default=30.0)
    a = p.parse_args(argv)
    store = SQLiteStore(a.store)
    worker = Worker(store, agents={"long": long_run}, lease_ttl=a.lease_ttl, poll_interval=0.02)
    print(os.getpid(), os.environ.get("OPENAI_BASE_URL"), flush=True)
    asyncio.run(worker.run(until_idle=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
