"""Taking runs: the store's side of a worker's scheduling pass, run off the event loop.

Which runs are runnable, their leases, their queued commands, and each run loaded
into an executor (its row, its agent, its swarm's settings, its last checkpoint
restored): all blocking reads and writes, so the worker calls :meth:`RunLoader.take`
in a thread while its loop keeps driving the runs it has. Nothing here touches the
worker's own state; what went wrong with a run comes back as a value for the loop
to act on.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tether.core.clock import Clock, WallClock
from tether.core.ids import UlidSource, iso_stamper
from tether.core.pricing import PriceTable
from tether.core.statuses import TERMINAL_STATUSES
from tether.errors import LeaseLost, StorageError, StoreError, StoreLocked, TetherError
from tether.runtime.agent import AgentLike
from tether.runtime.committer import GroupCommitter
from tether.runtime.executor import RunExecutor
from tether.runtime.journal import RunJournal
from tether.runtime.policybook import PolicyBook
from tether.runtime.runs import load_agent
from tether.store.protocol import Store
from tether.store.records import Command

if TYPE_CHECKING:
    from tether.core.policy import Policy

log = logging.getLogger("tether.worker")

SwarmSettings = tuple[dict[str, float], dict[str, Any]]
"""A swarm's shared budget and pause points, as read once per scheduling pass."""


class SkipRun(Exception):
    """This run cannot be driven here now (its row vanished, or its agent does not load in
    this process): the scheduling pass leaves it, and a later pass or another worker takes
    it. Not a ``LeaseLost``: the lease was never lost, the run is merely skipped."""


class Unloadable(SkipRun):
    """This process cannot load the run's agent: leave it to other workers for a while.
    Its lease was released already."""


@dataclass(frozen=True, slots=True)
class Taken:
    """One run leased in a pass: its executor, or why it could not be loaded."""

    run: str
    token: int
    executor: RunExecutor | None
    error: BaseException | None
    commands: tuple[Command, ...]
    """Commands queued while no one owned the run: applied at its first safe point."""


@dataclass(frozen=True, slots=True)
class RunLoader:
    """What a worker builds each run's executor with (its store, agents, clocks, ...)."""

    store: Store
    owner: str
    agents: Mapping[str, AgentLike]
    committer: GroupCommitter
    policies: PolicyBook
    clock: Clock
    wall: WallClock
    ids: UlidSource
    prices: PriceTable
    keyframe_every: int
    pipeline: int
    lease_ttl: float
    step_threads: concurrent.futures.Executor | None = None
    stamp: Callable[[float], str] = field(default_factory=iso_stamper)
    """Event time stamps, one cache for all the worker's journals (see ``iso_stamper``)."""

    def take(self, free: int, busy: Collection[str], retry_at: Mapping[str, float],
             only: Collection[str] | None) -> list[Taken] | None:
        """Lease up to ``free`` runnable runs (not ``busy`` here, not waiting to be retried,
        of ``only`` if given) and load each; None: none was wanted, so nothing was written.
        Blocking: call it in a thread."""
        now = self.wall.monotonic()
        wanted = [rid for rid in self.store.runnable(self.clock.now(), free + len(retry_at),
                                                     lease_now=self.wall.now())
                  if rid not in busy and retry_at.get(rid, 0) <= now
                  and (only is None or rid in only)][:free]
        if not wanted:
            return None
        tokens = self.store.acquire_many(wanted, self.owner, self.lease_ttl, self.wall.now())
        if not tokens:
            return []
        # One query for the whole pass, not one per run: starting a thousand runs is the
        # slow part of bringing a worker up.
        pending: dict[str, list[Command]] = {}
        for c in self.store.pending_commands(list(tokens)):
            pending.setdefault(c.run, []).append(c)
        swarms: dict[str, SwarmSettings] = {}
        return [self._taken(rid, token, tuple(pending.get(rid, ())), swarms)
                for rid, token in tokens.items()]

    def others_hold(self, only: Collection[str] | None) -> bool:
        """Whether another live owner holds the lease of a run (of ``only``, if given) that
        a worker drives: a run this one may yet have to take, if its holder dies or lets it
        go. A failing store says yes (the next pass backs off, and gives up in the end).
        Blocking: call it in a thread."""
        try:
            held = self.store.held_by_others(self.owner, self.wall.now())
        except StoreError:
            return True
        return any(only is None or rid in only for rid in held)

    def _taken(self, rid: str, token: int, commands: tuple[Command, ...],
               swarms: dict[str, SwarmSettings]) -> Taken:
        try:
            return Taken(rid, token, self.load(rid, token, swarms), None, commands)
        except Exception as exc:  # the loop decides what each failure means for the run
            # Lost or released already; or the store failing (released once it works).
            if not isinstance(exc, (LeaseLost, SkipRun, StorageError, StoreLocked)):
                with contextlib.suppress(TetherError):  # a broken agent module or store row
                    self.store.release(rid, self.owner, token)
            return Taken(rid, token, None, exc, commands)

    def load(self, rid: str, token: int, swarms: dict[str, SwarmSettings]) -> RunExecutor:
        """Load one leased run; ``swarms``: swarm settings read in this pass (filled as runs
        of new swarms come)."""
        row = self.store.get_run(rid)
        if row is None:
            raise SkipRun(f"run {rid} vanished")
        if row.status in TERMINAL_STATUSES:
            # Another worker finished it between this pass's listing and its lease: nothing
            # to drive (counting it would say two workers finished one run).
            self.store.release(rid, self.owner, token)
            raise SkipRun(f"run {rid} is {row.status} already")
        j = RunJournal(self.store, row, token, self.ids, self.clock.now, self.stamp)
        try:
            agent = load_agent(row.agent, self.agents)
        except TetherError as exc:
            # Another worker may have this agent: leave the run as it is and look again later.
            log.warning("run %s: cannot load agent %s here (%s); leaving it to other workers",
                        rid, row.agent, exc)
            self.store.release(rid, self.owner, token)
            raise Unloadable(str(exc)) from exc
        shared: SwarmSettings | None = None
        if row.swarm:
            shared = swarms.get(row.swarm)
            if shared is None:
                shared = swarms[row.swarm] = (self.store.swarm_budget(row.swarm),
                                              self.store.swarm_pause_points(row.swarm))
        ex = RunExecutor(j, agent, self.committer, clock=self.clock.now, prices=self.prices,
                         keyframe_every=self.keyframe_every,
                         policy=self.policy_source(row.swarm),
                         pipeline=self.pipeline, swarm_pause_points=shared[1] if shared else {},
                         step_threads=self.step_threads, wall=self.wall)
        ex.load(self.store.tail_events(rid, row.epoch, row.step + 1),
                shared[0] if shared else None)
        return ex

    def policy_source(self, swarm: str | None) -> Callable[[], Policy]:
        """What the run's gate asks before each action: the policy in force for its swarm now."""
        return lambda: self.policies.for_swarm(swarm).policy
