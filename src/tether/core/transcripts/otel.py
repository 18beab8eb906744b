"""OpenTelemetry GenAI spans as transcripts: one trace is one run.

Read per the GenAI semantic conventions: a span whose ``gen_ai.operation.name``
is ``chat`` (or ``text_completion``, ``generate_content``) is one model call; its
``gen_ai.input.messages`` and ``gen_ai.output.messages`` (JSON text of messages
made of ``parts``: ``text``, ``tool_call``, ``tool_call_response``) give the
request and the answer, ``gen_ai.usage.input_tokens`` / ``output_tokens`` and
``gen_ai.request.model`` / ``gen_ai.response.model`` the rest. An
``execute_tool`` span (``gen_ai.tool.name``, ``gen_ai.tool.call.id``,
``gen_ai.tool.call.arguments`` / ``.result``) gives a tool call's result; without
one, the ``tool_call_response`` part the next chat call was sent gives it. An
ERROR status on any span of the trace makes the run failed. Spans recorded
without message content (the instrumentations' default) still give the steps,
models and usage; their answers are empty.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from tether.core.canonical import dumps, loads
from tether.core.transcripts.chat import goal_of
from tether.core.transcripts.model import ToolUse, Transcript, Turn
from tether.core.transcripts.spans import Span
from tether.errors import InvalidTranscript

CHAT_OPS: Final = frozenset({"chat", "text_completion", "generate_content"})
OP: Final = "gen_ai.operation.name"


def traces(spans: Iterable[Span]) -> list[list[Span]]:
    """Spans grouped by trace, traces in order of their first span in the file."""
    by: dict[str, list[Span]] = {}
    for s in spans:
        by.setdefault(s.trace, []).append(s)
    return list(by.values())


def has_chat(spans: list[Span]) -> bool:
    """Whether a trace holds a GenAI model call (else it is no agent run)."""
    return any(s.attrs.get(OP) in CHAT_OPS for s in spans)


def from_trace(spans: list[Span], record: int) -> Transcript:
    """One trace's GenAI spans as a run."""
    order = sorted(spans, key=lambda s: (s.start or 0.0, s.index))
    chats = [s for s in order if s.attrs.get(OP) in CHAT_OPS]
    if not chats:
        raise InvalidTranscript(record, f"trace {spans[0].trace}", "has no GenAI chat span "
                                f"({OP} = chat): nothing the model did to import")
    results = {str(s.attrs.get("gen_ai.tool.call.id")): s for s in order
               if s.attrs.get(OP) == "execute_tool"}
    seen: list[Any] = []
    turns = []
    for s in chats:
        inputs = [_chat(m) for m in _messages(s, "gen_ai.input.messages", record)]
        new = inputs[len(seen):] if inputs[:len(seen)] == seen else inputs
        output = _messages(s, "gen_ai.output.messages", record)
        turns.append(_turn(s, new, output[0] if output else None, record))
        seen = [*inputs, _assistant(turns[-1])]
    turns = _attach(turns, results, chats, record)
    first_msgs = [_chat(m) for m in _messages(chats[0], "gen_ai.input.messages", record)]
    failed = next((f"span {s.name!r} ended with an error: {s.error}" for s in order
                   if s.error is not None), None)
    agent = next((str(s.attrs["gen_ai.agent.name"]) for s in order
                  if "gen_ai.agent.name" in s.attrs), None)
    return Transcript(record=record, format="otel", turns=tuple(turns),
                      goal=goal_of(first_msgs),
                      agent=agent or str(order[0].resource.get("service.name") or "imported"),
                      meta={"trace_id": spans[0].trace}, failed=failed)


def _messages(s: Span, key: str, record: int) -> list[dict[str, Any]]:
    raw = s.attrs.get(key)
    if raw is None:
        return []
    try:
        value = loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        raise InvalidTranscript(record, f"spans[{s.index}].attributes.{key}",
                                "is not JSON text") from None
    if not isinstance(value, list) or not all(isinstance(m, dict) for m in value):
        raise InvalidTranscript(record, f"spans[{s.index}].attributes.{key}",
                                "must be a list of messages")
    return value


