"""Needs a human: approvals, in-doubt effects, paused and quarantined runs, alerts; and
the forms that settle them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response

from tether.errors import UsageError
from tether.ops import Tether
from tether.ui import actions, views
from tether.ui.context import UiContext
from tether.ui.deps import actor, context, reader
from tether.ui.pages.common import attempt, checked, json_field, page

router = APIRouter(include_in_schema=False)
Field = Annotated[str | None, Form()]


@router.get("/needs")
def needs(request: Request, t: Annotated[Tether, Depends(reader)],
          ctx: Annotated[UiContext, Depends(context)]) -> Response:
    return page(request, ctx, "needs.html", lambda: {"view": views.needs(t), "nav": "needs"})


@router.post("/approvals/{approval}/approve")
def approve(approval: str, t: Annotated[Tether, Depends(actor("approve"))],
            note: Field = None, arguments: Field = None, original: Field = None,
            always: Field = None, next: Field = None) -> Response:
    def act() -> actions.Done:
        edited = json_field(arguments, "edited arguments")
        # The form shows the proposed arguments to edit: unchanged, they are no edit.
        if edited is not None and original is not None and \
                edited == json_field(original, "proposed arguments"):
            edited = None
        return actions.approve(t, approval, note=note or None, arguments=edited,
                               always=checked(always))
    return attempt(next, "/needs", act)


@router.post("/approvals/{approval}/deny")
def deny(approval: str, t: Annotated[Tether, Depends(actor("deny"))],
         reason: Field = None, next: Field = None) -> Response:
    def act() -> actions.Done:
        if not reason or not reason.strip():
            raise UsageError(f"deny {approval}: give a reason; the agent's model is told why")
        return actions.deny(t, approval, reason)
    return attempt(next, "/needs", act)


@router.post("/effects/{effect}/resolve")
def resolve(effect: str, t: Annotated[Tether, Depends(actor("resolve"))],
            resolution: Field = None, result: Field = None,
            next: Field = None) -> Response:
    def act() -> actions.Done:
        if resolution not in ("done", "not_done", "retry"):
            raise UsageError(f"resolve {effect}: choose done, not_done or retry")
        return actions.resolve(t, effect, resolution,
                               json_field(result, "result", obj=False))
    return attempt(next, "/needs", act)


@router.post("/alerts/{alert}/ack")
def ack(alert: str, t: Annotated[Tether, Depends(actor("acknowledge"))], note: Field = None,
        next: Field = None) -> Response:
    return attempt(next, "/needs", lambda: actions.ack(t, alert, note or None))
