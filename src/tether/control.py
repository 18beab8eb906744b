"""Operators' commands beyond pause, resume and stop: settle an in-doubt effect, change a
run's or a swarm's budget.

An in-doubt effect is one whose intent is journaled and whose result is not: the
tool may or may not have acted. Only a person can tell, so the run waits (paused)
until each is settled; the last one settled resumes it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Final

from tether.core import budget as budgets
from tether.core.ids import UlidSource, iso
from tether.core.pausepoints import PausePoints
from tether.core.settings import swarm_scope
from tether.errors import UsageError
from tether.runtime.holding import holding
from tether.runtime.operator import CommandResult, actor, find_effect, send_command
from tether.runtime.workspace import resolved_versions
from tether.store.protocol import Store
from tether.store.records import EffectRow
from tether.system_clock import SYSTEM_CLOCK

RESOLUTIONS: Final = ("done", "not_done", "retry")
RESOLVE_WAIT_S: Final = 5.0
"""How long settling an effect waits for a worker that holds the run to let it go."""


def resolve_effect(store: Store, effect_ref: str, resolution: str, *, result: Any = None,
                   who: str | None = None) -> EffectRow:
    """Settle an in-doubt effect: it happened (``done``), it did not and must not be
    retried (``not_done``), or run it again once (``retry``)."""
    if resolution not in RESOLUTIONS:
        raise UsageError(f"resolution must be one of {', '.join(RESOLUTIONS)}")
    eff = find_effect(store, effect_ref)
    if eff.status != "in_doubt":
        raise UsageError(f"effect {eff.id} ({eff.tool}, run {eff.run} step {eff.step}) is "
                         f"{eff.status}, not in doubt; only in-doubt effects can be resolved")
    busy = (f"run {eff.run} is being driven by a worker right now; `tether pause {eff.run}` "
            "first, then resolve")
    # A worker that has just found the doubt and paused the run lets it go within moments:
    # wait for that rather than send the operator away.
    with holding(store, eff.run, busy=busy, wait=RESOLVE_WAIT_S) as j:
        assert j is not None
        row = j.row
        by = who or actor(store=store)
        payload: dict[str, Any] = {"i": eff.idx, "resolution": resolution, "result": result,
                                   "by": by}
        versions = []
        if resolution == "done":
            versions = resolved_versions(store, row, eff, SYSTEM_CLOCK.now())
            # Journaled, so the audit can hold the version rows to them (the seal keeps
            # them through an erasure of this payload).
            payload["files"] = {v.key: v.hash for v in versions}
        ev = j.append("effect.resolved", payload, step=eff.step, actor=by, causes=(eff.id,))
        new = dataclasses.replace(eff, status=f"resolved_{resolution}", updated=SYSTEM_CLOCK.now(),
                                  result=result if resolution == "done" else eff.result)
        j.effect(new)
        for v in versions:
            j.version(v)
        left = [e for e in store.effects(run=eff.run, status="in_doubt") if e.id != eff.id]
        if not left and row.status == "paused":
            j.append("run.resumed", {"by": by, "from": "paused",
                                     "why": "every in-doubt effect was resolved"}, actor=by,
                     causes=(ev.id,))
        j.flush_sync()
        return new


def set_budget(store: Store, run_ref: str, changes: dict[str, float], unset: list[str],
               *, who: str | None = None) -> CommandResult:
    """Raise or lower a run's budget (journaled as a ``command`` and ``budget.changed``)."""
    budgets.validate(changes)
    for k in unset:
        budgets.parse_key(k)
    return send_command(store, run_ref, "budget", {"set": changes, "unset": unset}, who=who)


def set_swarm_budget(store: Store, swarm: str, changes: dict[str, float],
                     unset: list[str], *, who: str | None = None,
                     now: float | None = None) -> dict[str, float]:
    """Change the budget a swarm's runs share (a ``swarm.budget`` event in the store
    chain); workers read it when they take a run. Returns the budget now."""
    new = budgets.merge(store.swarm_budget(swarm), changes, unset)
    record_swarm_setting(store, swarm, "budget", new, who=who, now=now)
    return new


def set_swarm_pause_points(store: Store, swarm: str, changes: Mapping[str, Any], *,
                           who: str | None = None, now: float | None = None) -> dict[str, Any]:
    """Change the pause points every run of ``swarm`` has (a ``swarm.pause_points`` event
    in the store chain); returns them now. Raises UsageError for a bad value."""
    points = PausePoints.parse({**store.swarm_pause_points(swarm), **changes}).to_json()
    record_swarm_setting(store, swarm, "pause_points", points, who=who, now=now)
    return points


def record_swarm_setting(store: Store, swarm: str, field: str, value: dict[str, Any], *,
                         who: str | None = None, now: float | None = None) -> bool:
    """Journal one of a swarm's settings in the store chain (which also sets the swarm's
    row), so no setting that governs agents changes without a trace: by whom, when.
    False (nothing written) when it already has that value."""
    if not swarm:
        raise UsageError("a swarm setting needs the swarm's name")
    row = store.swarm_rows().get(swarm)
    if row is not None and row.get(field) == value:
        return False
    t = SYSTEM_CLOCK.now() if now is None else now
    store.append_store_event(f"swarm.{field}", swarm_scope(swarm), {field: value},
                             actor=who or actor(store=store), time=iso(t), id=UlidSource(lambda: t).new())
    return True
