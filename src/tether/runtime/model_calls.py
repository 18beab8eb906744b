"""A step's model calls, journaled: tether's own chat shape, and any framework's.

Both kinds go through one path: the run's safe point, its budget, the policy's
model rules, the call, its price, secrets redacted, ``model.called`` journaled
before the step sees the answer; on replay the journaled answer is returned and
nothing is called.

A framework (PydanticAI, the OpenAI Agents SDK, LangGraph) has its own request
and response types. Its adapter calls :meth:`ModelCalls.foreign` with the
request as JSON (what the fingerprint covers) and a coroutine that makes the
call and returns a :class:`~tether.models.base.ForeignResponse`: the response
in tether's chat shape (``response``: what monitors, telemetry, reports and the
dashboard read) and the framework's own serialised response (``raw``: what a
replay hands back to the framework).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from tether.core.canonical import digest
from tether.core.fingerprint import fingerprint
from tether.errors import ModelError, PauseRequested
from tether.models.base import ForeignCall, ForeignResponse, Message, Model, ModelResponse, ToolSpec
from tether.runtime.services import StepServices
from tether.runtime.stepping import StepCalls


class ModelCalls:
    """The model calls of one step."""

    __slots__ = ("_c", "_s", "step")

    def __init__(self, services: StepServices, calls: StepCalls, step: int) -> None:
        self._s = services
        self._c = calls
        self.step = step

    async def chat(self, m: Model, messages: Sequence[Message],
                   specs: list[ToolSpec]) -> ModelResponse:
        """Ask a tether :class:`~tether.models.base.Model`; journaled before it returns."""
        fp = fingerprint("model", m.name, digest([self._s.hasher.digest(messages), specs]))

        async def call() -> ForeignResponse:
            return ForeignResponse(await m.complete(messages, specs), None)
        resp, _ = await self._journaled(m.name, fp, call, raw=False)
        return resp

    async def foreign(self, name: str, request: Any, call: ForeignCall) -> Any:
        """Make a framework's model call through the journal; return its raw response
        (redacted as the journal keeps it), live or replayed."""
        fp = fingerprint("model", name, digest(["foreign", request]))
        _, raw = await self._journaled(name, fp, call, raw=True)
        return raw

    async def _journaled(self, name: str, fp: str, call: ForeignCall,
                         *, raw: bool) -> tuple[ModelResponse, Any]:
        i = self._c.next()
        async with self._c.turn(i):
            return await self._numbered(i, name, fp, call, raw=raw)

    async def _numbered(self, i: int, name: str, fp: str, call: ForeignCall,
                        *, raw: bool) -> tuple[ModelResponse, Any]:
        s, c, rt = self._s, self._c, self._c.rt
        rec = c.recorded(i, "model.called", fp, f"model {name}")
        if rec is not None:
            p = rec.call.payload
            if raw and "raw" not in p:
                rt.nondeterminism(self.step, i, expected="a chat call (ctx.model)",
                                  got=f"a framework's call of model {name}")
            s.effects.passed_over(c.skip_inner(i))  # not made: nor any call made inside it
            return ModelResponse.from_json(p["response"]), p.get("raw")
        await self._gate(name, i)
        t0 = asyncio.get_running_loop().time()
        try:
            with rt:
                got = await call()
        except ModelError as exc:
            raise self._paused(name, exc) from exc
        latency = asyncio.get_running_loop().time() - t0
        resp = got.response
        # Price by the name we asked for: it is what the operator configured prices for.
        cost = s.prices.cost(name if name in s.prices.prices else (resp.model or name),
                             resp.usage.input_tokens, resp.usage.output_tokens)
        # Redacted before the step sees it: the step sees what the journal keeps, live as
        # on replay, and a secret a model repeats never reaches a tool or the store.
        said = resp.to_json()
        shown = s.redactor.redact(said)
        payload: dict[str, Any] = {"i": i, **c.within(i), "fp": fp, "model": name, "response": shown,
                                   "cost_usd": cost, "latency_s": round(latency, 6)}
        shown_raw = None
        if raw:
            payload["raw"] = shown_raw = s.redactor.redact(got.raw)
        rt.journal.append("model.called", payload, step=self.step, actor=rt.actor)
        s.budget.count({"input_tokens": resp.usage.input_tokens,
                        "output_tokens": resp.usage.output_tokens, "cost_usd": cost})
        return (resp if shown is said else ModelResponse.from_json(shown)), shown_raw

    def _paused(self, name: str, exc: ModelError) -> PauseRequested:
        """The pause a provider's failure asks for. Redacted: a provider's error may quote
        the request or the key it refused ("Incorrect API key provided: sk-..."), and the
        reason is stored, shown and notified."""
        red = self._s.redactor.redact
        return PauseRequested(
            red(f"model {name} failed at step {self.step}: {exc}; the run is paused, "
                "resume it with `tether resume` once the provider is back"),
            detail={"provider_message": red(exc.provider_message), "retryable": exc.retryable})

    async def _gate(self, name: str, i: int) -> None:
        """What must hold before a live call: no stop or pause asked, budget left, the
        model priced, the policy's model rules."""
        s = self._s
        await self._c.rt.safe_point(self.step)
        s.budget.check()
        s.budget.check_priced(name)
        await s.oversight.check_model(name, i, self.step)
