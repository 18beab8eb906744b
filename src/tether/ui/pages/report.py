"""Night report (``tether report``) and audit status (last seal, this server's last
verify, a button to verify now)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from tether.errors import UsageError
from tether.ops import Tether
from tether.reporting.query import window, zone
from tether.system_clock import SYSTEM_CLOCK
from tether.ui.context import UiContext
from tether.ui.deps import actor, context, reader
from tether.ui.pages.common import back, page
from tether.ui.views import audit_status, report_data

router = APIRouter(include_in_schema=False)


@router.get("/report")
def report_page(request: Request, t: Annotated[Tether, Depends(reader)],
                ctx: Annotated[UiContext, Depends(context)]) -> Response:
    q = request.query_params
    since, until, tzname = q.get("since") or "24h", q.get("until") or None, q.get("tz") or None
    err, data, picture = None, None, ""
    try:
        tz = zone(tzname)
        lo, hi = window(t.store, since, until, tz)
        data = report_data(t, lo, hi, tz, picture=True)
        picture = data.pop("svg")
    except UsageError as exc:
        err = str(exc)
    return page(request, ctx, "report.html",
                {"nav": "report", "report": data, "svg": picture, "report_error": err,
                 "since": since, "until": until or "", "tz": tzname or "",
                 "audit": audit_status(t, ctx.last_verify)})


@router.post("/audit/verify")
def verify(t: Annotated[Tether, Depends(actor("read"))],
           ctx: Annotated[UiContext, Depends(context)]) -> Response:
    rep = t.verify()
    ctx.last_verify = {**rep.to_json(), "at": SYSTEM_CLOCK.now(), "by": t.who}
    return back("/report", "/report", notice="verified: intact" if rep.ok else
                f"verify FAILED: {rep.first_bad}")

