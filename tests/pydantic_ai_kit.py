"""PydanticAI agents for tests/test_int_pydantic_ai*.py, and a worker entry point.

The agents talk to a real loopback Chat Completions server (FakeChatServer) through
PydanticAI's own OpenAI chat model. Effects append a line to a side channel file
(``$PAI_SIDE``): what really happened, to compare with what tether journaled.

    python -m tests.pydantic_ai_kit STORE --ready FILE   # a real Worker, lease 0.3 s

The worker builds the agent against ``$PAI_URL``; ``$PAI_BLOCK`` makes the ``wait``
tool stop for a minute once it has said so in the file it names (a kill lands there).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

from pydantic import BaseModel
from pydantic_ai import Agent
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider

from tether import Worker
from tether.integrations.pydantic_ai import TetherAgent
from tether.store import open_store

REF = "tests.pydantic_ai_kit:TRIP"
SENT: list[str] = []


class Booking(BaseModel):
    """The structured output of the trip agent."""

    city: str
    nights: int


def chat_model(url: str) -> OpenAIChatModel:
    return OpenAIChatModel("gpt-4o-mini", provider=OpenAIProvider(base_url=url, api_key="test"))


def trip(url: str, *, instructions: str = "Plan trips. Be brief.", structured: bool = False,
         **options: object) -> TetherAgent:
    """A trip agent: ``forecast`` (declared read), ``book`` (undeclared: irreversible),
    ``wait`` (irreversible but idempotent; blocks under ``$PAI_BLOCK``)."""
    agent: Agent[None, object] = Agent(chat_model(url), name="trip", instructions=instructions,
                                       output_type=Booking if structured else str)

    @agent.tool_plain
    def forecast(city: str) -> str:
        """The weather in a city."""
        return f"{city}: sunny, 21C"

    @agent.tool_plain
    def book(city: str, nights: int) -> str:
        """Book a hotel (an irreversible effect)."""
        SENT.append(city)
        side = os.environ.get("PAI_SIDE")
        if side:
            with open(side, "a", encoding="utf-8") as f:
                f.write(f"book {city} {nights} {os.getpid()}\n")
                f.flush()
                os.fsync(f.fileno())
        return f"booked {nights} nights in {city}"

    @agent.tool_plain
    def wait(tag: str) -> str:
        """Wait for something."""
        block = os.environ.get("PAI_BLOCK")
        if block:
            Path(block).write_text(str(os.getpid()), encoding="utf-8")
            time.sleep(60)
        return f"waited for {tag}"

    return TetherAgent(agent, effects={"forecast": "read"}, idempotent={"wait"},
                       **options)  # type: ignore[arg-type]


TRIP = trip(os.environ.get("PAI_URL", "http://127.0.0.1:9/v1"))


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m tests.pydantic_ai_kit")
    p.add_argument("store")
    p.add_argument("--ready", required=True)
    a = p.parse_args()
    store = open_store(a.store)
    worker = Worker(store, lease_ttl=0.3, poll_interval=0.02)
    Path(a.ready).write_text(str(os.getpid()), encoding="utf-8")
    asyncio.run(worker.run(until_idle=True, handle_signals=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
