"""Run: the step timeline, state at a step and between two, and the run's controls
(pause, resume, stop, budget, rollback with its plan first, fork, quarantine)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response

from tether.core.budget import parse_cap
from tether.errors import UsageError
from tether.ops import Tether
from tether.ui import actions, views
from tether.ui.context import UiContext
from tether.ui.deps import actor, context, reader, require
from tether.ui.pages.common import attempt, checked, json_field, page, wants_live

router = APIRouter(include_in_schema=False)
Field = Annotated[str | None, Form()]
TIMELINE = 400
"""Events the timeline shows at once (the newest; ``?after=SEQ`` pages back)."""
SEQ_HEADER = "x-tether-seq"
"""The header in which an open run page's script says the last event it shows."""


def _int(text: str | None, name: str) -> int | None:
    if text is None or not text.strip():
        return None
    try:
        n = int(text)
    except ValueError:
        raise UsageError(f"{name}: {text!r} is not a step number") from None
    if n < 0:
        raise UsageError(f"{name}: steps are numbered from 0 (the start state)")
    return n


def run_view(t: Tether, ref: str, q: dict[str, str]) -> dict[str, Any]:
    """The run page's data: the run (``tether show --json``), its timeline, and the state
    or diff asked for (an error about those is shown beside them, not instead of the page)."""
    row = t.run(ref)
    after = _int(q.get("after"), "after")
    start = max(0, row.seq - TIMELINE) if after is None else after
    evs = t.events(row.id, after=start, limit=TIMELINE)
    show = t.show(row.id)
    out: dict[str, Any] = {"run": show, "asked": _asked(t, show), "groups": views.step_groups(evs),
                           "after": start, "older": max(0, start - TIMELINE) if start else None,
                           "last": evs[-1].seq if evs else start, "paged": after is not None,
                           "cap": TIMELINE, "state": None, "diff": None, "inspect_error": None}
    try:
        step = _int(q.get("step"), "step")
        a, b = _int(q.get("from"), "from"), _int(q.get("to"), "to")
        if step is not None:
            s = t.state(row.id, step)
            out["state"] = {"step": s.step, "state": s.state}
        if a is not None:
            out["diff"] = {"from": a, "to": row.step if b is None else b,
                           "changes": [c.to_json() for c in t.state_diff(row.id, a, b)]}
    except UsageError as exc:
        out["inspect_error"] = str(exc)
    return out


def _asked(t: Tether, show: dict[str, Any]) -> dict[str, str | None]:
    """When the approvals the run waits for were asked, on its clock."""
    return views.asked_times(t, [a["id"] for a in show["waiting_for"].get("approvals", [])])


def held_seq(text: str | None) -> int | None:
    """The last event's seq the open page holds (its script sends it in ``X-Tether-Seq``);
    None when it sent none, or something that is not a seq: it then gets its window whole."""
    if text is None or not text.isdigit() or len(text) > 18:
        return None
    return int(text)


def live_view(t: Tether, ref: str, q: dict[str, str], held: int | None) -> dict[str, Any]:
    """What an open run page asks for after a commit: the run (its header, controls,
    effects and alerts, drawn again whole: they are small), and only the events after
    ``held``, the last one it shows, to add to its timeline (``delta``).

    The page's window stays what a load would show: the newest :data:`TIMELINE` events
    (the page's script drops the oldest beyond them), or, paged back with ``?after=``,
    the events up to ``after + TIMELINE``. A page that holds nothing the server knows of
    (``held`` None) or is further behind than a window gets the window whole, to put in
    place of its timeline (``replace``)."""
    row = t.run(ref)
    after = _int(q.get("after"), "after")
    if after is not None:  # paged back: the window ends where a load would end it
        replace = held is None or held <= after
        since = after if held is None or replace else held
        room = after + TIMELINE - since
    else:
        replace = held is None or row.seq - held > TIMELINE
        since = max(0, row.seq - TIMELINE) if held is None or replace else held
        room = TIMELINE
    evs = t.events(row.id, after=since, limit=room) if room > 0 else []
    show = t.show(row.id)
    return {"run": show, "asked": _asked(t, show),
            "delta": {"groups": views.step_groups(evs), "replace": replace,
                      "last": evs[-1].seq if evs else since}}


