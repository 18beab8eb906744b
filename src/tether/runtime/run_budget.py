"""A run's budget as its steps spend it: lifetime caps, rolling windows, its swarm's caps.

Usage is counted into the journal (durable with the step) and into what this
drive has accrued since the windows were last read, so a check inside a step
sees the calls made earlier in it. Rolling windows and the swarm's usage are
read from the store once per step, off the event loop.

A rolling window that sleeps when reached (``on_exceed``, :mod:`tether.core.budget`)
raises :class:`~tether.errors.Deferred`, as a policy window does: the step is
abandoned and re-run when the run wakes. When it wakes is worked out by the
executor (:meth:`RunBudget.wake`), off the event loop, once the step is halted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from tether.core import budget as budgets
from tether.core.pricing import PriceTable, refuse_unpriced
from tether.errors import BudgetExceeded, Deferred, PauseRequested, UsageError
from tether.runtime.journal import RunJournal


class RunBudget:
    """The budget checks of one run being driven."""

    def __init__(self, journal: RunJournal, clock: Callable[[], float],
                 prices: PriceTable) -> None:
        self.journal = journal
        self.clock = clock
        self.prices = prices
        self._accrued: dict[str, float] = {}
        self._window_base: dict[float, dict[str, float]] = {}
        self.swarm_budget: dict[str, float] = {}
        self._swarm_base: tuple[dict[str, float], dict[float, dict[str, float]]] = ({}, {})
        self._asleep: tuple[budgets.Limit, float, float, str] | None = None
        """A window that sleeps the run: (limit, cap, used, scope), until :meth:`wake`."""

    def count(self, counts: dict[str, float]) -> None:
        self.journal.add_usage(counts)
        budgets.add(self._accrued, counts)

    @property
    def windowed(self) -> bool:
        """Whether a check needs usage read from the store (rolling windows, a swarm cap)."""
        row = self.journal.row
        return bool(budgets.window_lengths(row.budget) or (self.swarm_budget and row.swarm))

    async def refresh(self) -> None:
        """Read rolling-window usage once per step; calls inside the step add to it. The
        store must hold the run's usage so far (the caller settles its commits first)."""
        self._accrued = {}
        if self.windowed:
            self._window_base, self._swarm_base = await asyncio.to_thread(self._read,
                                                                          self.clock())

    def _read(self, now: float) -> tuple[dict[float, dict[str, float]],
                                         tuple[dict[str, float], dict[float, dict[str, float]]]]:
        row, store = self.journal.row, self.journal.store
        base = {w: store.usage_since(run=row.id, since=now - w)
                for w in budgets.window_lengths(row.budget)}
        swarm = self._swarm_base
        if self.swarm_budget and row.swarm:
            swarm = (store.swarm_usage(row.swarm),
                     {w: store.usage_since(swarm=row.swarm, since=now - w)
                      for w in budgets.window_lengths(self.swarm_budget)})
        return base, swarm

    def window_usage(self, window: float) -> dict[str, float]:
        """The run's usage inside a rolling window, as of this call (read at step start)."""
        return _plus(self._window_base.get(window, {}), self._accrued)

    def check(self) -> None:
        """Raise (and journal ``budget.exceeded``) when a cap of the run or its swarm is hit."""
        row = self.journal.row
        windows = {w: _plus(u, self._accrued) for w, u in self._window_base.items()}
        hit = budgets.exceeded(row.budget, row.usage, windows)
        scope = "run"
        if hit is None and self.swarm_budget:
            life, wins = self._swarm_base
            hit = budgets.exceeded(self.swarm_budget, _plus(life, self._accrued),
                                   {w: _plus(u, self._accrued) for w, u in wins.items()})
            scope = f"swarm {row.swarm}"
        if hit is None:
            return
        lim, used = hit
        cap = (row.budget if scope == "run" else self.swarm_budget)[lim.key]
        if lim.on_exceed == "sleep" and cap > 0:
            self._asleep = (lim, cap, used, scope)
            raise Deferred(f"{scope} budget {lim.key}={cap:g} reached (used {used:g}): sleeping "
                           "until the window frees", until=self.clock())
        self.journal.append("budget.exceeded", {"scope": scope, "limit": lim.key, "cap": cap,
                                                "used": used, "on_exceed": "pause"})
        raise BudgetExceeded(
            f"run {row.id}: {scope} budget {lim.key}={cap:g} reached (used {used:g}); raise it "
            f"with `tether budget {row.id} --set {lim.key}=...` and `tether resume {row.id}`",
            detail={"limit": lim.key, "scope": scope})

    async def wake(self, until: float) -> float:
        """When a run held by :class:`Deferred` wakes: ``until`` for a policy window; for a
        budget window the time it frees enough, journaled as ``budget.exceeded``."""
        if self._asleep is None:
            return until
        (lim, cap, used, scope), self._asleep = self._asleep, None
        row, store, accrued = self.journal.row, self.journal.store, dict(self._accrued)

        def used_since(t: float) -> dict[str, float]:
            # What the store holds, plus what this drive counted and has not committed yet
            # (all of it in the current minute, so inside every window still open).
            got = (store.usage_since(run=row.id, since=t) if scope == "run"
                   else store.usage_since(swarm=row.swarm, since=t))
            return _plus(got, accrued)
        now = self.clock()
        wake = await asyncio.to_thread(budgets.frees_at, lim, cap, now, used_since)
        self.journal.append("budget.exceeded", {"scope": scope, "limit": lim.key, "cap": cap,
                                                "used": used, "on_exceed": "sleep",
                                                "until": wake if wake is not None else now})
        return wake if wake is not None else now

    def check_priced(self, model: str) -> None:
        """Pause before calling a model without a price when a cost cap applies (the run's
        or its swarm's): the call would count as $0 and the cap would never be reached."""
        j = self.journal
        if not (j.row.budget or self.swarm_budget):
            return  # the common case, on every model call: nothing to check
        try:
            refuse_unpriced(model, {**self.swarm_budget, **j.row.budget}, self.prices,
                            f"run {j.run}")
        except UsageError as exc:
            raise PauseRequested(f"{exc}; then `tether resume {j.run}`",
                                 detail={"unpriced_model": model}) from None


def _plus(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    out = dict(a)
    budgets.add(out, b)
    return out