def _chat(m: dict[str, Any]) -> dict[str, Any]:
    """A GenAI message (role + parts) in chat form (role + content, tool calls)."""
    parts = m.get("parts") or []
    out: dict[str, Any] = {"role": m.get("role")}
    texts = [p.get("content") for p in parts if p.get("type") == "text"]
    out["content"] = "".join(str(t) for t in texts) if texts else None
    calls = [p for p in parts if p.get("type") == "tool_call"]
    if calls:
        out["tool_calls"] = [{"id": c.get("id"), "type": "function",
                              "function": {"name": c.get("name"),
                                           "arguments": _raw(c.get("arguments"))}}
                             for c in calls]
    answers = [p for p in parts if p.get("type") == "tool_call_response"]
    if answers:
        out["tool_call_id"] = answers[0].get("id")
        out["content"] = answers[0].get("response")
    return out


def _turn(s: Span, new: list[Any], output: dict[str, Any] | None, record: int) -> Turn:
    answer: dict[str, Any] = _chat(output) if output is not None else {"content": None}
    calls: list[dict[str, Any]] = answer.get("tool_calls", [])
    uses = []
    for k, c in enumerate(calls):
        name, cid = c["function"]["name"], c.get("id")
        if not name or not cid:
            raise InvalidTranscript(record, f"spans[{s.index}].attributes.gen_ai.output."
                                    f"messages[0].parts[{k}]", "a tool_call needs id and name")
        raw = c["function"]["arguments"]
        parsed = _parsed(raw)
        uses.append(ToolUse(str(cid), str(name), raw, parsed))
    finish = (output or {}).get("finish_reason") or _first(s.attrs.get("gen_ai.response.finish_reasons"))
    usage = {k: int(s.attrs[f"gen_ai.usage.{k}"]) for k in ("input_tokens", "output_tokens")
             if isinstance(s.attrs.get(f"gen_ai.usage.{k}"), int | float)}
    model = s.attrs.get("gen_ai.response.model") or s.attrs.get("gen_ai.request.model") or ""
    return Turn(request=tuple(new), content=answer.get("content"), tools=tuple(uses),
                model=str(model), usage=usage, finish_reason=finish, time=s.start, end=s.end,
                at=s.index)


def _attach(turns: list[Turn], tools: dict[str, Span], chats: list[Span],
            record: int) -> list[Turn]:
    """Give each tool call its result: its execute_tool span, else the next call's input."""
    out = []
    for n, turn in enumerate(turns):
        later = turns[n + 1].request if n + 1 < len(turns) else ()
        answered = {m.get("tool_call_id"): m.get("content") for m in later
                    if isinstance(m, dict) and m.get("role") == "tool"}
        uses = []
        for k, u in enumerate(turn.tools):
            span = tools.get(u.id)
            if span is not None:
                err = span.error
                res = span.attrs.get("gen_ai.tool.call.result")
                uses.append(ToolUse(u.id, u.name, u.raw_arguments, u.arguments,
                                    None if err else res, err, span.index))
            elif u.id in answered:
                uses.append(ToolUse(u.id, u.name, u.raw_arguments, u.arguments,
                                    answered[u.id], None, chats[n + 1].index))
            else:
                raise InvalidTranscript(record, f"spans[{chats[n].index}].attributes.gen_ai."
                                        f"output.messages[0].parts[{k}]",
                                        f"tool call {u.id!r} ({u.name}) has no result: no "
                                        "execute_tool span and no later chat call answers it")
        out.append(Turn(turn.request, turn.content, tuple(uses), turn.model, turn.usage,
                        turn.finish_reason, turn.time, turn.end, turn.at))
    return out


def _assistant(turn: Turn) -> dict[str, Any]:
    out: dict[str, Any] = {"role": "assistant", "content": turn.content}
    if turn.tools:
        out["tool_calls"] = [{"id": u.id, "type": "function",
                              "function": {"name": u.name, "arguments": u.raw_arguments}}
                             for u in turn.tools]
    return out


def _raw(args: Any) -> str:
    return args if isinstance(args, str) else dumps(args if args is not None else {}).decode()


def _parsed(raw: str) -> dict[str, Any] | None:
    try:
        v = loads(raw) if raw.strip() else {}
    except ValueError:
        return None
    return v if isinstance(v, dict) else None


def _first(v: Any) -> str | None:
    return str(v[0]) if isinstance(v, list) and v else None
