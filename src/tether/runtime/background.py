"""A worker's background tasks beside its scheduling passes, started and stopped together.

Lease upkeep and command polling (:class:`~tether.runtime.upkeep.Upkeep`), the
webhook notifier and the sealer. Stopping cancels them, gives the notifier one
last bounded round (what the runs just journaled is not left waiting), waits
for the committer's last fsync, and then seals what this worker committed.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from tether.core.clock import WallClock
from tether.runtime.committer import GroupCommitter
from tether.runtime.storage_health import StoreHealth
from tether.runtime.upkeep import Upkeep
from tether.store.protocol import Store

if TYPE_CHECKING:
    from tether.notify import Notifier, WebhookConfig
    from tether.runtime.sealer import Sealer
    from tether.sealing import SealSchedule


class Background:
    """The tasks of one worker's :meth:`~tether.runtime.worker.Worker.run`."""

    def __init__(self, store: Store, wall: WallClock, *, webhook: WebhookConfig | None,
                 seal: SealSchedule | None) -> None:
        self.store, self.wall, self.webhook, self.seal = store, wall, webhook, seal
        self.tasks: list[asyncio.Task[None]] = []
        self.notifier: Notifier | None = None
        self.sealer: Sealer | None = None

    def start(self, upkeep: Upkeep) -> None:
        self.tasks = upkeep.start()
        if self.webhook is not None:
            from tether.notify import Notifier
            self.notifier = Notifier(self.store, self.webhook, clock=self.wall.now)
            self.tasks.append(asyncio.create_task(self.notifier.run(asyncio.Event())))
        if self.seal is not None:
            from tether.runtime.sealer import Sealer
            self.sealer = Sealer(self.store, self.seal, self.wall)
            self.tasks.append(asyncio.create_task(self.sealer.run()))

    async def stop(self, committer: GroupCommitter, health: StoreHealth) -> None:
        for t in self.tasks:
            t.cancel()
        for t in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if self.notifier is not None and self.webhook is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.notifier.deliver_due(), self.webhook.timeout + 1)
            self.notifier.close()
        await asyncio.to_thread(committer.close)  # waits for the last writes' fsync
        if self.sealer is not None:
            await asyncio.to_thread(self.sealer.final)  # what this worker committed, sealed
        health.close()  # commits that landed since the last pass: say it works again
