"""What the tests of a step's turns share: a tally of the tools acting (how many at once,
in what order) and driving a store's runs with a real Worker, approving what waits."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from tether import Worker
from tether.store.sqlite import SQLiteStore

ACTIVE: list[int] = [0]
PEAK: list[int] = [0]
RAN: list[str] = []


def reset() -> None:
    ACTIVE[0] = PEAK[0] = 0
    RAN.clear()


async def acting(name: str, seconds: float) -> str:
    """A tool's body: counted while it acts (``PEAK``: most at once), then noted in ``RAN``."""
    ACTIVE[0] += 1
    PEAK[0] = max(PEAK[0], ACTIVE[0])
    try:
        await asyncio.sleep(seconds)
    finally:
        ACTIVE[0] -= 1
    RAN.append(name)
    return f"{name} done"


def drive(store: SQLiteStore, agents: Mapping[str, Any]) -> None:
    """A Worker until nothing is runnable (bounded: a hang fails, it does not stall)."""
    asyncio.run(asyncio.wait_for(
        Worker(store, agents=dict(agents), poll_interval=0.01).run(until_idle=True), 20))


def approve_then_drive(store: SQLiteStore, agents: Mapping[str, Any]) -> None:
    """Drive, approve the one call waiting for a person, drive again (the step re-runs)."""
    from tether import approvals
    drive(store, agents)
    (req,) = store.approvals(status="pending")
    approvals.decide(store, req.id, approve=True, who="human:ada", agents=dict(agents))
    drive(store, agents)
