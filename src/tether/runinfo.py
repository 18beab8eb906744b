"""What an operator asks of one run first: how did it end, what went wrong, what is it
waiting for. Read from the journal and the projections, for ``tether show`` (and any
other surface).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tether.core.events import Event
from tether.store.protocol import Store
from tether.store.records import RunRow

_ERROR_KINDS = ("run.failed", "effect.failed", "run.paused", "nondeterminism", "budget.exceeded")
"""Events that record something going wrong (a pause counts when it says why it failed)."""
_SCAN = 20_000
"""How far back (events) ``show`` looks for the last error: a long healthy run is not read
whole to find none."""


@dataclass(frozen=True, slots=True)
class RunInfo:
    """The answers, each None when there is nothing to say."""

    result: Any = None
    """The ``Done`` result, when the run is done."""
    done: bool = False
    """Whether ``result`` is set (a run can be done with a ``None`` result)."""
    last_error: dict[str, Any] | None = None
    """``{"seq", "step", "kind", "error"}`` of the latest event that says what went wrong."""
    waiting_for: dict[str, Any] = field(default_factory=dict)
    """What the run waits for: ``approvals`` (``[{"id", "tool", "expires_at"}]``),
    ``wake_at`` (a sleep), ``messages`` with ``deadline`` (awaiting messages),
    ``operator`` (paused: the reason), ``in_doubt`` (effect ids to resolve)."""

    def to_json(self) -> dict[str, Any]:
        return {"result": self.result, "last_error": self.last_error,
                "waiting_for": self.waiting_for}


def _latest(store: Store, run: str, upto: int, kinds: tuple[str, ...]) -> list[Event]:
    """The run's events of ``kinds`` in its last ``_SCAN`` events up to seq ``upto``,
    newest first. The store filters by kind: the run's other events (nearly all of them)
    are never decoded, so a live page that shows the run reads it cheaply at every step."""
    floor = max(0, upto - _SCAN)
    found = [e for e in store.events_of_kinds(kinds, run=run) if floor < e.seq <= upto]
    return sorted(found, key=lambda e: e.seq, reverse=True)


def _error_of(e: Event) -> str | None:
    p = e.payload if isinstance(e.payload, dict) else {}
    if e.kind == "run.paused":
        # Paused by an operator or a review point is not an error; a failing model is.
        if not {"provider_message", "nondeterminism", "limit", "unpriced_model"} & set(p):
            return None
        return str(p.get("reason"))
    if e.kind == "budget.exceeded":
        return f"{p.get('scope')} budget {p.get('limit')}={p.get('cap')} reached " \
               f"(used {p.get('used')})"
    if e.kind == "nondeterminism":
        return f"call #{p.get('i')}: the journal recorded {p.get('expected')}, the step " \
               f"made {p.get('got')}"
    return str(p.get("error")) if "error" in p else None


def _waiting(store: Store, row: RunRow) -> dict[str, Any]:
    w: dict[str, Any] = {}
    if row.status == "awaiting_approval":
        w["approvals"] = [{"id": a.id, "tool": a.tool, "step": a.step,
                           "expires_at": a.expires_at, "on_expiry": a.on_expiry}
                          for a in store.approvals(run=row.id, status="pending")]
    elif row.status == "sleeping":
        w["wake_at"] = row.wake_at
        if row.reason.startswith("deferred: "):
            w["deferred"] = row.reason.removeprefix("deferred: ")
    elif row.status == "waiting":
        w["messages"] = True
        w["deadline"] = row.wake_at
    elif row.status in ("paused", "failed"):
        w["operator"] = row.reason
        doubt = [e.id for e in store.effects(run=row.id, status="in_doubt")]
        if doubt:
            w["in_doubt"] = doubt
    return w


def run_info(store: Store, row: RunRow) -> RunInfo:
    """How ``row`` ended, its latest error, and what it waits for."""
    result, done = None, False
    if row.status == "done":
        ends = _latest(store, row.id, row.seq, ("run.done",))
        if ends and isinstance(ends[0].payload, dict):
            result, done = ends[0].payload.get("result"), True
    error = None
    for e in _latest(store, row.id, row.seq, _ERROR_KINDS):
        text = _error_of(e)  # None: a pause that was no error; look further back
        if text is not None:
            error = {"seq": e.seq, "step": e.step, "kind": e.kind, "error": text}
            break
    return RunInfo(result=result, done=done, last_error=error, waiting_for=_waiting(store, row))


def run_json(row: RunRow) -> dict[str, Any]:
    """The public JSON form of a run (``tether runs --json``)."""
    u = row.usage
    return {
        "id": row.id, "name": row.name, "agent": row.agent, "swarm": row.swarm,
        "status": row.status, "step": row.step, "epoch": row.epoch, "goal": row.goal,
        "tokens": int(u.get("input_tokens", 0) + u.get("output_tokens", 0)),
        "input_tokens": int(u.get("input_tokens", 0)),
        "output_tokens": int(u.get("output_tokens", 0)),
        "cost_usd": round(u.get("cost_usd", 0.0), 6), "tool_calls": int(u.get("tool_calls", 0)),
        "budget": row.budget, "wake_at": row.wake_at, "reason": row.reason,
        "created": row.created, "updated": row.updated, "parent": row.parent,
        "quarantined": bool(row.spec.get("quarantined")),
    }
