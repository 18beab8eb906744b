"""The worker's side of monitors' asks (:mod:`tether.core.monitors.asks`): run each one
off the hot path and journal what comes back.

At every safe point of the run (before a step, before a call) the host

1. journals the answers that came back since the last one, as ``monitor.answer``
   events (the run's monitors see them through the journal's listener, so a signal
   they give is an ``alert`` in the same commit, acted on at this very safe point);
2. drains the monitors' new asks and starts each as a task on the worker's event
   loop: no step waits for one.

Calls go to the run's OpenAI-compatible provider: the base URL and key of the agent's
model when it is an :class:`~tether.models.openai.OpenAIModel`, else
``OPENAI_BASE_URL`` and ``OPENAI_API_KEY``. A failed call (an HTTP error, a timeout, no
key) is journaled as an answer with ``error``, never raised. When the run leaves the
worker (done, paused, asleep) the host waits for the calls still out (a sleeping run: no
longer than it sleeps), journals them and makes them durable; what is still out then, or
when the worker drains or is cancelled, is dropped, and the next owner (whose monitors
are rebuilt from the journal and ask again what has no answer there) asks it again.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from tether.core.monitors.asks import ANSWER_KIND, Answer, Ask
from tether.core.monitors.watch import Watch
from tether.models.base import Model
from tether.runtime.stepping import StepRuntime

if TYPE_CHECKING:  # the openai client takes a quarter second to import: on first ask
    from tether.models.openai import OpenAIModel

log = logging.getLogger(__name__)

DIGITS = 6
"""Decimals kept of an embedding in the journal: far below what a cosine can tell apart,
and about half the bytes."""
RETRIES = 1
"""Retries of one ask: a monitor can go without an answer, a step cannot wait for one."""
ASK_HEADER = "X-Tether-Ask"
"""Sent with each call: the ask's id, the same if it is ever asked again (a provider-side
proxy may log or deduplicate by it)."""

DONE_KEPT = 4096
"""Ids of answered asks kept to refuse a monitor asking one again."""

Connect = Callable[[str, float, dict[str, Any] | None], "OpenAIModel"]


def connect_like(model: Model | None) -> Connect:
    """How to reach the monitors' models: the provider of the run's own model."""
    def connect(name: str, timeout: float, extra: dict[str, Any] | None) -> OpenAIModel:
        from tether.models.openai import OpenAIModel

        if isinstance(model, OpenAIModel):
            return model.sibling(name, timeout=timeout, max_retries=RETRIES, extra_body=extra)
        return OpenAIModel(name, timeout=timeout, max_retries=RETRIES, extra_body=extra)
    return connect


class AskHost:
    """One run's asks in flight (see the module docstring)."""

    def __init__(self, rt: StepRuntime, watch: Watch, connect: Connect) -> None:
        self.rt = rt
        self.watch = watch
        self.connect = connect
        self.flying: dict[str, tuple[Ask, asyncio.Task[Answer]]] = {}
        self.done: set[str] = set()
        """Asks answered while this host had the run (a monitor asking twice is not)."""
        self._models: dict[tuple[str, float, str], OpenAIModel] = {}

    @classmethod
    def build(cls, rt: StepRuntime, watch: Watch, model: Model | None) -> AskHost | None:
        """A host for the run, or None when none of its monitors ever asks."""
        return cls(rt, watch, connect_like(model)) if watch.asking() else None

    async def tick(self, step: int) -> None:
        """At a safe point: journal what came back, start what was asked."""
        self.land(step)
        self._start()

    def _start(self) -> None:
        for ask in self.watch.asks():
            if ask.id not in self.flying and ask.id not in self.done:
                task = asyncio.get_running_loop().create_task(self._call(ask))
                self.flying[ask.id] = (ask, task)

    def land(self, step: int) -> int:
        """Journal every answer that came back (in the order they were asked)."""
        landed = [k for k, (_, t) in self.flying.items() if t.done()]
        for k in landed:
            ask, task = self.flying.pop(k)
            if len(self.done) >= DONE_KEPT:
                self.done.clear()  # a guard only: the monitor's outbox forgets answered asks
            self.done.add(k)
            answer = task.result() if not task.cancelled() else _failed(ask, "cancelled")
            self.rt.journal.append(ANSWER_KIND, answer.to_payload(), step=step,
                                   causes=tuple(dict.fromkeys(ask.causes)))
        return len(landed)

    async def finish(self, flush: Callable[[], Awaitable[None]], *, wait: bool) -> None:
        """The run leaves the worker: wait for the asks still out (``wait``; for a sleeping
        run, no longer than its sleep) and journal them, or drop them (the next owner
        asks again); then close the clients."""
        try:
            row = self.rt.journal.row
            # A sleeping run's next step is not kept waiting: what is still out then is
            # dropped, and asked again by the worker that wakes it.
            left = (max(0.0, row.wake_at - self.rt.clock())
                    if row.status == "sleeping" and row.wake_at is not None else None)
            for _ in range(3 if wait else 0):  # an answer may ask again (a confirmation)
                self._start()
                if not self.flying:
                    break
                await asyncio.wait([t for _, t in self.flying.values()], timeout=left)
                if not self.land(row.step) or left is not None:
                    break
            if wait:
                await flush()
        finally:
            for _, t in self.flying.values():
                t.cancel()
            self.flying.clear()
            for m in self._models.values():
                await m.aclose()
            self._models.clear()

    async def _call(self, ask: Ask) -> Answer:
        """Ask the provider; any failure is an answer with ``error``."""
        try:
            if ask.kind == "embeddings":
                m = self._model(ask, None)
                dims = ask.payload.get("dimensions")
                vectors, usage = await m.embed(list(ask.payload["input"]),
                                               dimensions=int(dims) if dims else None,
                                               headers={ASK_HEADER: ask.id})
                if not all(math.isfinite(x) for v in vectors for x in v):
                    raise ValueError("the provider sent an embedding that is not all numbers")
                got: dict[str, Any] = {"vectors": [[round(x, DIGITS) for x in v]
                                                   for v in vectors]}
                model = m.name
            else:
                m = self._model(ask, {"response_format": {"type": "json_object"},
                                      "temperature": 0})
                resp = await m.complete(list(ask.payload["messages"]), [],
                                        headers={ASK_HEADER: ask.id})
                got, usage, model = {"content": resp.content}, resp.usage, resp.model or m.name
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the provider failed, or we did: no information, no crash
            log.warning("run %s: %s ask %s failed: %s", self.rt.journal.run, ask.kind, ask.id,
                        exc)
            return _failed(ask, f"{type(exc).__name__}: {exc}")
        return Answer(ask.id, ask.monitor, ask.kind, model, got, None,
                      {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens})

    def _model(self, ask: Ask, extra: dict[str, Any] | None) -> OpenAIModel:
        key = (ask.model, ask.timeout, ask.kind)
        m = self._models.get(key)
        if m is None:
            m = self._models[key] = self.connect(ask.model, ask.timeout, extra)
        return m


async def finish_asks(host: AskHost | None, flush: Callable[[], Awaitable[None]], *,
                      wait: bool) -> None:
    """:meth:`AskHost.finish`, for a run that may have no host."""
    if host is not None:
        await host.finish(flush, wait=wait)


def _failed(ask: Ask, error: str) -> Answer:
    return Answer(ask.id, ask.monitor, ask.kind, ask.model, None, error[:2000], {})
