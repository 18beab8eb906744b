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
import dataclasses
import logging
import signal
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

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
    Unstorable,
    UsageError,
)
from tether.runtime import commands as cmds
from tether.runtime.agent import AgentLike
from tether.runtime.background import Background
from tether.runtime.changes import DriveLog, RunChange, WorkerStats
from tether.runtime.committer import GroupCommitter, OnCommit
from tether.runtime.executor import PIPELINE, RunExecutor
from tether.runtime.holding import fail_held
from tether.runtime.leases import owner_name, reclaim_dead_local
from tether.runtime.loading import RunLoader, SkipRun, Taken, Unloadable
from tether.runtime.policybook import PolicyBook
from tether.runtime.prices import price_table
from tether.runtime.storage_health import GIVE_UP_AFTER, STORAGE_BACKOFF, StoreHealth
from tether.runtime.upkeep import Active, Upkeep
from tether.store.protocol import Store
from tether.system_clock import SYSTEM_CLOCK

if TYPE_CHECKING:
    from tether.core.policy import Policy
    from tether.notify import WebhookConfig
    from tether.sealing import SealSchedule

log = logging.getLogger("tether.worker")


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
        seal: when to sign checkpoints of the store (``tether worker --seal-key``).
        on_commit: the sink of every write this worker's commits made durable, e.g.
            :class:`tether.telemetry.sink.TelemetrySink` (spans, metrics); see
            :data:`tether.runtime.committer.OnCommit`.
    """

    def __init__(self, store: Store, *, agents: Mapping[str, AgentLike] | None = None,
                 clock: Clock | None = None, wall: WallClock | None = None,
                 prices: PriceTable | None = None,
                 concurrency: int = 1000, lease_ttl: float = 30.0, poll_interval: float = 0.05,
                 owner: str | None = None, keyframe_every: int = 128,
                 only: set[str] | None = None, policy: Policy | None = None,
                 webhook: WebhookConfig | None = None, pipeline: int = PIPELINE,
                 give_up_after: float = GIVE_UP_AFTER,
                 storage_backoff: Backoff = STORAGE_BACKOFF,
                 on_change: Callable[[RunChange], None] | None = None,
                 seal: SealSchedule | None = None,
                 on_commit: OnCommit | None = None) -> None:
        # long: one line per option, checked then kept (the signature alone is ten)
        _check_options(concurrency, lease_ttl, pipeline, give_up_after)
        self.store = store
        self.clock = clock or SYSTEM_CLOCK
        self.wall = wall or SYSTEM_CLOCK
        self.concurrency = concurrency
        self.lease_ttl = lease_ttl
        self.poll = poll_interval
        self.owner = owner or owner_name("worker", f"{id(self):x}")
        self.only = only
        self.webhook = webhook
        self.background = Background(store, self.wall, webhook=webhook, seal=seal)
        self.policies = _policies_in_force(store, policy)
        self.committer = GroupCommitter(store, storage_patience=give_up_after,
                                        storage_backoff=storage_backoff, on_commit=on_commit,
                                        timer=self.wall.monotonic)
        self.health = StoreHealth(self.owner, storage_backoff, give_up_after=give_up_after,
                                  now=self.wall.monotonic,
                                  writes=lambda: self.committer.committed)
        self.loader = RunLoader(
            store, self.owner, dict(agents or {}), self.committer, self.policies, self.clock,
            self.wall, UlidSource(self.clock.now), prices or price_table(),  # $TETHER_PRICES
            keyframe_every, pipeline, lease_ttl)
        self.active: Active = {}
        self.finished: dict[str, int] = {}
        self.runs_driven = 0
        self.drives = DriveLog(on_change)
        # Leases of runs abandoned while the store failed: released at the next pass.
        self._unreleased: dict[str, int] = {}
        # Runs whose agent this process cannot load: left for workers that can, retried later.
        self._unloadable: dict[str, float] = {}
        self._draining = False
        self._running = False
        self._wake = asyncio.Event()
        self._delivered: set[int] = set()
        self._lost: set[str] = set()  # cancelled by the heartbeat: their lease was taken

    # -- public ---------------------------------------------------------------
    async def run(self, *, until_idle: bool = False, stop: asyncio.Event | None = None,
                  handle_signals: bool = False, grace: float = 10.0) -> WorkerStats:
        """Drive runs until ``stop`` is set (or, with ``until_idle``, until no run is runnable
        here or held by another live worker: workers started together end together).

        A worker can run again once a ``run()`` returned; each returns the stats of that
        run only. Two ``run()`` of one worker at once are refused (UsageError).
        """
        if self._running:
            raise UsageError(f"worker {self.owner} is already running; wait for its run() to "
                             "return, or make another Worker")
        self._running = True
        try:
            return await self._run(until_idle, stop or asyncio.Event(), handle_signals, grace)
        finally:
            self._running = False

    async def _run(self, until_idle: bool, stop: asyncio.Event, handle_signals: bool,
                   grace: float) -> WorkerStats:
        # Fresh per run: the last run's drain and counts must not carry over.
        self._draining, self.runs_driven, self.finished = False, 0, {}
        self.drives = DriveLog(self.drives.on_change)
        self._delivered, self._lost, self._wake = set(), set(), asyncio.Event()
        # Only a worker that is to end gives up on a failing store (and says so).
        self.health.give_up_after = self.committer.storage_patience if until_idle else None
        # Sync step functions get threads of their own (one per run at most), apart from the
        # pool their tools run on (threads only as steps need them).
        step_threads = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.concurrency, thread_name_prefix="tether-step")
        self.loader = dataclasses.replace(self.loader, step_threads=step_threads)
        await self._left_behind()
        signals = _Signals(stop) if handle_signals else None
        self.background.start(Upkeep(self.store, self.owner, self.wall, self.lease_ttl,
                                     self.poll, self.health, self.active, self._delivered,
                                     self._wake, self._lost))
        try:
            while not stop.is_set():
                left = sum(self.finished.values())
                started = await self._pass(until_idle, stop)
                if started is None:
                    continue  # the store failed: the next pass waits (backoff)
                # A run ended in the pass may wake another; one held elsewhere may yet be ours.
                if until_idle and not self.active and not started \
                        and sum(self.finished.values()) == left \
                        and not await asyncio.to_thread(self.loader.others_hold, self.only):
                    break
                await self._nap(self.poll)
        finally:
            await self._drain(grace)
            await self.background.stop(self.committer, self.health)
            # A sync step still running (stopped, its result discarded) keeps its thread
            # until it returns: do not wait for it here.
            step_threads.shutdown(wait=False)
            if signals is not None:
                signals.close()
        return WorkerStats(self.runs_driven, dict(self.finished), self.drives.steps,
                           self.drives.effects, dict(self.drives.final))

    async def _left_behind(self) -> None:
        """Pick up what a worker killed before us left (off the loop: these read the store
        whole): its leases on this host, and a monitor's orders it died before queueing, of
        runs nobody will take again (ended or parked in the alert's commit; keyed: never
        queued twice)."""
        with contextlib.suppress(TetherError):
            await asyncio.to_thread(reclaim_dead_local, self.store, wall=self.wall)
        with contextlib.suppress(TetherError):
            await asyncio.to_thread(cmds.resend_orders, self.store, self.clock.now())

    def alert(self, run: str, name: str, detail: dict[str, object] | None = None) -> bool:
        """The hook for monitors outside the worker (a judge on a schedule): ``run`` journals
        an ``alert`` (a ``pause`` verdict of monitor ``name``, ``detail`` as its figures) at
        its next safe point and pauses there. False if this worker does not drive it."""
        entry = self.active.get(run)
        if entry is None:
            return False
        entry[1].alert(name, detail)
        return True

    @property
    def policy(self) -> Policy:
        """The store-wide policy in force (a swarm's own, if applied, gates that swarm's runs)."""
        return self.policies.for_swarm(None).policy

    # -- background -----------------------------------------------------------
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
            await self._release_abandoned()
            return await self._fill()
        except StoreError as exc:  # locked past its busy timeout, a full disk, ...
            self.health.failed(exc)
            return None

    async def _nap(self, seconds: float) -> None:
        """Sleep up to ``seconds``; a run ending wakes the loop early."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        self._wake.clear()

    async def _release_abandoned(self) -> None:
        for rid, token in list(self._unreleased.items()):
            await asyncio.to_thread(self.store.release, rid, self.owner, token)
            if self._unreleased.get(rid) == token:
                del self._unreleased[rid]

    async def _fill(self) -> int:
        """Take runnable runs up to the free slots; the store's part runs in a thread."""
        for change in await asyncio.to_thread(self.policies.refresh, self.store):
            log.warning("worker %s: %s", self.owner, change)  # the runs get it at their next action
        free = self.concurrency - len(self.active)
        if free <= 0 or self._draining:
            return 0
        taken = await asyncio.to_thread(self.loader.take, free, set(self.active),
                                        dict(self._unloadable), self.only)
        if taken is None:
            return 0
        self.health.worked(progress=False)  # a write went through (an idle store has none)
        started = 0
        for t in taken:
            if t.executor is None:
                self._not_started(t)
                continue
            ex = t.executor
            # Commands queued while no one owned the run are applied at its first safe point.
            ex.deliver(list(t.commands))
            self._delivered.update(c.id for c in t.commands)
            self.drives.took(ex.journal.row)
            task = asyncio.create_task(self._drive(t.run, t.token, ex), name=f"run:{t.run}")
            self.active[t.run] = (task, ex)
            self.runs_driven += 1
            started += 1
        return started

    def _not_started(self, t: Taken) -> None:
        """What a run that could not be loaded here leaves behind (its lease is released,
        or will be once the store works)."""
        exc = t.error
        if isinstance(exc, (StorageError, StoreLocked)):  # the store's fault, not the run's
            self.health.failed(exc)
            self._unreleased[t.run] = t.token  # released at the next pass that works
        elif isinstance(exc, Unloadable):
            self._unloadable[t.run] = self.wall.monotonic() + 30.0
        elif not isinstance(exc, (SkipRun, LeaseLost)):  # a broken agent module or row
            log.warning("run %s cannot be started here: %s: %s", t.run, type(exc).__name__, exc)
            self._unloadable[t.run] = self.wall.monotonic() + 30.0

    # -- driving --------------------------------------------------------------
    async def _drive(self, rid: str, token: int, ex: RunExecutor) -> str:
        status = "abandoned"
        try:
            status = await ex.drive()
        except (LeaseLost, Conflict) as exc:
            log.warning("run %s: %s; abandoned", rid, exc)
        except Unstorable as exc:
            # Taken again, the run would write it again, for ever: fail it, naming the field.
            status = await self._fail_unstorable(rid, token, exc)
        except StoreError as exc:
            # The store failed mid-step: abandon the run as it is (never failed: the journal
            # is intact); it is taken again, from its checkpoint, once the store works.
            log.debug("run %s: %s; abandoned", rid, exc)
            self.health.failed(exc)
        except asyncio.CancelledError:
            status = "abandoned" if rid in self._lost else ex.journal.row.status
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

    async def _fail_unstorable(self, rid: str, token: int, exc: Unstorable) -> str:
        log.warning("%s; failing the run", exc)
        try:
            return await asyncio.to_thread(fail_held, self.store, rid, token, str(exc), self.wall)
        except StoreError as err:  # failing storage, a lease lost: taken again later
            log.warning("run %s: could not journal its failure: %s", rid, err)
            self.health.failed(err)
            return "abandoned"

    def _forget(self, rid: str, status: str, ex: RunExecutor) -> None:
        """A run is no longer driven here: count how it was left, and let the worker go on."""
        # Commands delivered but never reached (the run slept or ended first) stay
        # pending in the store: the next owner, or the CLI, applies them.
        self._delivered.difference_update(c.id for c in ex.queued_commands())
        self.finished[status] = self.finished.get(status, 0) + 1
        self.drives.left(ex.journal.row, status, ex.effects.done)
        self._lost.discard(rid)
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


def _policies_in_force(store: Store, policy: Policy | None) -> PolicyBook:
    """The store's policies (store chain), re-read every scheduling pass; one this worker
    cannot use, or one other than ``policy``, stops it here, before it drives anything."""
    book = PolicyBook()
    book.refresh(store, strict=True)
    if policy is not None:
        book.require(policy, "this worker's policy")
    return book


def _check_options(concurrency: int, lease_ttl: float, pipeline: int, give_up_after: float) -> None:
    if concurrency < 1:
        raise UsageError(f"concurrency must be at least 1, not {concurrency}")
    if not lease_ttl > 0:
        raise UsageError(f"lease_ttl must be a positive number of seconds, not {lease_ttl}")
    if pipeline < 0:
        raise UsageError(f"pipeline must be 0 (every step durable first) or more, not {pipeline}")
    if not give_up_after >= 0:
        raise UsageError(f"give_up_after must be zero or more seconds, not {give_up_after}")


class _Signals:
    """SIGTERM and SIGINT set ``stop`` (the worker drains) while a run() lasts."""

    def __init__(self, stop: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._loop.add_signal_handler(sig, stop.set)

    def close(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._loop.remove_signal_handler(sig)
