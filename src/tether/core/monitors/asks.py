"""Asks: what a monitor needs from outside (an embedding, a model's opinion), and the
answers that come back as events.

A monitor never does I/O. One that needs a provider's help sets ``asking = True`` and
has an ``asks()`` method (:class:`Asking`): the host drains it at the run's safe points
and runs each :class:`Ask` off the hot path (a task on the worker's event loop), then
journals what came back as a ``monitor.answer`` event (:data:`ANSWER_KIND`) in the run's
chain. The monitor sees the answer as it sees any event, through ``observe``; so a
worker that takes the run over, replay and ``tether analyze`` feed it the very answers
the live run had, and never ask again.

An ask's id is derived from the run, the monitor and what prompted it
(:func:`ask_id`), so a monitor rebuilt from the journal asks the same questions under
the same ids: those already answered there are dropped when their answer goes past,
and only the ones still open are asked again. A failed call (an HTTP error, a timeout)
is an answer too, with ``error`` set: the monitor takes it as no information.

This module is the separate return path of the monitor contract: ``observe`` keeps
returning signals only, and a monitor that never asks needs nothing from here.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol, runtime_checkable

from tether.core.events import Event

ANSWER_KIND: Final = "monitor.answer"
AskKind = Literal["embeddings", "judge"]
ASK_KINDS: Final = ("embeddings", "judge")


def ask_id(run: str, monitor: str, key: str) -> str:
    """The id of ``monitor``'s ask about ``key`` (e.g. the id of the event that prompted
    it) in ``run``: the same inputs always give the same id."""
    h = hashlib.sha256(f"{run}\x00{monitor}\x00{key}".encode()).hexdigest()
    return f"ask_{h[:26]}"


@dataclass(frozen=True, slots=True)
class Ask:
    """One request for I/O, made by a monitor and run by the host."""

    id: str
    """From :func:`ask_id`: the same question asked again has the same id."""
    monitor: str
    kind: AskKind
    """``embeddings`` (payload ``{"input": [text, ...], "dimensions": n?}``, answer
    ``{"vectors": [[float, ...], ...]}``) or ``judge`` (payload ``{"messages": [...]}``
    in Chat Completions shape, answer ``{"content": text}``)."""
    model: str
    """The provider's model name (the policy's ``embeddings`` or ``judge``)."""
    payload: Mapping[str, Any]
    causes: tuple[str, ...] = ()
    """The events that prompted it: the ``causes`` of its answer event."""
    timeout: float = 30.0
    """Seconds the host gives one HTTP attempt."""


@dataclass(frozen=True, slots=True)
class Answer:
    """A ``monitor.answer`` event, read back (docs/events.md)."""

    ask: str
    monitor: str
    kind: str
    model: str
    answer: Mapping[str, Any] | None
    """None when the call failed."""
    error: str | None = None
    usage: Mapping[str, int] = field(default_factory=dict)
    event: str = ""
    """The id of the event it was read from."""

    def to_payload(self) -> dict[str, Any]:
        return {"ask": self.ask, "monitor": self.monitor, "kind": self.kind,
                "model": self.model, "answer": dict(self.answer) if self.answer else None,
                "error": self.error, "usage": dict(self.usage)}

    @classmethod
    def of(cls, e: Event) -> Answer | None:
        """The answer ``e`` carries, or None when ``e`` is not a well-formed one."""
        p = e.payload
        if e.kind != ANSWER_KIND or not isinstance(p, Mapping) or not isinstance(p.get("ask"),
                                                                                 str):
            return None
        got = p.get("answer")
        return cls(p["ask"], str(p.get("monitor")), str(p.get("kind")), str(p.get("model")),
                   got if isinstance(got, Mapping) else None,
                   str(p["error"]) if p.get("error") else None,
                   dict(p.get("usage") or {}), e.id)


@runtime_checkable
class Asking(Protocol):
    """A monitor that needs I/O (see the module docstring)."""

    name: str
    asking: bool
    """True when it may ask at all (e.g. a model is configured): the host is only set up
    for runs with such a monitor."""

    def asks(self) -> Iterable[Ask]:
        """The asks made since the last call (each once), oldest first."""
        ...


class Outbox:
    """A monitor's open asks: made, not answered yet (pure; rebuilt by replay)."""

    def __init__(self) -> None:
        self.open: dict[str, Ask] = {}
        self._sent: set[str] = set()

    def put(self, ask: Ask) -> None:
        self.open.setdefault(ask.id, ask)

    def take(self, answer: Answer) -> Ask | None:
        """The open ask ``answer`` answers (None: not one of ours, or answered before)."""
        self._sent.discard(answer.ask)
        return self.open.pop(answer.ask, None)

    def drain(self) -> list[Ask]:
        """Open asks not handed out yet (a monitor rebuilt from the journal hands out again
        those whose answer never came)."""
        out = [a for k, a in self.open.items() if k not in self._sent]
        self._sent.update(a.id for a in out)
        return out


def cosine(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Cosine similarity; None for vectors of different lengths or of zero length."""
    if len(a) != len(b) or not a:
        return None
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    na, nb = math.sqrt(sum(x * x for x in a)), math.sqrt(sum(y * y for y in b))
    return dot / (na * nb) if na and nb else None
