"""Transcripts recorded elsewhere (OpenAI chat lists, tau-bench trajectories,
OpenTelemetry GenAI spans), read into one form and mapped onto tether's events.

Pure: the callers read the file (``tether.transcripts``) and hand over parsed
JSON values, one record at a time; see docs/guide.md "Importing transcripts".
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Final

from tether.core.transcripts.chat import ROLES, from_openai
from tether.core.transcripts.model import READ_ONLY_KEY, ToolUse, Transcript, Turn
from tether.core.transcripts.otel import from_trace, has_chat, traces
from tether.core.transcripts.spans import is_spans, spans_of
from tether.core.transcripts.taubench import from_taubench
from tether.errors import InvalidTranscript

FORMATS: Final = ("auto", "openai", "tau-bench", "otel")

__all__ = ["FORMATS", "READ_ONLY_KEY", "InvalidTranscript", "ToolUse", "Transcript", "Turn",
           "detect", "records_of", "transcripts"]


def detect(value: Any) -> str:
    """The format of one record (``auto``): tau-bench has ``traj``, spans have
    ``resourceSpans`` or a span ``context``, anything else is read as chat messages."""
    if isinstance(value, dict) and "traj" in value:
        return "tau-bench"
    if is_spans(value):
        return "otel"
    return "openai"


def records_of(value: Any) -> list[Any]:
    """The records in a whole-file JSON value: a list of runs, or a single run (one
    message list, one tau-bench object, one span export)."""
    if isinstance(value, list) and value and all(_is_message(m) for m in value):
        return [value]  # one conversation
    if isinstance(value, list) and not is_spans(value):
        return value
    return [value]


def _is_message(m: Any) -> bool:
    return isinstance(m, dict) and m.get("role") in ROLES


def transcripts(records: Iterable[Any], fmt: str = "auto") -> Iterator[Transcript]:
    """The runs in ``records`` (parsed JSON values, in file order). Chat and tau-bench
    records are one run each, read as they come; spans are gathered first, since a
    trace's spans may be anywhere in the file, and make one run per trace."""
    if fmt not in FORMATS:
        raise InvalidTranscript(None, "--format", f"{fmt!r} is not a format; use one of "
                                f"{', '.join(FORMATS)}")
    spans: list[Any] = []
    for n, value in enumerate(records):
        kind = detect(value) if fmt == "auto" else fmt
        if kind == "otel":
            spans.extend(spans_of(value, len(spans)))
        elif kind == "tau-bench":
            yield from_taubench(value, n)
        else:
            yield from_openai(value, n)
    runs = [t for t in traces(spans) if has_chat(t)]  # other traces (HTTP...) are no runs
    for n, trace in enumerate(runs):
        yield from_trace(trace, n)
