"""A transcript's turns as tether's own events: what ``tether import`` journals and
``tether analyze`` feeds the monitors.

One turn is one step: ``step.started``, the ``model.called`` of the call (call
index 0, with the messages that were new to the model as ``request``), one
``tool.called`` per tool call the answer asked for (indexes 1, 2...), then
``step.finished``. The run opens with ``run.started`` (its spec marks it
imported: see :data:`~tether.core.transcripts.model.READ_ONLY_KEY`) and ends
with ``run.done`` (``run.failed`` when the recorder says the run failed).

Tool calls are journaled as ``tool.called`` whatever they did: a transcript does
not say whether a call changed the world, and an ``effect.intent`` would promise
an undo nobody recorded. A call whose arguments are not a JSON object is
journaled as tether journals a model's malformed call: ``rejected``, with
``raw_arguments``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

from tether.core.canonical import digest
from tether.core.fingerprint import ConversationHasher, fingerprint
from tether.core.transcripts.model import READ_ONLY_KEY, ToolUse, Transcript, Turn

ACTOR: Final = "system:import"
"""The actor of the events tether itself adds (the run's start and end)."""


@dataclass(frozen=True, slots=True)
class Planned:
    """One event to journal: what the chain needs besides its id and time."""

    kind: str
    payload: Any
    step: int
    actor: str
    time: float | None = None
    """When the transcript says it happened (None: the importer's clock)."""
    at: int | None = None
    """Where it comes from in the record (a message or span index)."""


def agent_ref(fmt: str) -> str:
    """The ``agent`` an imported run names: no worker can load it, by design."""
    return f"imported:{fmt}"


def started(t: Transcript, *, name: str, source: str) -> dict[str, Any]:
    """The ``run.started`` payload of an imported run."""
    mark = {"format": t.format, "source": source, "record": t.record, **t.meta}
    spec = {"agent": agent_ref(t.format), "agent_name": t.agent, "workspace": None,
            "definition": None, READ_ONLY_KEY: mark}
    return {"name": name, "agent": agent_ref(t.format), "goal": t.goal, "swarm": None,
            "budget": {}, "spec": spec, "parent": None}


def result_of(t: Transcript) -> dict[str, Any]:
    """What the run came to: the model's last answer, the recorder's outcome, and the
    messages after the last model call."""
    return {"answer": t.turns[-1].content if t.turns else None,
            "outcome": t.outcome or None, "after": list(t.trailing)}


def plan(t: Transcript, *, name: str, source: str) -> Iterator[Planned]:
    """Every event of the imported run but the step-0 ``checkpoint`` (the importer
    writes that, with the checkpoint body it stands for)."""
    first = t.turns[0].time if t.turns else None
    yield Planned("run.started", started(t, name=name, source=source), 0, ACTOR, first)
    hasher = ConversationHasher()
    conversation: list[Any] = []
    actor = f"agent:{t.agent}"
    for n, turn in enumerate(t.turns, start=1):
        yield Planned("step.started", {}, n, actor, turn.time, turn.at)
        conversation.extend(turn.request)
        fp = fingerprint("model", turn.model or t.model or "unknown",
                         digest([hasher.digest(conversation), []]))
        conversation.append(_assistant(turn))
        yield Planned("model.called", _model_called(t, turn, fp), n, actor, turn.time, turn.at)
        for i, use in enumerate(turn.tools, start=1):
            yield Planned("tool.called", tool_called(i, use), n, actor, turn.end, use.at)
        last = n == len(t.turns)
        outcome = {"outcome": "done", "result": result_of(t)} if last else {"outcome": "continue"}
        yield Planned("step.finished", outcome, n, actor, turn.end or turn.time, turn.at)
    end = t.turns[-1].end or t.turns[-1].time if t.turns else None
    if t.failed is not None:
        yield Planned("run.failed", {"error": t.failed}, len(t.turns), ACTOR, end)
    else:
        yield Planned("run.done", {"result": result_of(t)}, len(t.turns), ACTOR, end)


def _assistant(turn: Turn) -> dict[str, Any]:
    calls = [{"id": u.id, "type": "function",
              "function": {"name": u.name, "arguments": u.raw_arguments}} for u in turn.tools]
    out: dict[str, Any] = {"role": "assistant", "content": turn.content}
    if calls:
        out["tool_calls"] = calls
    return out


def _model_called(t: Transcript, turn: Turn, fp: str) -> dict[str, Any]:
    model = turn.model or t.model or "unknown"
    usage = {"input_tokens": int(turn.usage.get("input_tokens", 0)),
             "output_tokens": int(turn.usage.get("output_tokens", 0))}
    response = {"content": turn.content,
                "tool_calls": [{"id": u.id, "name": u.name, "arguments": u.raw_arguments}
                               for u in turn.tools],
                "usage": usage, "model": model, "finish_reason": turn.finish_reason}
    latency = (turn.end - turn.time) if turn.end is not None and turn.time is not None else None
    return {"i": 0, "fp": fp, "model": model, "request": {"messages": list(turn.request)},
            "response": response, "cost_usd": None, "latency_s": latency}


def tool_called(i: int, use: ToolUse) -> dict[str, Any]:
    """A ``tool.called`` payload as the worker writes one: success, error or rejected."""
    if use.arguments is None:
        return {"i": i, "fp": fingerprint("tool", use.name, digest(use.raw_arguments)),
                "tool": use.name, "raw_arguments": use.raw_arguments,
                "error": use.error or _text(use.result), "rejected": True}
    out: dict[str, Any] = {"i": i, "fp": fingerprint("tool", use.name, digest(use.arguments)),
                           "tool": use.name, "arguments": use.arguments}
    if use.error is not None:
        out["error"] = f"tool {use.name} failed: {use.error}"
    else:
        out["result"] = use.result
    return out


def _text(v: Any) -> str:
    return v if isinstance(v, str) else "" if v is None else str(v)
