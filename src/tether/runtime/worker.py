"""The worker: many runs in one process, each under a fenced lease.

It asks the store for runnable runs (running, or sleeping and due), takes
their leases, and drives each in its own task. A sleeping, paused or waiting
run holds no task and no memory beyond its rows. A heartbeat renews leases;
a run whose lease is lost is abandoned at once (the store would refuse its
writes anyway). Operators' commands are polled and delivered to the owning
executor; ``stop`` also cancels an in-flight async call at once. On SIGTERM or
SIGINT the worker drains: every run stops at its next safe point, flushes what
it journaled and releases its lease.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import signal
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from tether.core.backoff import Backoff
from tether.core.clock import Clock, WallClock
from tether.core.ids import UlidSource
from tether.core.pricing import PriceTable
from tether.errors import (
    Conflict,
    LeaseLost,
    StorageError,
    StoreError,
    StoreLocked,
    TetherError,
    UsageError,
)
from tether.runtime.agent import AgentLike
from tether.runtime.changes import DriveLog, RunChange, WorkerStats
from tether.runtime.committer import GroupCommitter
from tether.runtime.executor import PIPELINE, RunExecutor
from tether.runtime.journal import RunJournal
from tether.runtime.leases import owner_name, reclaim_dead_local
from tether.runtime.policybook import PolicyBook
from tether.runtime.prices import price_table
from tether.runtime.runs import load_agent
from tether.runtime.storage_health import GIVE_UP_AFTER, STORAGE_BACKOFF, StoreHealth
from tether.store.protocol import Store
from tether.store.records import Command
from tether.system_clock import SYSTEM_CLOCK

if TYPE_CHECKING:
    from tether.core.policy import Policy
    from tether.notify import WebhookConfig

log = logging.getLogger("tether.worker")


SwarmSettings = tuple[dict[str, float], dict[str, Any]]
"""A swarm's shared budget and pause points, as read once per scheduling pass."""


class SkipRun(Exception):
    """This run cannot be driven here now (its row vanished, or its agent does not load in
    this process): the scheduling pass leaves it, and a later pass or another worker takes
    it. Not a ``LeaseLost``: the lease was never lost, the run is merely skipped."""


