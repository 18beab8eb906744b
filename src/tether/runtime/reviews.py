"""Where a run waits for a human before going on: its agent changed since it last ran,
or a review point (every N steps or T minutes) is due. Both are checked by the executor
before a step, and both are journaled."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tether.core.pausepoints import PausePoints
from tether.errors import PauseRequested
from tether.runtime.agent import AgentLike
from tether.runtime.journal import RunJournal


def check_definition(j: RunJournal, agent: AgentLike) -> None:
    """Resuming under a changed agent (instructions, model, tools, step source): decide
    by the run's rule whether to go on. Default: refuse for agents with irreversible
    tools (a human looks first), warn for the others; the decision is journaled."""
    spec = j.row.spec
    old, new = spec.get("definition"), agent.definition_hash()
    if not old or old == new:
        return
    rule = str(spec.get("on_definition_change") or getattr(agent, "on_change", None)
               or ("refuse" if any(t.effect == "irreversible" for t in agent.tools)
                   else "warn"))
    if spec.get("accept_definition_change"):
        rule = "accepted"
    refused = rule == "refuse"
    j.append("definition.changed", {"old": old, "new": new, "rule": rule,
                                    "decision": "refused" if refused else "resumed"})
    if refused:
        raise PauseRequested(
            f"run {j.run}: agent {agent.name}'s definition changed since the run last "
            "ran (instructions, model, tools or step code); review the change, then "
            f"`tether resume {j.run} --accept-change`", detail={"definition_changed": True})
    j.update(spec={k: v for k, v in {**spec, "definition": new}.items()
                   if k != "accept_definition_change"})


def review_point(j: RunJournal, points: PausePoints, now: float) -> None:
    """Pause for a human at a configured review point (every N steps or T minutes)."""
    spec = j.row.spec
    if "reviewed_at" not in spec and points.every_minutes:
        j.update(spec={**spec, "reviewed_at": now})  # the clock starts with the first step
        return
    due = points.due(step=j.row.step + 1, now=now, spec=spec)
    if due is not None:
        j.update(spec={**spec, "reviewed_step": j.row.step, "reviewed_at": now})
        raise due


def pause_points(journal: RunJournal, shared: Mapping[str, Any] | None) -> PausePoints:
    """The run's pause points over its swarm's (read here when the worker did not)."""
    row = journal.row
    if shared is None:
        shared = journal.store.swarm_pause_points(row.swarm) if row.swarm else {}
    return PausePoints.parse({**shared, **(row.spec.get("pause_points") or {})})
