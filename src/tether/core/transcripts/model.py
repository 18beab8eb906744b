"""A transcript recorded elsewhere, in one neutral form every format is read into.

A :class:`Transcript` is one agent run as its recorder saw it: a list of
:class:`Turn` objects, each one model call (what was new in the conversation,
what the model answered) and the tool calls that answer asked for, with their
results. :mod:`.journal` maps it onto tether's own event kinds, so an imported
run and a run tether drove read the same way to ``tether show``, the audit and
the monitors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

READ_ONLY_KEY: Final = "imported"
"""The key of a run's spec that marks it as imported: read-only, never driven."""


@dataclass(frozen=True, slots=True)
class ToolUse:
    """One tool call the model asked for, and what came back."""

    id: str
    """The call's id in the transcript (OpenAI ``tool_call_id``, a span id)."""
    name: str
    raw_arguments: str
    """The arguments as the model wrote them (JSON text)."""
    arguments: dict[str, Any] | None
    """The arguments parsed, or None when they are not a JSON object (journaled as a
    rejected call, the way tether journals a model's malformed call)."""
    result: Any = None
    error: str | None = None
    """What the tool reported as a failure, when the format says so."""
    at: int | None = None
    """Where the result is in the record (a message index), for error messages."""


@dataclass(frozen=True, slots=True)
class Turn:
    """One model call and the tool calls its answer asked for."""

    request: tuple[Any, ...]
    """The messages added to the conversation since the previous model call (for the
    first call: everything before it, the system prompt included)."""
    content: Any
    """The model's text answer (None when it only called tools)."""
    tools: tuple[ToolUse, ...] = ()
    model: str = ""
    usage: dict[str, int] = field(default_factory=dict)
    """``input_tokens``, ``output_tokens`` when the format records them."""
    finish_reason: str | None = None
    time: float | None = None
    """When the call was made (seconds since the epoch), when the format records it."""
    end: float | None = None
    """When it returned, when recorded."""
    at: int = 0
    """Where the answer is in the record (a message or span index)."""


@dataclass(frozen=True, slots=True)
class Transcript:
    """One run recorded elsewhere."""

    record: int
    """Its 0-based position in the file."""
    format: str
    """``openai``, ``tau-bench`` or ``otel``."""
    turns: tuple[Turn, ...]
    goal: str = ""
    agent: str = "imported"
    model: str = ""
    trailing: tuple[Any, ...] = ()
    """Messages after the last model call (e.g. a user's closing line)."""
    outcome: dict[str, Any] = field(default_factory=dict)
    """What the recorder concluded, e.g. tau-bench's ``reward``; empty when nothing."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Identifying fields of the source (``task_id``, ``trial``, ``trace_id``...)."""
    failed: str | None = None
    """Why the run failed, when the recorder says it did (an error span)."""

    @property
    def steps(self) -> int:
        return len(self.turns)
