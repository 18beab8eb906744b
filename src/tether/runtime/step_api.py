"""What a step sees: the step context's protocol, and the records its swarm calls return.

Agents and the swarm tools are typed against :class:`StepContextLike`, which
:class:`~tether.runtime.context.StepContext` implements: they need the calls a
step makes, not the runtime that journals them.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from tether.errors import UsageError
from tether.models.base import ForeignCall, Message, Model, ModelResponse, ToolSpec
from tether.runtime.outcome import SleepUntil
from tether.tools.base import Tool


@dataclass(frozen=True, slots=True)
class InboxMessage:
    """A message as the receiving step sees it."""

    id: str
    """The sender's ``message.sent`` event id."""
    sender: str
    """The sending run's id."""
    topic: str | None
    body: Any
    step: int
    """The sender's step that sent it."""
    suspect: bool = False
    """Its sender was under a monitor's verdict when it was taken: treat it with care."""

    def to_json(self) -> dict[str, Any]:
        out = {"id": self.id, "sender": self.sender, "topic": self.topic, "body": self.body,
               "step": self.step}
        if self.suspect:  # absent otherwise: what receives journaled before it said
            out["suspect"] = True
        return out


@dataclass(frozen=True, slots=True)
class BoardEntry:
    """A blackboard value as a read saw it."""

    key: str
    value: Any
    version: int
    writer: str
    """The run that wrote it."""
    write: str
    """The ``blackboard.write`` event id (the read's cause)."""
    suspect: bool
    """The writer is quarantined, or under a monitor's verdict nobody acked: treat the
    value with care."""


class BoardLike(Protocol):
    """``ctx.board``: the swarm's shared, versioned key-value store."""

    async def get(self, key: str) -> BoardEntry | None: ...

    async def set(self, key: str, value: Any) -> str: ...


class StepContextLike(Protocol):
    """The calls an async step makes through ``ctx`` (see ``StepContext`` for each)."""

    step: int

    @property
    def run_id(self) -> str: ...

    @property
    def goal(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def board(self) -> BoardLike: ...

    @property
    def suspect_files(self) -> tuple[str, ...]: ...

    @property
    def calls(self) -> int: ...

    def progress(self, value: float) -> None: ...

    async def now(self) -> float: ...

    async def random(self) -> float: ...

    async def sleep_for(self, seconds: float) -> SleepUntil: ...

    async def send(self, to: str, body: Any, *, topic: str | None = None) -> str: ...

    async def receive(self, *, limit: int | None = None) -> list[InboxMessage]: ...

    async def model(self, messages: Sequence[Message], tools: Sequence[Tool | ToolSpec] = (),
                    *, model: Model | None = None) -> ModelResponse: ...

    async def model_call(self, model: str, request: Any, call: ForeignCall) -> Any: ...

    def reject(self, tool: str, raw_arguments: str, error: str) -> str: ...

    async def call(self, tool: Tool | str, /, **arguments: Any) -> Any: ...


_CURRENT: contextvars.ContextVar[StepContextLike] = contextvars.ContextVar("tether_step")


def current_step() -> StepContextLike:
    """The context of the async step in progress in this task: how an integration's model
    and tool wrappers, called deep inside a framework's own loop, reach the journal.

    Raises:
        UsageError: outside an async step run by tether.
    """
    try:
        return _CURRENT.get()
    except LookupError:
        raise UsageError("tether.current_step() was called outside an async step run by "
                         "tether; run the agent with a tether Worker (or tether run), and "
                         "make its step async") from None


@contextlib.contextmanager
def stepping(ctx: StepContextLike) -> Iterator[None]:
    """Make ``ctx`` the current step's context for the code inside (the executor's)."""
    token = _CURRENT.set(ctx)
    try:
        yield
    finally:
        _CURRENT.reset(token)
