"""OpenAI Agents SDK agents under tether, for tests/test_int_openai_agents*.py, and a worker
entry point for the crash test.

The agents use the SDK's real ``OpenAIChatCompletionsModel`` over ``AsyncOpenAI`` pointed
at a loopback :class:`tether.testing.openai_server.FakeChatServer` (``$OA_BASE_URL`` for
the module-level agent a worker subprocess imports; :func:`build` for one in-process).
Effects append a line to ``$OA_SIDE`` (fsync'd): what really happened, to compare with
what the journal says. The SDK's tracing export is off: nothing leaves the machine.

Run as a module (the crash test)::

    python -m tests.openai_agents_kit STORE
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

from agents import Agent, OpenAIChatCompletionsModel, RunConfig, function_tool, set_tracing_disabled
from openai import AsyncOpenAI

from tether import Worker, current
from tether.integrations.openai_agents import TetherAgent
from tether.store import open_store

set_tracing_disabled(True)  # the SDK's trace export would reach api.openai.com

SIDE_ENV = "OA_SIDE"
HOLD_ENV = "OA_HOLD"
"""A file name: ``notify`` creates it, then sleeps, so a test can kill the worker there
(after its intent was committed, and with it everything journaled before)."""


def _side(tool: str, arg: str) -> None:
    tc = current()
    line = json.dumps({"tool": tool, "arg": arg, "effect": tc.effect_id,
                       "key": tc.idempotency_key, "pid": os.getpid()})
    with open(os.environ[SIDE_ENV], "a", encoding="utf-8") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_side(path: Path) -> list[dict[str, object]]:
    """The effects that really ran, one dict each."""
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x]


@function_tool
def lookup(city: str) -> str:
    """Look up the weather in a city."""
    return f"sunny in {city}"


@function_tool
def book(city: str) -> str:
    """Book a trip to a city."""
    _side("book", city)
    return f"booked {city}"


@function_tool
def notify(city: str) -> str:
    """Tell the traveller (idempotent: the idempotency key makes a retry harmless)."""
    hold = os.environ.get(HOLD_ENV)
    if hold:
        Path(hold).write_text(str(os.getpid()), encoding="utf-8")
        time.sleep(60)  # killed here by the test
    _side("notify", city)
    return f"notified about {city}"


@function_tool
def explode(reason: str) -> str:
    """A tool that always fails."""
    raise RuntimeError(f"exploded: {reason}")


def build(base_url: str) -> TetherAgent:
    """Triage (lookup, book, notify, explode) hands off to billing (book); one model."""
    client = AsyncOpenAI(base_url=base_url, api_key="test", max_retries=0)
    model = OpenAIChatCompletionsModel("gpt-4o-mini", openai_client=client)
    billing = Agent(name="billing", instructions="You book trips.", model=model, tools=[book])
    triage = Agent(name="triage", instructions="You help travellers.", model=model,
                   tools=[lookup, book, notify, explode], handoffs=[billing])
    return TetherAgent(triage, name="travel", effects={"lookup": "read", "explode": "read"},
                       idempotent={"notify"}, run_config=RunConfig(tracing_disabled=True))


REF = "tests.openai_agents_kit:travel"
travel = build(os.environ.get("OA_BASE_URL", "http://127.0.0.1:9/v1"))


def main(argv: list[str]) -> int:
    store = open_store(argv[0])
    asyncio.run(Worker(store, poll_interval=0.02, lease_ttl=0.5).run(until_idle=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
