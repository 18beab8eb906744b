"""An agent on an OpenAI-compatible model, built when the module is imported (as a worker
or `tether run` imports it): ``tests.model_agents:chat``. Point ``OPENAI_BASE_URL`` at a
loopback :class:`tether.testing.openai_server.FakeChatServer` first."""

from __future__ import annotations

from tether import Agent
from tether.models.openai import OpenAIModel

chat = Agent("chat", model=OpenAIModel("served-model"), instructions="Answer briefly.")
