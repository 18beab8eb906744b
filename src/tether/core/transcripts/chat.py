"""OpenAI chat-format message lists (``role``, ``content``, ``tool_calls``, ``tool``
messages) read as turns.

Each ``assistant`` message is one model call: its request is every message
added since the previous assistant message, its ``tool_calls`` are the calls it
asked for, and the ``tool`` messages that follow (matched by ``tool_call_id``)
are their results. A tool call with no ``tool`` message, or a ``tool`` message
answering no open call, is a broken transcript: :class:`InvalidTranscript`
names the record and the message.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

from tether.core.canonical import dumps, loads
from tether.core.transcripts.model import ToolUse, Transcript, Turn
from tether.errors import InvalidTranscript

ROLES: Final = frozenset({"system", "developer", "user", "assistant", "tool", "function"})

ErrorOf = Callable[[str], str | None]
"""Tells a tool result that reports a failure from one that does not: the error text,
or None (a format's convention, e.g. tau-bench's ``Error: ...``)."""


def no_errors(content: str) -> str | None:
    return None


class _Reader:
    """Reads one record's messages in order; state: the calls still waiting for results."""

    def __init__(self, record: int, where: str, error_of: ErrorOf) -> None:
        self.record, self.where, self.error_of = record, where, error_of
        self.turns: list[Turn] = []
        self.pending: list[Any] = []
        self.open: dict[str, tuple[int, int, ToolUse]] = {}
        """Open calls of the last turn by id: (message index, call index, call)."""

    def fail(self, field: str, problem: str) -> InvalidTranscript:
        return InvalidTranscript(self.record, f"{self.where}{field}", problem)

    def message(self, i: int, m: Any) -> None:
        if not isinstance(m, dict):
            raise self.fail(f"[{i}]", f"a message must be an object, not {type(m).__name__}")
        role = m.get("role")
        if role not in ROLES:
            raise self.fail(f"[{i}].role", f"{role!r} is not a chat role; use one of "
                            f"{', '.join(sorted(ROLES))}")
        if role == "assistant":
            self._assistant(i, m)
            return
        if role in ("tool", "function"):
            self._result(i, m)
        self.pending.append(m)

    def _assistant(self, i: int, m: dict[str, Any]) -> None:
        self._close(i)
        calls = m.get("tool_calls") or []
        if not isinstance(calls, list):
            raise self.fail(f"[{i}].tool_calls", "must be a list of tool calls")
        uses = [self._call(i, k, c) for k, c in enumerate(calls)]
        self.open = {u.id: (i, k, u) for k, u in enumerate(uses)}
        finish = m.get("finish_reason") or ("tool_calls" if uses else "stop")
        self.turns.append(Turn(request=tuple(self.pending), content=m.get("content"),
                               tools=tuple(uses), finish_reason=str(finish), at=i))
        self.pending = []

    def _call(self, i: int, k: int, c: Any) -> ToolUse:
        f = c.get("function") if isinstance(c, dict) else None
        if not isinstance(f, dict) or not isinstance(f.get("name"), str) or not f["name"]:
            raise self.fail(f"[{i}].tool_calls[{k}].function.name", "missing: a tool call "
                            "needs {\"function\": {\"name\", \"arguments\"}}")
        cid = c.get("id")
        if not isinstance(cid, str) or not cid:
            raise self.fail(f"[{i}].tool_calls[{k}].id", "missing: the tool message that "
                            "answers the call names it as tool_call_id")
        raw = f.get("arguments", "{}")
        raw = raw if isinstance(raw, str) else _text(raw)
        try:
            parsed = loads(raw) if raw.strip() else {}
        except ValueError:
            parsed = None
        return ToolUse(id=cid, name=f["name"], raw_arguments=raw,
                       arguments=parsed if isinstance(parsed, dict) else None)

    def _result(self, i: int, m: dict[str, Any]) -> None:
        cid = m.get("tool_call_id")
        if not self.open:
            raise self.fail(f"[{i}].tool_call_id", f"{cid!r} answers no tool call: no "
                            "assistant message before it asked for one")
        if cid is None and len(self.open) == 1:  # old `function` messages carry no id
            cid = next(iter(self.open))
        if cid not in self.open:
            raise self.fail(f"[{i}].tool_call_id", f"{cid!r} is not one of the open tool "
                            f"calls ({', '.join(sorted(self.open))})")
        _, _, use = self.open.pop(str(cid))
        content = m.get("content")
        err = self.error_of(content) if isinstance(content, str) else None
        turn = self.turns[-1]
        tools = tuple(ToolUse(u.id, u.name, u.raw_arguments, u.arguments,
                              None if err else content, err, i) if u is use else u
                      for u in turn.tools)
        self.turns[-1] = Turn(turn.request, turn.content, tools, turn.model, turn.usage,
                              turn.finish_reason, turn.time, turn.end, turn.at)

    def _close(self, i: int) -> None:
        """Every call of the last turn must have had its result before the next turn."""
        if self.open:
            at, k, use = next(iter(self.open.values()))
            raise self.fail(f"[{at}].tool_calls[{k}]", f"tool call {use.id!r} ({use.name}) "
                            "has no tool message; the transcript looks cut off or edited")


def read_messages(messages: Any, record: int, *, where: str = "messages",
                  error_of: ErrorOf = no_errors) -> tuple[list[Turn], list[Any]]:
    """The turns of one message list and the messages after its last model call."""
    if not isinstance(messages, list):
        raise InvalidTranscript(record, where, "must be a list of chat messages, not "
                                f"{type(messages).__name__}")
    r = _Reader(record, where, error_of)
    for i, m in enumerate(messages):
        r.message(i, m)
    r._close(len(messages))
    if not r.turns:
        raise InvalidTranscript(record, where, "has no assistant message: nothing the model "
                                "did to import")
    return r.turns, r.pending


def goal_of(messages: Sequence[Any]) -> str:
    """The run's goal: the first user message's text."""
    for m in messages:
        if isinstance(m, dict) and m.get("role") == "user":
            c = m.get("content")
            return c if isinstance(c, str) else _text(c)
    return ""


def from_openai(value: Any, record: int) -> Transcript:
    """One OpenAI chat-format record: a message list, or an object with ``messages``."""
    meta: dict[str, Any] = {}
    messages = value
    if isinstance(value, dict) and "messages" in value:
        messages = value["messages"]
        meta = {k: v for k, v in value.items() if k != "messages" and _scalar(v)}
    turns, trailing = read_messages(messages, record)
    return Transcript(record=record, format="openai", turns=tuple(turns),
                      goal=goal_of(messages), trailing=tuple(trailing), meta=meta,
                      model=str(meta.get("model", "")))


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, str | int | float | bool)


def _text(v: Any) -> str:
    return dumps(v).decode()
