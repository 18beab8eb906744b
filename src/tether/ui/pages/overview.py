"""Overview: every swarm and run, what waits for a person first."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from tether.ops import Tether
from tether.ui import views
from tether.ui.context import UiContext
from tether.ui.deps import context, reader
from tether.ui.pages.common import page

router = APIRouter()


@router.get("/", include_in_schema=False)
def overview(request: Request, t: Annotated[Tether, Depends(reader)],
             ctx: Annotated[UiContext, Depends(context)]) -> Response:
    return page(request, ctx, "overview.html", lambda: {"view": views.overview(t),
                                                          "nav": "overview"})
