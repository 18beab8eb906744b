"""One turn (one tether step) of an SDK run: what the wrapped tools and model share.

A :class:`Turn` is made by each step and reached through a context variable, which the
tasks the SDK spawns for tool calls inherit. It keeps the function calls the model asked
for (so a call of a tool that does not exist is journaled with its arguments), the names
the model was offered, and an error tether raised inside a hook the SDK guards with
``except Exception`` (re-raised when ``Runner.run`` returns, so a store failure is not
turned into a message). That the tool calls the SDK runs at once take turns, and that
none acts after a signal, is the runtime's (:class:`tether.runtime.stepping.StepCalls`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any

from agents.run_config import ToolErrorFormatterArgs

from tether.runtime.step_api import current_step

_TURN: ContextVar[Turn] = ContextVar("tether_openai_agents_turn")


class Turn:
    """What the wrapped model and tools of one step share."""

    def __init__(self, offered: tuple[str, ...] = ()) -> None:
        self.offered = offered
        self.calls: dict[str, str] = {}
        """Arguments of the function calls the model asked for, by call id."""
        self.failure: Exception | None = None

    @contextlib.contextmanager
    def current(self) -> Iterator[Turn]:
        """Make this the turn the wrapped tools see (the SDK's tool tasks inherit it)."""
        token = _TURN.set(self)
        try:
            yield self
        finally:
            _TURN.reset(token)

    def reject_unknown(self, name: str, call_id: str) -> str:
        """Journal a call of a tool the agent does not have as a rejected call; what the
        model is told (the names it may call), as tether's own agent tells it."""
        try:
            return current_step().reject(
                name, self.calls.get(call_id, ""),
                f"unknown tool {name!r}; available: {', '.join(self.offered) or 'none'}")
        except Exception as exc:  # the SDK would log it and tell the model its default
            self.failure = exc
            raise


def current_turn() -> Turn | None:
    """The turn in progress, or None outside one."""
    return _TURN.get(None)


Formatter = Callable[[ToolErrorFormatterArgs[Any]], Any]


def not_found_formatter(user: Formatter | None) -> Formatter:
    """The run's ``tool_error_formatter``: a call of a tool that does not exist is journaled
    and the model told which tools exist (the SDK's ``return_error_to_model``); every
    other kind of error goes to the user's formatter, if any."""
    def formatter(args: ToolErrorFormatterArgs[Any]) -> Any:
        turn = current_turn()
        if args.kind == "tool_not_found" and turn is not None:
            return turn.reject_unknown(args.tool_name, args.call_id)
        return user(args) if user is not None else None
    return formatter
