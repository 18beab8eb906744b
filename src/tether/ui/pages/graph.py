"""Swarm graph: runs as nodes, their links as edges; a step's impact and cascade plan."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from tether.errors import UsageError
from tether.ops import Tether
from tether.ui.context import UiContext
from tether.ui.deps import context, reader
from tether.ui.graph import graph
from tether.ui.pages.common import page

router = APIRouter(include_in_schema=False)


@router.get("/graph")
def graph_page(request: Request, t: Annotated[Tether, Depends(reader)],
               ctx: Annotated[UiContext, Depends(context)]) -> Response:
    focus = request.query_params.get("focus") or None
    err = None
    try:
        g = graph(t, focus)
    except UsageError as exc:  # a focus that names no step: the graph, and why
        g, err = graph(t, None), str(exc)
    return page(request, ctx, "graph.html", {"graph": g, "focus_error": err, "nav": "graph"})
