"""A worker's sealing loop: a signed checkpoint every N events or T seconds.

Runs as a background task of ``Worker.run()`` when the worker was given a key
(``tether worker --seal-key PREFIX.key``); its store calls run in a thread, so
hashing a large store never stalls the runs' event loop. Any worker of a store
may seal: two at once are told apart by the store (one gets Conflict and tries
again on its next turn). A store that no longer extends its last checkpoint is
logged as an error and not signed (:func:`tether.sealing.seal`); the worker
goes on driving runs.
"""

from __future__ import annotations

import asyncio
import logging

from tether.core.clock import WallClock
from tether.errors import Conflict, TetherError, VerificationFailed
from tether.sealing import SealSchedule, seal
from tether.store.protocol import Store

log = logging.getLogger("tether.worker")


class Sealer:
    """Seals ``store`` on ``schedule``; :meth:`final` seals once more as the worker stops."""

    def __init__(self, store: Store, schedule: SealSchedule, wall: WallClock) -> None:
        self.store = store
        self.schedule = schedule
        self.wall = wall
        self.sealed = -1  # events covered by the last checkpoint (-1: not read yet)
        self.at = wall.monotonic()
        self.retry_at = 0.0  # after a failed or refused seal: not before then
        self.made = 0
        """Checkpoints this sealer signed."""

    async def run(self) -> None:
        tick = min(1.0, self.schedule.seconds)
        while True:
            await asyncio.sleep(tick)
            try:
                count = await asyncio.to_thread(self.store.event_count)
            except TetherError as exc:
                log.warning("sealing: cannot count events (%s); retrying", exc)
                continue
            if self.sealed < 0:
                cps = await asyncio.to_thread(self.store.signed_checkpoints)
                self.sealed = cps[-1].size if cps else 0
            new = count - self.sealed
            now = self.wall.monotonic()
            late = now - self.at >= self.schedule.seconds
            if now >= self.retry_at and (new >= self.schedule.events or (new > 0 and late)):
                await asyncio.to_thread(self.seal_now)

    def seal_now(self) -> None:
        """Seal now (in the caller's thread); log what happened, never raise."""
        self.at = self.wall.monotonic()
        try:
            cp, new = seal(self.store, self.schedule.signer, now=self.wall.now())
        except Conflict:
            self.sealed = -1  # another worker sealed meanwhile: the next turn reads its size
            return
        except VerificationFailed as exc:
            # Once per period, not every tick: the store stays as it is until a human acts.
            log.error("sealing refused: %s", exc)
            self.retry_at = self.at + self.schedule.seconds
            return
        except TetherError as exc:
            log.warning("sealing failed (%s); trying again in %gs", exc, self.schedule.seconds)
            self.retry_at = self.at + self.schedule.seconds
            return
        self.sealed = cp.size
        if new:
            self.made += 1
            log.info("sealed the store: signed checkpoint %d covers %d events", cp.n, cp.size)

    def final(self) -> None:
        """The last seal as the worker stops, so what it committed is sealed too."""
        self.seal_now()
