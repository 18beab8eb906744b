"""The swarm graph: runs as nodes, the links between them as edges, laid out for SVG.

Edges are the store's provenance links (:meth:`tether.ops.Tether.links`: a message
consumed, a blackboard value or a file read, a fork), one edge per (from, to, kind)
with how many links it stands for. With a focus (``RUN@STEP``), the runs and steps
that step reached (``tether impact``) are marked, and the cascade plan from there
(``tether rollback --cascade --plan``) is given in words.

The layout is a circle per swarm, swarms side by side: deterministic, so the same
store draws the same picture (and a test can find a node by its id).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import Any

from tether.errors import UsageError
from tether.ops import Tether
from tether.store.records import RunRow

__all__ = ["graph"]

_EDGE_KINDS = ("message", "board", "file", "fork")
"""Links drawn (``epoch`` links join a run to itself across a rollback: not an edge)."""
_R = 150.0
_PAD = 70.0


def _layout(rows: list[RunRow]) -> dict[str, tuple[float, float]]:
    by_swarm: dict[str, list[RunRow]] = defaultdict(list)
    for r in sorted(rows, key=lambda r: (r.swarm or "", r.created, r.id)):
        by_swarm[r.swarm or ""].append(r)
    pos: dict[str, tuple[float, float]] = {}
    for i, (_, members) in enumerate(sorted(by_swarm.items())):
        cx, cy = _PAD + _R + i * (2 * _R + 2 * _PAD), _PAD + _R
        n = len(members)
        for j, r in enumerate(members):
            if n == 1:
                pos[r.id] = (cx, cy)
                continue
            a = 2 * math.pi * j / n - math.pi / 2
            pos[r.id] = (round(cx + _R * math.cos(a), 1), round(cy + _R * math.sin(a), 1))
    return pos


def graph(t: Tether, focus: str | None = None, epoch: int | None = None) -> dict[str, Any]:
    """Nodes, edges and the picture's size; with ``focus`` (``RUN@STEP`` or an event id),
    the impact of that step and the cascade plan from it."""
    rows = t.runs()
    pos = _layout(rows)
    edges: Counter[tuple[str, str, str]] = Counter()
    for link in t.links():
        if link.kind in _EDGE_KINDS and link.src_run != link.dst_run and \
                link.src_run in pos and link.dst_run in pos:
            edges[(link.src_run, link.dst_run, link.kind)] += 1
    reached: dict[str, int] = {}
    impact = plan = label = None
    if focus:
        imp = t.impact(focus, epoch=epoch)
        reached = {a.run.id: a.first_step for a in imp.affected}
        impact = imp.to_json()
        origin, _, step = imp.origin
        label = f"{next((r.name for r in rows if r.id == origin), origin)}@{step}"
        # The cascade from the step before the focus: the plan that undoes it and all it reached.
        try:
            cp = t.cascade_plan(origin, max(0, step - 1))
            plan = {"lines": cp.lines(), **cp.to_json()}
        except UsageError as exc:  # e.g. a step of an epoch a rollback abandoned
            plan = {"lines": [f"no cascade plan from here: {exc}"], "error": str(exc)}
    width = max(2 * (_R + _PAD), max((x for x, _ in pos.values()), default=0) + _R / 2 + _PAD)
    nodes = [{"id": r.id, "name": r.name, "swarm": r.swarm, "status": r.status, "step": r.step,
              "x": pos[r.id][0], "y": pos[r.id][1], "reached": r.id in reached,
              "first_step": reached.get(r.id)} for r in rows]
    return {"width": width, "height": 2 * (_R + _PAD), "nodes": nodes,
            "edges": [{"from": a, "to": b, "kind": k, "count": n,
                       "reached": a in reached and b in reached,
                       "x1": pos[a][0], "y1": pos[a][1], "x2": pos[b][0], "y2": pos[b][1]}
                      for (a, b, k), n in sorted(edges.items())],
            "focus": focus, "focus_label": label, "impact": impact, "plan": plan}
