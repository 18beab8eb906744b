"""The JSON API under ``/api/``: every page's data and every action.

Shapes are the CLI's ``--json`` ones (a run is ``tether runs --json``'s line, one run
``tether show --json``'s object, events ``tether events --json``'s, an approval
``tether approvals --json``'s with ``requested_run_time``, a plan ``tether rollback
--plan --json``'s); listings are JSON arrays of those lines. Errors are
``{"error": {"status", "kind", "message"}}`` (:mod:`tether.ui.errors`). Reads need a
recognised caller; changes also need the role for them and, for a caller not using a
Bearer token, the CSRF token (``GET /api/session`` gives it).
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from tether.core.events import KINDS
from tether.errors import UsageError
from tether.identity import PERMISSIONS
from tether.ops import Tether
from tether.reporting.query import window as query_window
from tether.reporting.query import zone
from tether.runinfo import run_json
from tether.store.records import RUN_STATUSES
from tether.ui import actions, views
from tether.ui.auth import Caller
from tether.ui.context import UiContext
from tether.ui.deps import (
    actor,
    context,
    credentials,
    csrf_for,
    principal,
    reader,
    require,
    set_csrf_cookie,
)
from tether.ui.graph import graph
from tether.ui.live import sse_event

__all__ = ["router"]

router = APIRouter(prefix="/api")
Reader = Annotated[Tether, Depends(reader)]
Ctx = Annotated[UiContext, Depends(context)]
Json = dict[str, Any]
MAX_SEQ = 2**62
"""The largest sequence number or count a query takes (SQLite's integers are 64-bit)."""


class Body(BaseModel):
    # Strict: "yes" is not true and "5" is not 5 (a JSON client says what it means).
    model_config = {"extra": "forbid", "strict": True}


class ApproveBody(Body):
    note: str | None = Field(None, description="Why, for the record.")
    arguments: dict[str, Any] | None = Field(
        None, description="Run with these arguments instead, checked against the tool's schema.")
    always: bool = Field(False, description="Always allow this tool for this run from now on.")


class DenyBody(Body):
    reason: str = Field(min_length=1, description="Why; the agent's model is told.")


class BudgetBody(Body):
    set: dict[str, float] = Field(default_factory=dict, description="Caps to set, e.g. "
                                  "{\"cost_usd\": 5}.")
    unset: list[str] = Field(default_factory=list, description="Caps to remove.")


class ResolveBody(Body):
    resolution: Literal["done", "not_done", "retry"]
    result: Any = Field(None, description="With done: what the agent sees as the result.")


class AckBody(Body):
    note: str | None = None


class RollbackBody(Body):
    to: int = Field(ge=0, description="The step to go back to.")
    cascade: bool = False
    accept_irreversible: bool = False
    force: bool = False


class ForkBody(Body):
    at: int = Field(ge=0, description="The step to fork from.")
    edits: dict[str, Any] = Field(default_factory=dict, description="State keys to change.")
    name: str | None = None
    shared_workspace: bool = False


class PolicyBody(Body):
    text: str = Field(min_length=1, max_length=256_000,
                      description="The policy file's TOML text (as `tether policy apply` reads).")
    swarm: str | None = Field(None, description="Apply to this swarm only (default: the store).")


class QuarantineBody(Body):
    reason: str = ""


def _done(d: actions.Done) -> Json:
    return {"message": d.message, "result": d.result}


# -- who, and live updates -------------------------------------------------------------

@router.get("/session", summary="Who you are, your role, what it permits, and the CSRF "
                               "token for changes")
def session(request: Request, ctx: Ctx, who: Annotated[Caller, Depends(principal)]
            ) -> JSONResponse:
    token, seed = csrf_for(request, ctx)
    resp = JSONResponse({**who.to_json(), "may": [a for a in PERMISSIONS if who.can(a)],
                         "csrf": token})
    set_csrf_cookie(resp, seed)
    return resp


@router.get("/live", summary="Server-sent events: `change` after every commit to the store",
            response_class=StreamingResponse, dependencies=[Depends(reader)])
async def live(request: Request, ctx: Ctx) -> StreamingResponse:
    creds = credentials(request)
    token = request.state.caller.via != "loopback"

    async def stream() -> Any:
        async with ctx.poller.subscribe() as q:
            yield b"retry: 2000\n\n" + sse_event("hello", orjson.dumps(
                {"batch": ctx.poller.head}).decode(), id_=ctx.poller.head)
            while True:
                try:
                    head = await asyncio.wait_for(q.get(), timeout=15)
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                if head < 0 or await request.is_disconnected():
                    return
                if token and await asyncio.to_thread(ctx.auth.resolve, creds) is None:
                    return  # its token was revoked (or its session ended): so does the stream
                yield sse_event("change", orjson.dumps({"batch": head}).decode(), id_=head)
    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


# -- pages' data -------------------------------------------------------------------------

@router.get("/overview", summary="Every swarm and run, what waits for a person first")
def overview(t: Reader) -> Json:
    return views.overview(t)


@router.get("/needs", summary="Everything only a person can settle")
def needs(t: Reader) -> Json:
    return views.needs(t)


@router.get("/graph", summary="The swarm graph; with focus=RUN@STEP, its impact and cascade plan")
def swarm_graph(t: Reader, focus: str | None = None, epoch: int | None = None) -> Json:
    return graph(t, focus or None, epoch)


@router.get("/report", summary="The night report (tether report) of a window")
def report(t: Reader, since: str | None = "24h", until: str | None = None,
           tz: str | None = None) -> Json:
    lo, hi = query_window(t.store, since, until, zone(tz))
    return views.report_data(t, lo, hi, zone(tz))


@router.get("/audit", summary="The last signed checkpoint and this server's last verify")
def audit(t: Reader, ctx: Ctx) -> Json:
    return views.audit_status(t, ctx.last_verify)


@router.post("/audit/verify", summary="Verify every chain now (tether audit verify)")
def verify(t: Annotated[Tether, Depends(actor("read"))], ctx: Ctx) -> Json:
    from tether.system_clock import SYSTEM_CLOCK
    ctx.last_verify = {**t.verify().to_json(), "at": SYSTEM_CLOCK.now(), "by": t.who}
    return ctx.last_verify


@router.get("/policy", summary="The policy in force (tether policy show)")
def policy(t: Reader, swarm: str | None = None) -> Json:
    return actions.policy_json(t.policy(swarm))


@router.post("/policy", summary="Check a policy and put it in force (tether policy apply)")
def apply_policy(body: PolicyBody,
                 t: Annotated[Tether, Depends(actor("policy_apply"))]) -> Json:
    return _done(actions.apply_policy(t, body.text, body.swarm))


# -- runs --------------------------------------------------------------------------------

@router.get("/runs", summary="Runs, newest first (tether runs --json)")
def runs(t: Reader, status: str | None = None, swarm: str | None = None) -> list[Json]:
    if status is not None and status not in RUN_STATUSES:
        raise UsageError(f"unknown status {status!r}; one of {', '.join(RUN_STATUSES)}")
    return [run_json(r) for r in t.runs(status=status, swarm=swarm)]


@router.get("/runs/{run}", summary="One run (tether show --json)")
def show(t: Reader, run: str) -> Json:
    return t.show(run)


@router.get("/runs/{run}/events", summary="A run's events (tether events --json)")
def events(t: Reader, run: str, after: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0,
           kind: str | None = None,
           limit: Annotated[int | None, Query(ge=1, le=MAX_SEQ)] = None
           ) -> list[Json]:
    if kind is not None and kind not in KINDS:
        raise UsageError(f"unknown event kind {kind!r} (docs/events.md lists them)")
    return [views.event_json(e) for e in t.events(run, after=after, kind=kind, limit=limit)]


@router.get("/runs/{run}/state", summary="The run's state after a step (tether state)")
def state(t: Reader, run: str, step: Annotated[int | None, Query(ge=0)] = None) -> Json:
    s = t.state(run, step)
    return {"run": s.run.id, "step": s.step, "state": s.state}


@router.get("/runs/{run}/diff", summary="What changed in the state between two steps")
def diff(t: Reader, run: str, a: Annotated[int, Query(ge=0, alias="from")],
         b: Annotated[int | None, Query(ge=0, alias="to")] = None) -> list[Json]:
    return [c.to_json() for c in t.state_diff(run, a, b)]


@router.get("/runs/{run}/checkpoints", summary="The run's checkpoints (tether checkpoints --json)")
def checkpoints(t: Reader, run: str) -> list[Json]:
    row = t.run(run)
    return [{"run": row.id, **c.to_json()} for c in t.checkpoints(row.id)]


@router.get("/runs/{run}/rollback-plan", summary="What a rollback would do; changes nothing")
def rollback_plan(t: Reader, run: str, to: Annotated[int, Query(ge=0)],
                  cascade: bool = False) -> Json:
    p = t.cascade_plan(run, to) if cascade else t.rollback_plan(run, to)
    return {"done": False, **p.to_json(), "lines": p.lines()}


@router.get("/runs/{run}/fork-plan", summary="What a fork's child may repeat; changes nothing")
def fork_plan(t: Reader, run: str, at: Annotated[int, Query(ge=0)]) -> Json:
    return {"lines": t.fork_plan(run, at)}


def _command(kind: str) -> Any:
    # The dependency is a default value: an annotation naming ``kind`` could not be
    # resolved later (annotations are strings here, read in the module's namespace).
    def route(run: str, t: Tether = Depends(actor(kind))) -> Json:  # noqa: B008
        return _done(actions.command(t, run, kind))
    route.__name__ = kind
    return route


for _kind in ("pause", "resume", "stop"):
    router.post(f"/runs/{{run}}/{_kind}", summary=f"{_kind.capitalize()} the run",
                name=_kind)(_command(_kind))


@router.post("/runs/{run}/budget", summary="Change the run's budget caps")
def budget(run: str, body: BudgetBody, t: Annotated[Tether, Depends(actor("budget"))]) -> Json:
    return _done(actions.budget(t, run, body.set, body.unset))


@router.post("/runs/{run}/rollback", summary="Roll the run (cascade: and what it reached) back")
def rollback(run: str, body: RollbackBody, request: Request,
             t: Annotated[Tether, Depends(actor("rollback"))]) -> Json:
    if body.cascade:
        require(request, "cascade")
    return _done(actions.rollback(t, run, body.to, cascade=body.cascade,
                                  accept_irreversible=body.accept_irreversible, force=body.force))


@router.post("/runs/{run}/fork", summary="Start a new run from a step, with state edits")
def fork(run: str, body: ForkBody, t: Annotated[Tether, Depends(actor("fork"))]) -> Json:
    return _done(actions.fork(t, run, body.at, edits=body.edits, name=body.name,
                              shared_workspace=body.shared_workspace))


@router.post("/runs/{run}/quarantine", summary="Contain the run")
def quarantine(run: str, body: QuarantineBody,
               t: Annotated[Tether, Depends(actor("quarantine"))]) -> Json:
    return _done(actions.quarantine(t, run, body.reason))


@router.post("/runs/{run}/release", summary="Lift the run's quarantine")
def release(run: str, t: Annotated[Tether, Depends(actor("release"))]) -> Json:
    return _done(actions.release(t, run))


# -- approvals, effects, alerts ------------------------------------------------------------

@router.get("/approvals", summary="Approval requests (tether approvals --json)")
def approvals(t: Reader, run: str | None = None,
              every: Annotated[bool, Query(alias="all")] = False) -> list[Json]:
    return [views.approval_view(t, a) for a in t.approvals(run=run, pending=not every)]


@router.get("/approvals/{approval}/schema", summary="The JSON schema edited arguments must fit")
def approval_schema(t: Reader, approval: str) -> Json:
    return t.approval_schema(approval)


@router.post("/approvals/{approval}/approve", summary="Approve, optionally with edited arguments")
def approve(approval: str, body: ApproveBody,
            t: Annotated[Tether, Depends(actor("approve"))]) -> Json:
    return _done(actions.approve(t, approval, note=body.note, arguments=body.arguments,
                                 always=body.always))


@router.post("/approvals/{approval}/deny", summary="Deny; the model is told the reason")
def deny(approval: str, body: DenyBody, t: Annotated[Tether, Depends(actor("deny"))]) -> Json:
    return _done(actions.deny(t, approval, body.reason))


@router.get("/effects", summary="Effects (status=in_doubt: those a person must settle)")
def effects(t: Reader, run: str | None = None, status: str | None = None) -> list[Json]:
    return [{"id": e.id, "run": e.run, "step": e.step, "tool": e.tool, "effect": e.effect,
             "status": e.status, "arguments": e.arguments}
            for e in t.effects(run=run, status=status)]


@router.post("/effects/{effect}/resolve", summary="Settle an in-doubt effect (tether resolve)")
def resolve(effect: str, body: ResolveBody,
            t: Annotated[Tether, Depends(actor("resolve"))]) -> Json:
    return _done(actions.resolve(t, effect, body.resolution, body.result))


@router.get("/alerts", summary="Monitor alerts (tether alerts --json)")
def alerts(t: Reader, run: str | None = None, unacked: bool = False) -> list[Json]:
    return [a.to_json() for a in t.alerts(run=run, unacked=unacked)]


@router.post("/alerts/{alert}/ack", summary="Acknowledge an alert")
def ack(alert: str, body: AckBody, t: Annotated[Tether, Depends(actor("acknowledge"))]) -> Json:
    return _done(actions.ack(t, alert, body.note))


@router.get("/impact", summary="Everything downstream of RUN@STEP or an event (tether impact)")
def impact(t: Reader, ref: str, epoch: int | None = None) -> Json:
    return t.impact(ref, epoch=epoch).to_json()
