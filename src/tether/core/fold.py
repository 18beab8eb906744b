"""Projections as folds of the journal: what a run's, an effect's or an approval's row
says is what its events say.

:func:`fold` is the one place a run's status, reason, wake time, epoch and last
step change: the journal applies it to every event it appends (so the row it
writes with them is their fold), and ``tether audit verify`` folds each run's
verified events again and compares the result with the stored row. Nothing else
sets these fields. Events written by release 0.1.0 fold too: a wake-up then wrote
no event (the step's next event stands for it: see :data:`STEP_WORK`), and a
``run.resumed`` did not say which status it resumed to (``running``).

:func:`effect_change` and :func:`approval_change` do the same for the status of
effect and approval rows (their other fields are held to the events by
``audit/rows.py`` and the seals).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Final, NamedTuple

from tether.core.events import Event

FAILED_HINT: Final = ("; fix the agent, then `tether resume` re-runs the step from its "
                      "checkpoint (effects already done are not repeated)")
"""What a failed run's reason says after the error (the operator's next move)."""

class RunFold(NamedTuple):
    """What a run's events say of its row (the fields in :data:`FOLDED`). A tuple: the
    journal folds every event it appends, and a tuple is the cheapest immutable record
    to make (a frozen dataclass's ``replace`` cost several times more per step)."""

    status: str = "running"
    reason: str = ""
    """Why the run is paused, failed, stopped, deferred or waiting for a decision."""
    wake_at: float | None = None
    """When a sleeping run is due, or a waiting run's deadline."""
    epoch: int = 0
    step: int = 0
    """Last completed step."""

    def differences(self, row: object) -> list[str]:
        """``field: stored X, events say Y`` for each folded field ``row`` disagrees on."""
        return [f"{name}: stored {getattr(row, name)!r}, events say {getattr(self, name)!r}"
                for name in FOLDED if getattr(row, name) != getattr(self, name)]


FOLDED: Final = RunFold._fields
"""The fields of a run's row that only :func:`fold` sets."""


def awaiting_reason(run: str, approval: str, tool: str) -> str:
    """A run's reason while it waits for a decision on ``approval`` to run ``tool``."""
    return (f"run {run} waits for approval {approval} to run {tool}; `tether approvals`, then "
            f"`tether approve {approval}` or `tether deny {approval} --reason ...`")


def rolled_back_reason(to_step: int, by: str) -> str:
    return f"rolled back to step {to_step} by {by}; `tether resume` goes on from there"


def fold(run: RunFold, e: Event) -> RunFold:
    """The run after ``e``: ``run`` itself (the same object) when ``e`` changes nothing."""
    rule = _RULES.get(e.kind)
    if rule is None:
        return run
    p = e.payload if isinstance(e.payload, dict) else {}
    return rule(run, e, p)


def fold_all(events: Iterable[Event], run: RunFold | None = None) -> RunFold:
    """Fold ``events`` (in chain order) from ``run`` (default: before the first event)."""
    out = run or RunFold()
    for e in events:
        out = fold(out, e)
    return out


READS_PAYLOAD: Final = frozenset({"run.sleeping", "run.paused", "run.stopped", "run.failed",
                                  "run.resumed", "approval.requested", "run.awaiting_approval",
                                  "rollback.begun", "rollback.abandoned", "rollback"})
"""Kinds whose fold reads the payload: once one is erased, the row cannot be re-derived."""


def _r(run: RunFold, **changes: Any) -> RunFold:
    return run._replace(**changes)

_Rule = Callable[[RunFold, Event, dict[str, Any]], RunFold]


STEP_WORK: Final = frozenset({
    "step.started", "step.finished", "clock.read", "random.read", "model.called",
    "tool.called", "policy.decided", "approval.requested", "effect.intent", "effect.done",
    "effect.failed", "effect.in_doubt", "effect.retried", "message.sent", "message.received",
    "blackboard.write", "blackboard.read", "nondeterminism", "budget.exceeded",
    "definition.changed", "checkpoint"})
"""What only the run's driver writes, awake. Release 0.1.0 woke a sleeping run without an
event: the first of these after a sleep says it woke (after a ``run.woke``, a no-op)."""


def _woke(run: RunFold, e: Event, p: dict[str, Any]) -> RunFold:
    return _r(run, status="running", wake_at=None)


def _awake(run: RunFold) -> RunFold:
    return _r(run, status="running", wake_at=None) if run.status in ("sleeping", "waiting") else run


def _work(run: RunFold, e: Event, p: dict[str, Any]) -> RunFold:
    return _awake(run)


def _sleeping(run: RunFold, e: Event, p: dict[str, Any]) -> RunFold:
    until = p.get("until")
    if p.get("deferred"):  # held by a policy window
        return _r(run, status="sleeping", wake_at=until, reason=f"deferred: {p.get('reason')}")
    return _r(run, status="waiting" if p.get("inbox") else "sleeping", wake_at=until)


def _resumed(run: RunFold, e: Event, p: dict[str, Any]) -> RunFold:
    # A run paused while asleep (or waiting) goes back to it, keeping its wake time.
    to = str(p.get("to", "running"))
    return _r(run, status=to, reason="", wake_at=None if to == "running" else run.wake_at)


def _rollback(run: RunFold, e: Event, p: dict[str, Any]) -> RunFold:
    to = int(p.get("to_step", e.step))
    return RunFold(status="paused", reason=rolled_back_reason(to, str(p.get("by"))),
                   wake_at=None, epoch=e.epoch, step=to)


def _awaiting(run: RunFold, e: Event, p: dict[str, Any]) -> RunFold:
    reason = (awaiting_reason(e.run, e.id, str(p.get("tool"))) if e.kind == "approval.requested"
              else str(p.get("reason")))
    return _r(_awake(run), status="awaiting_approval", reason=reason)


def _status(status: str, why: Callable[[dict[str, Any]], str] | None = None) -> _Rule:
    def rule(run: RunFold, e: Event, p: dict[str, Any]) -> RunFold:
        return _r(run, status=status, reason="" if why is None else why(p))
    return rule


def _reason(p: dict[str, Any]) -> str:
    return str(p.get("reason", ""))


def _finished(run: RunFold, e: Event, p: dict[str, Any]) -> RunFold:
    run = _awake(run)
    if run.step == e.step:
        return run
    return RunFold(run.status, run.reason, run.wake_at, run.epoch, e.step)  # once a step


_RULES: Final[dict[str, _Rule]] = {
    **dict.fromkeys(STEP_WORK, _work),
    "run.started": lambda run, e, p: RunFold(epoch=e.epoch, step=e.step),
    "run.woke": _woke,
    "step.finished": _finished,
    "run.done": _status("done"),
    "run.sleeping": _sleeping,
    "run.paused": _status("paused", _reason),
    "run.stopped": _status("stopped", _reason),
    "run.failed": _status("failed", lambda p: f"{p.get('error')}{FAILED_HINT}"),
    "run.resumed": _resumed,
    "approval.requested": _awaiting,
    "run.awaiting_approval": _awaiting,
    "rollback.begun": _status("paused", _reason),
    "rollback.abandoned": lambda run, e, p: _r(run, reason=_reason(p)),
    "rollback": _rollback,
}


def moves(run: RunFold, kind: str) -> bool:
    """Whether an event of ``kind`` can change ``run`` (False: :func:`fold` returns ``run``
    itself whatever the event says). The audit makes an :class:`Event` of a stored row only
    when something it checks looks at it."""
    rule = _RULES.get(kind)
    return rule is not None and (rule is not _work or run.status in ("sleeping", "waiting"))


STATUS_KINDS: Final = frozenset({"effect.intent", "effect.done", "effect.failed",
                                 "effect.in_doubt", "effect.undone", "effect.resolved",
                                 "effect.undo_settled", "approval.requested",
                                 "approval.decided", "command"})
"""The kinds :func:`effect_change` and :func:`approval_change` may return a change for."""

STATUS_READS_PAYLOAD: Final = frozenset({"effect.resolved", "effect.undo_settled",
                                         "approval.decided", "command"})
"""Of :data:`STATUS_KINDS`, those whose change is read from the payload."""


def effect_change(e: Event) -> tuple[str, str | None] | None:
    """``(effect id, its status after e)`` when ``e`` changes an effect row's status, else
    None; the status is None when ``e``'s payload was erased and it was read from it."""
    if e.kind == "effect.intent":
        return e.id, "intent"
    if not e.causes:
        return None
    fixed = _EFFECT_STATUS.get(e.kind)
    if fixed is not None:
        return e.causes[0], fixed
    p = e.payload
    if e.kind == "effect.resolved":
        return e.causes[0], None if p is None else f"resolved_{p['resolution']}"
    if e.kind == "effect.undo_settled":
        if p is None:
            return e.causes[0], None
        return (e.causes[0], "undone") if p.get("happened") else None
    return None


_EFFECT_STATUS: Final = {"effect.done": "done", "effect.failed": "failed",
                         "effect.in_doubt": "in_doubt", "effect.undone": "undone"}


def approval_change(e: Event) -> tuple[str, str | None] | None:
    """``(approval id, its status after e)`` when ``e`` changes an approval row's status,
    else None; the status is None when ``e``'s payload was erased."""
    p = e.payload
    if e.kind == "approval.requested":
        return e.id, "pending"
    if e.kind == "approval.decided":
        target = p.get("approval") if isinstance(p, dict) else None
        return str(target or e.causes[0]), None if p is None else str(p["decision"])
    if e.kind == "command" and isinstance(p, dict) and p.get("kind") == "approval.escalated":
        return str(p["approval"]), "pending"  # handed on: pending again, for others
    return None
