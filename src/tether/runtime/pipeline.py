"""A run's commits as its executor makes them: pipelined at the end of a step, waited for
before anything that must be durable first (docs/design.md, "Pipelined commits").

Durability is unchanged where it matters: an effect's intent waits for every
earlier write (commits are applied in order), and a run never leaves its process
(sleep, pause, done, shutdown) before its last write is durable. With a few
steps' writes in flight, one transaction and one fsync can carry several steps of
the same run: a crash loses at most those steps, which are re-run.
"""

from __future__ import annotations

import asyncio
from collections import deque

from tether.runtime.committer import GroupCommitter
from tether.runtime.journal import RunJournal


class CommitPipeline:
    """One run's end-of-step commits in flight (at most ``depth``; 0: none, every step
    is durable before the next one starts)."""

    def __init__(self, journal: RunJournal, committer: GroupCommitter, depth: int) -> None:
        self.journal = journal
        self.committer = committer
        self.depth = depth
        self._inflight: deque[asyncio.Future[None]] = deque()

    async def flush(self) -> None:
        """Make everything journaled so far durable (before an effect, at the end)."""
        await self.settle()
        await self.journal.flush(self.committer)

    async def settle(self, keep: int = 0) -> None:
        """Wait until at most ``keep`` end-of-step commits are in flight; raise what a
        commit failed with."""
        while len(self._inflight) > keep:
            try:
                await self._inflight.popleft()
            except BaseException:
                # The later commits fail as well (their seqs follow the refused ones) and
                # nobody will await them: take their errors, which would otherwise be
                # printed as "Future exception was never retrieved".
                for f in self._inflight:
                    f.add_done_callback(_retrieved)
                self._inflight.clear()
                raise

    async def end_step(self) -> None:
        """Commit the step just finished, letting the next steps run while it syncs."""
        if self.depth <= 0:
            await self.flush()  # strict: this step is durable before the next one starts
            return
        await self.settle(keep=self.depth - 1)
        if self.journal.dirty:
            w = self.journal.take()
            fut = self.committer.submit_nowait(w)
            if w.versions or w.messages:  # what a verdict would otherwise not find
                fut.add_done_callback(lambda f: None if f.cancelled() or f.exception()
                                      is not None else self.journal.durable(w))
            self._inflight.append(fut)


def _retrieved(fut: asyncio.Future[None]) -> None:
    if not fut.cancelled():
        fut.exception()