@router.get("/runs/{run}")
def run_page(request: Request, run: str, t: Annotated[Tether, Depends(reader)],
             ctx: Annotated[UiContext, Depends(context)]) -> Response:
    held = held_seq(request.headers.get(SEQ_HEADER))
    part = wants_live(request)

    def data() -> dict[str, Any]:
        q = dict(request.query_params)
        view = live_view(t, run, q, held) if part else run_view(t, run, q)
        return {"view": view, "r": view["run"], "nav": "runs"}
    # Pages holding the same last event share the delta rendered for them at a commit.
    return page(request, ctx, "run.html", data, key=held)


@router.get("/runs/{run}/rollback")
def rollback_plan(request: Request, run: str, t: Annotated[Tether, Depends(reader)],
                  ctx: Annotated[UiContext, Depends(context)]) -> Response:
    """The plan, shown before anything is done; the page's form confirms it."""
    q = request.query_params
    to = _int(q.get("to"), "to")
    if to is None:
        raise UsageError("rollback: give the step to go back to (to=STEP)")
    cascade = checked(q.get("cascade"))
    row = t.run(run)
    p = t.cascade_plan(row.id, to) if cascade else t.rollback_plan(row.id, to)
    return page(request, ctx, "rollback.html",
                {"nav": "runs", "run": row, "to": to, "cascade": cascade, "lines": p.lines(),
                 "plan": p.to_json(), "idle": p.idle})


def _control(kind: str) -> Any:
    # A default, not an annotation: annotations are strings, resolved without ``kind``.
    def route(run: str, t: Tether = Depends(actor(kind)),  # noqa: B008
              next: Field = None) -> Response:
        return attempt(next, f"/runs/{run}", lambda: actions.command(t, run, kind))
    route.__name__ = f"{kind}_form"
    return route


for _kind in ("pause", "resume", "stop"):
    router.post(f"/runs/{{run}}/{_kind}")(_control(_kind))


def _caps(text: str | None) -> tuple[dict[str, float], list[str]]:
    """``cost_usd=5, steps=100, tokens=`` -> caps to set, and caps to remove (empty value)."""
    changes: dict[str, float] = {}
    unset: list[str] = []
    for item in (text or "").replace("\n", ",").split(","):
        if not item.strip():
            continue
        k, n = parse_cap(item.strip(), "budget", "cost_usd=5 (KEY= removes the cap)")
        if n is None:
            unset.append(k)
        else:
            changes[k] = n
    return changes, unset


@router.post("/runs/{run}/budget")
def budget(run: str, t: Annotated[Tether, Depends(actor("budget"))], caps: Field = None,
           next: Field = None) -> Response:
    def act() -> actions.Done:
        changes, unset = _caps(caps)
        return actions.budget(t, run, changes, unset)
    return attempt(next, f"/runs/{run}", act)


@router.post("/runs/{run}/rollback")
def rollback(request: Request, run: str, t: Annotated[Tether, Depends(actor("rollback"))],
             to: Field = None, cascade: Field = None, accept_irreversible: Field = None,
             force: Field = None) -> Response:
    if checked(cascade):
        require(request, "cascade")

    def act() -> actions.Done:
        k = _int(to, "to")
        if k is None:
            raise UsageError("rollback: give the step to go back to")
        return actions.rollback(t, run, k, cascade=checked(cascade),
                                accept_irreversible=checked(accept_irreversible),
                                force=checked(force))
    return attempt(None, f"/runs/{run}", act)


@router.post("/runs/{run}/fork")
def fork(run: str, t: Annotated[Tether, Depends(actor("fork"))], at: Field = None,
         edits: Field = None, name: Field = None, shared_workspace: Field = None) -> Response:
    def act() -> actions.Done:
        k = _int(at, "at")
        if k is None:
            raise UsageError("fork: give the step to fork from")
        return actions.fork(t, run, k, edits=json_field(edits, "state edits") or {},
                            name=name or None, shared_workspace=checked(shared_workspace))
    return attempt(None, f"/runs/{run}", act)


@router.post("/runs/{run}/quarantine")
def quarantine(run: str, t: Annotated[Tether, Depends(actor("quarantine"))],
               reason: Field = None, next: Field = None) -> Response:
    return attempt(next, f"/runs/{run}", lambda: actions.quarantine(t, run, reason or ""))


@router.post("/runs/{run}/release")
def release(run: str, t: Annotated[Tether, Depends(actor("release"))],
            next: Field = None) -> Response:
    return attempt(next, f"/runs/{run}", lambda: actions.release(t, run))
