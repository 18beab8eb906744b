"""A worker's background loops: the lease heartbeat, command polling, approvals' expiry.

Each loop runs as a task beside the runs a worker drives and makes its store calls
in a thread, so a slow store (a lock, an fsync) never stalls the runs' event loop.
A store failure is handed to the worker's :class:`StoreHealth` and the loop goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import MutableSet
from dataclasses import dataclass

from tether.core.clock import WallClock
from tether.errors import StoreError, TetherError
from tether.runtime.decisions import expire_due
from tether.runtime.executor import RunExecutor
from tether.runtime.leases import reclaim_dead_local
from tether.runtime.storage_health import StoreHealth
from tether.store.protocol import Store

log = logging.getLogger("tether.worker")

Active = dict[str, tuple["asyncio.Task[str]", RunExecutor]]
"""The runs a worker drives: their tasks and executors, by run id."""


@dataclass(slots=True)
class Upkeep:
    """The background loops of one ``Worker.run()`` (its maps are the worker's own)."""

    store: Store
    owner: str
    wall: WallClock
    lease_ttl: float
    poll: float
    health: StoreHealth
    active: Active
    delivered: MutableSet[int]
    """Commands handed to an executor already (not handed twice)."""
    wake: asyncio.Event
    """Set when a run may have become runnable: the worker looks at once."""
    lost: MutableSet[str]
    """Runs cancelled here because their lease was lost: the worker leaves them
    ``abandoned``, as when a commit is refused, not in the status their row still has."""

    def start(self) -> list[asyncio.Task[None]]:
        return [asyncio.create_task(self.heartbeat()), asyncio.create_task(self.poll_commands()),
                asyncio.create_task(self.expire_approvals())]

    async def heartbeat(self) -> None:
        """Renew the leases of the runs driven here; abandon a run whose lease was lost."""
        while True:
            await asyncio.sleep(self.lease_ttl / 3)
            with contextlib.suppress(TetherError):
                if await asyncio.to_thread(reclaim_dead_local, self.store, wall=self.wall):
                    self.wake.set()
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
                    self.lost.add(rid)
                    entry[0].cancel()

    async def expire_approvals(self) -> None:
        """Apply ``on_expiry`` to approval requests nobody decided in time."""
        while True:
            await asyncio.sleep(1.0)
            try:
                await asyncio.to_thread(expire_due, self.store, now=self.wall.now())
            except StoreError as exc:
                self.health.failed(exc)
            except TetherError as exc:
                log.warning("worker %s: expiring approvals failed (%s); retrying", self.owner, exc)

    async def poll_commands(self) -> None:
        """Hand operators' commands to the runs' executors; ``stop`` cancels a call at once."""
        while True:
            await asyncio.sleep(max(self.poll, 0.02))
            if not self.active:
                continue
            try:
                pending = await asyncio.to_thread(self.store.pending_commands, list(self.active))
            except StoreError as exc:
                self.health.failed(exc)
                continue
            for c in pending:
                if c.id in self.delivered:
                    continue
                entry = self.active.get(c.run)
                if entry is None:
                    continue
                self.delivered.add(c.id)
                task, ex = entry
                ex.deliver([c])
                if c.kind == "stop" and ex.in_call:
                    task.cancel()  # stop means now: cancel the in-flight model or tool call