class Worker:
    """Runs every runnable run of a store until told to stop.

    Args:
        store: the journal.
        agents: agents by reference, tried before importing ``module:attr``.
        clock: the runs' clock: what their journals and agents see (inject one to simulate
            time).
        wall: the clock of leases, heartbeats and approvals' expiry, which other processes
            share (inject one to expire leases without waiting).
        concurrency: the most runs driven at once.
        lease_ttl: seconds a lease lasts without a heartbeat.
        policy: the policy this worker is meant to run under: UsageError unless it is the
            store's policy in force (``tether.policies.apply_policy`` puts one in force).
            Whatever is given, the worker enforces the store's (store chain), re-read at
            every scheduling pass.
        pipeline: end-of-step commits a run may have in flight while its next step runs
            (settled before any effect, sleep, pause or end); 0: every step is durable
            before the next starts (slower: the fsync is then on every step's path).
        give_up_after: seconds of failing storage (a full disk, say) after which
            ``run(until_idle=True)`` raises the last StoreError; a worker without
            ``until_idle`` keeps trying. Meanwhile passes back off by ``storage_backoff``.
        on_change: called with a :class:`~tether.runtime.changes.RunChange` when the worker
            takes a run and when it lets it go (``tether worker`` prints them).
    """

    def __init__(self, store: Store, *, agents: Mapping[str, AgentLike] | None = None,
                 clock: Clock | None = None, wall: WallClock | None = None, prices: PriceTable | None = None,
                 concurrency: int = 1000, lease_ttl: float = 30.0, poll_interval: float = 0.05,
                 owner: str | None = None, keyframe_every: int = 128,
                 only: set[str] | None = None, policy: Policy | None = None,
                 webhook: WebhookConfig | None = None, pipeline: int = PIPELINE,
                 give_up_after: float = GIVE_UP_AFTER,
                 storage_backoff: Backoff = STORAGE_BACKOFF,
                 on_change: Callable[[RunChange], None] | None = None) -> None:
        if concurrency < 1:
            raise UsageError(f"concurrency must be at least 1, not {concurrency}")
        if not lease_ttl > 0:
            raise UsageError(f"lease_ttl must be a positive number of seconds, not {lease_ttl}")
        self.store = store
        self.agents = dict(agents or {})
        self.clock = clock or SYSTEM_CLOCK
        self.wall = wall or SYSTEM_CLOCK
        self.prices = prices or price_table()  # $TETHER_PRICES, else the built-in table
        self.concurrency = concurrency
        self.lease_ttl = lease_ttl
        self.poll = poll_interval
        self.owner = owner or owner_name("worker", f"{id(self):x}")
        self.keyframe_every = keyframe_every
        self.only = only
        self.webhook = webhook
        if pipeline < 0:
            raise UsageError(f"pipeline must be 0 (every step durable first) or more, not {pipeline}")
        self.pipeline = pipeline
        if not give_up_after >= 0:
            raise UsageError(f"give_up_after must be zero or more seconds, not {give_up_after}")
        # Leases of runs abandoned while the store failed: released at the next pass.
        self._unreleased: dict[str, int] = {}
        # The policies in force are the store's (store chain), re-read every scheduling pass;
        # one this worker cannot use stops it here, before it drives anything.
        self.policies = PolicyBook()
        self.policies.refresh(store, strict=True)
        if policy is not None:
            self.policies.require(policy, "this worker's policy")
        self.ids = UlidSource(self.clock.now)
        # Runs whose agent this process cannot load: left for workers that can, retried later.
        self._unloadable: dict[str, float] = {}
        self.committer = GroupCommitter(store, storage_patience=give_up_after,
                                        storage_backoff=storage_backoff)
        self.health = StoreHealth(self.owner, storage_backoff, give_up_after=give_up_after,
                                  now=self.wall.monotonic,
                                  writes=lambda: self.committer.committed)
        self.active: dict[str, tuple[asyncio.Task[str], RunExecutor]] = {}
        self.finished: dict[str, int] = {}
        self.runs_driven = 0
        self.drives = DriveLog(on_change)
        self._draining = False
        self._running = False
        self._wake = asyncio.Event()
        self._delivered: set[int] = set()
        # Sync step functions get threads of their own (one per run at most), apart from the
        # pool their tools run on (made for each run(); threads only as steps need them).
        self._step_threads: concurrent.futures.ThreadPoolExecutor | None = None

    # -- public ---------------------------------------------------------------
    async def run(self, *, until_idle: bool = False, stop: asyncio.Event | None = None,
                  handle_signals: bool = False, grace: float = 10.0) -> WorkerStats:
        """Drive runs until ``stop`` is set (or, with ``until_idle``, nothing is runnable).

        A worker can run again once a ``run()`` returned; each returns the stats of that
        run only. Two ``run()`` of one worker at once are refused (UsageError).
        """
        if self._running:
            raise UsageError(f"worker {self.owner} is already running; wait for its run() to "
                             "return, or make another Worker")
        self._running = True
        try:
            return await self._run(until_idle, stop, handle_signals, grace)
        finally:
            self._running = False

    async def _run(self, until_idle: bool, stop: asyncio.Event | None, handle_signals: bool,
                   grace: float) -> WorkerStats:
        # Fresh per run: the last run's drain and counts must not carry over.
        self._draining, self.runs_driven, self.finished = False, 0, {}
        self.drives = DriveLog(self.drives.on_change)
        self._delivered = set()
        self._wake = asyncio.Event()
        # Only a worker that is to end gives up on a failing store (and says so).
        self.health.give_up_after = self.committer.storage_patience if until_idle else None
        stop = stop or asyncio.Event()
        self._step_threads = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.concurrency, thread_name_prefix="tether-step")
        with contextlib.suppress(TetherError):
            reclaim_dead_local(self.store, wall=self.wall)  # a worker killed before us on this host
        if handle_signals:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
        bg = [asyncio.create_task(self._heartbeat()), asyncio.create_task(self._poll_commands()),
              asyncio.create_task(self._expire_approvals())]
        notifier = None
        if self.webhook is not None:
            from tether.notify import Notifier
            notifier = Notifier(self.store, self.webhook, clock=self.wall.now)
            bg.append(asyncio.create_task(notifier.run(asyncio.Event())))
        try:
            while not stop.is_set():
                started = await self._pass(until_idle, stop)
                if started is None:
                    continue  # the store failed: the next pass waits (backoff)
                if until_idle and not self.active and not started:
                    break
                await self._nap(self.poll)
        finally:
            await self._drain(grace)
            for t in bg:
                t.cancel()
            for t in bg:
                with contextlib.suppress(asyncio.CancelledError):
                    await t
            if notifier is not None:
                # One last bounded round so what the runs just journaled is not left waiting.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(notifier.deliver_due(), self.webhook.timeout + 1)  # type: ignore[union-attr]
                notifier.close()
            self.committer.close()
            self.health.close()  # commits that landed since the last pass: say it works again
            # A sync step still running (stopped, its result discarded) keeps its thread
            # until it returns: do not wait for it here.
            self._step_threads.shutdown(wait=False)
            self._step_threads = None
            if handle_signals:
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
        return WorkerStats(self.runs_driven, dict(self.finished), self.drives.steps,
                           self.drives.effects, dict(self.drives.final))

    def alert(self, run: str, name: str, detail: dict[str, object] | None = None) -> bool:
        """The hook for monitors: pause ``run`` at its next safe point. False if this worker
        does not drive it."""
        entry = self.active.get(run)
        if entry is None:
            return False
        entry[1].alert(name, detail)
        return True

    # -- scheduling -----------------------------------------------------------
    async def _pass(self, until_idle: bool, stop: asyncio.Event) -> int | None:
        """One scheduling pass: the runs it started, or None if the store failed. While
        the store fails, passes back off (and ``until_idle`` gives up in the end)."""
        if (failure := self.committer.failure) is not None:
            self.health.failed(failure)  # runs wait while their commits are retried
        try:
            wait = self.health.before_pass(give_up=until_idle)
        except StoreError:
            self.committer.abort()  # the runs waiting on commits get the error: abandoned
            raise
        if wait > 0:
            # Up to seconds long: a stop (SIGTERM) must not wait for it to end.
            naps = [asyncio.ensure_future(e.wait()) for e in (self._wake, stop)]
            await asyncio.wait(naps, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            for n in naps:
                n.cancel()
            self._wake.clear()
            return None
        try:
            self._release_abandoned()
            return self._fill()
        except StoreError as exc:  # locked past its busy timeout, a full disk, ...
            self.health.failed(exc)
            return None

    async def _nap(self, seconds: float) -> None:
        """Sleep up to ``seconds``; a run ending wakes the loop early."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        self._wake.clear()

    def _release_abandoned(self) -> None:
        for rid, token in list(self._unreleased.items()):
            self.store.release(rid, self.owner, token)
            del self._unreleased[rid]

    def _fill(self) -> int:
        self._refresh_policies()
        free = self.concurrency - len(self.active)
        if free <= 0 or self._draining:
            return 0
        started = 0
        now = self.wall.monotonic()
        wanted = [rid for rid in self.store.runnable(self.clock.now(), free + len(self._unloadable),
                                                     lease_now=self.wall.now())
                  if rid not in self.active and self._unloadable.get(rid, 0) <= now
                  and (self.only is None or rid in self.only)][:free]
        if not wanted:
            return 0
        tokens = self.store.acquire_many(wanted, self.owner, self.lease_ttl, self.wall.now())
        self.health.worked(progress=False)  # a write went through (an idle store has none)
        if not tokens:
            return 0
        # One query for the whole pass, not one per run: starting a thousand runs is the
        # slow part of bringing a worker up.
        pending: dict[str, list[Command]] = {}
        for c in self.store.pending_commands(list(tokens)):
            pending.setdefault(c.run, []).append(c)
        swarms: dict[str, SwarmSettings] = {}
        for rid, token in tokens.items():
            try:
                ex = self._executor(rid, token, pending.get(rid, []), swarms)
            except (SkipRun, LeaseLost):
                continue
            except (StorageError, StoreLocked) as exc:  # the store's fault, not the run's
                self.health.failed(exc)
                self._unreleased[rid] = token  # released at the next pass that works
                continue
            except Exception as exc:  # a broken agent module or store row: skip the run
                log.warning("run %s cannot be started here: %s: %s", rid, type(exc).__name__, exc)
                self._unloadable[rid] = self.wall.monotonic() + 30.0
                with contextlib.suppress(TetherError):
                    self.store.release(rid, self.owner, token)
                continue
            self.drives.took(ex.journal.row)
            task = asyncio.create_task(self._drive(rid, token, ex), name=f"run:{rid}")
            self.active[rid] = (task, ex)
            self.runs_driven += 1
            started += 1
        return started

    def _executor(self, rid: str, token: int, pending: list[Command],
                  swarms: dict[str, SwarmSettings]) -> RunExecutor:
        """Load one run; ``pending``: its queued commands; ``swarms``: swarm settings read
        in this scheduling pass (filled as runs of new swarms come)."""
        row = self.store.get_run(rid)
        if row is None:
            raise SkipRun(f"run {rid} vanished")
        j = RunJournal(self.store, row, token, self.ids, self.clock.now)
        try:
            agent = load_agent(row.agent, self.agents)
        except TetherError as exc:
            # Another worker may have this agent: leave the run as it is and look again later.
            log.warning("run %s: cannot load agent %s here (%s); leaving it to other workers",
                        rid, row.agent, exc)
            self._unloadable[rid] = self.wall.monotonic() + 30.0
            self.store.release(rid, self.owner, token)
            raise SkipRun(str(exc)) from exc
        shared: SwarmSettings | None = None
        if row.swarm:
            shared = swarms.get(row.swarm)
            if shared is None:
                shared = swarms[row.swarm] = (self.store.swarm_budget(row.swarm),
                                              self.store.swarm_pause_points(row.swarm))
        ex = RunExecutor(j, agent, self.committer, clock=self.clock.now, prices=self.prices,
                         keyframe_every=self.keyframe_every,
                         policy=self._policy_source(row.swarm),
                         pipeline=self.pipeline, swarm_pause_points=shared[1] if shared else {},
                         step_threads=self._step_threads, wall=self.wall)
        ex.load(self.store.tail_events(rid, row.epoch, row.step + 1),
                shared[0] if shared else None)
        # Commands queued while no one owned the run are applied at its first safe point.
        ex.deliver(pending)
        self._delivered.update(c.id for c in pending)
        return ex

    @property
    def policy(self) -> Policy:
        """The store-wide policy in force (a swarm's own, if applied, gates that swarm's runs)."""
        return self.policies.for_swarm(None).policy

    def _policy_source(self, swarm: str | None) -> Callable[[], Policy]:
        """What the run's gate asks before each action: the policy in force for its swarm now."""
        return lambda: self.policies.for_swarm(swarm).policy

    def _refresh_policies(self) -> None:
        """Pick up a policy applied since the last pass (one indexed read when none was);
        the runs already going get it at their next action."""
        for change in self.policies.refresh(self.store):
            log.warning("worker %s: %s", self.owner, change)

    async def _drive(self, rid: str, token: int, ex: RunExecutor) -> str:
        status = "abandoned"
        try:
            status = await ex.drive()
        except (LeaseLost, Conflict) as exc:
            log.warning("run %s: %s; abandoned", rid, exc)
        except StoreError as exc:
            # The store failed mid-step: abandon the run as it is (never failed: the journal
            # is intact); it is taken again, from its checkpoint, once the store works.
            log.debug("run %s: %s; abandoned", rid, exc)
            self.health.failed(exc)
        except asyncio.CancelledError:
            status = ex.journal.row.status
        finally:
            try:
                # A transaction with an fsync: off the event loop, which has other runs.
                await asyncio.to_thread(self.store.release, rid, self.owner, token)
            except StoreError:
                self._unreleased[rid] = token  # else it would look held until its lease expires
            except TetherError:
                pass
            finally:
                # Even if cancelled meanwhile (a heartbeat that finds the released lease
                # "lost" cancels the task): a run left in `active` would hold the worker.
                self._forget(rid, status, ex)
        return status

    def _forget(self, rid: str, status: str, ex: RunExecutor) -> None:
        """A run is no longer driven here: count how it was left, and let the worker go on."""
        # Commands delivered but never reached (the run slept or ended first) stay
        # pending in the store: the next owner, or the CLI, applies them.
        self._delivered.difference_update(c.id for c in ex.queued_commands())
        self.finished[status] = self.finished.get(status, 0) + 1
        self.drives.left(ex.journal.row, status, ex.effects.done)
        self.active.pop(rid, None)  # last: the worker waits for runs in `active`
        self._wake.set()

    async def _drain(self, grace: float) -> None:
        self._draining = True
        for _, ex in self.active.values():
            ex.draining = True
        tasks = [t for t, _ in self.active.values()]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending)

    # -- background -----------------------------------------------------------
    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.lease_ttl / 3)
            with contextlib.suppress(TetherError):
                if await asyncio.to_thread(reclaim_dead_local, self.store, wall=self.wall):
                    self._wake.set()
            held = {rid: ex.journal.fence for rid, (_, ex) in self.active.items()
                    if ex.journal.fence is not None}
            if not held:
                continue
            try:
                lost = await asyncio.to_thread(self.store.renew, held, self.owner,
                                               self.lease_ttl, self.wall.now())
            except StoreError as exc:  # the fencing tokens still protect the runs
                self.health.failed(exc)
                continue
            for rid in lost:
                entry = self.active.get(rid)
                # The run may have ended and been taken again (a new token) while the renewal
                # ran: only the executor holding the lost token is abandoned.
                if entry and entry[1].journal.fence == held[rid]:
                    log.warning("run %s: lease lost; abandoning it", rid)
                    entry[0].cancel()

    async def _expire_approvals(self) -> None:
        """Apply ``on_expiry`` to approval requests nobody decided in time."""
        from tether.runtime.decisions import expire_due
        while True:
            await asyncio.sleep(1.0)
            try:
                await asyncio.to_thread(expire_due, self.store, now=self.wall.now())
            except StoreError as exc:
                self.health.failed(exc)
            except TetherError as exc:
                log.warning("worker %s: expiring approvals failed (%s); retrying", self.owner, exc)

    async def _poll_commands(self) -> None:
        while True:
            await asyncio.sleep(max(self.poll, 0.02))
            if not self.active:
                continue
            try:
                pending = self.store.pending_commands(list(self.active))
            except StoreError as exc:
                self.health.failed(exc)
                continue
            for c in pending:
                if c.id in self._delivered:
                    continue
                entry = self.active.get(c.run)
                if entry is None:
                    continue
                self._delivered.add(c.id)
                task, ex = entry
                ex.deliver([c])
                if c.kind == "stop" and ex.in_call:
                    task.cancel()  # stop means now: cancel the in-flight model or tool call

