"""Group commit: one writer thread batches the commits of many concurrent runs.

Runs hand their writes to :meth:`GroupCommitter.submit` and await the result.
The writer takes everything queued since its last commit and commits it in one
transaction, so a hundred runs that finish a step together pay for one fsync,
not a hundred. The transaction runs in a thread so the event loop keeps
scheduling steps while the disk syncs.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tether.core.backoff import STORAGE_BACKOFF, Backoff
from tether.errors import StorageError, StoreError, StoreLocked
from tether.store.protocol import Store
from tether.store.records import Write

_STOP = object()
_LOCKED = Backoff(base=0.05, cap=1.0)
"""Between tries of a commit while another process holds the write lock."""
log = logging.getLogger("tether.committer")

OnCommit = Callable[[Sequence[Write], float], None]
"""Told, on the writer thread, of the writes a transaction made durable (in commit order,
each run's in its own order) and the seconds the transaction took: the committed stream that
telemetry is a sink of (:mod:`tether.telemetry`). A write the store refused is not in it."""


@dataclass(slots=True)
class _Item:
    write: Write
    future: asyncio.Future[None]
    loop: asyncio.AbstractEventLoop


class GroupCommitter:
    """Batches writes from coroutines into shared store transactions.

    Args:
        store: where to commit.
        max_batch: the most writes in one transaction.
        lock_patience: seconds to keep retrying while another process holds the lock.
        storage_patience: seconds to keep retrying while the storage fails (a full disk);
            :meth:`abort` stops sooner.
        storage_backoff: the schedule of those retries (the worker passes its own).
        on_commit: the committed stream's sink (:data:`OnCommit`); called after the
            waiters are told, so it adds nothing to a run's wait. What it raises is logged.
        timer: a monotonic clock (the worker's wall clock) timing each transaction for
            ``on_commit``; without one the seconds it is told are 0.
    """

    def __init__(self, store: Store, *, max_batch: int = 512, lock_patience: float = 300.0,
                 storage_patience: float = 60.0, storage_backoff: Backoff = STORAGE_BACKOFF,
                 on_commit: OnCommit | None = None,
                 timer: Callable[[], float] | None = None) -> None:
        self.store = store
        self.on_commit = on_commit
        self.timer = timer
        self.max_batch = max_batch
        self.lock_patience = lock_patience
        self.storage_patience = storage_patience
        self.storage_backoff = storage_backoff
        self.failure: StoreError | None = None
        """The storage error a batch is being retried for (None once a commit goes through)."""
        self._abort = threading.Event()
        self._q: queue.SimpleQueue[_Item | object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="tether-writer", daemon=True)
        self._started = False
        self.batches = 0
        self.writes = 0
        self.committed = 0
        """Batches in which the store accepted a write: a worker watches it to learn that
        storage works again."""

    def start(self) -> None:
        if not self._started:
            self._abort.clear()
            self._started = True
            if self._thread.ident is not None:  # closed before: a thread starts only once
                self._thread = threading.Thread(target=self._run, name="tether-writer",
                                                daemon=True)
            self._thread.start()

    def submit_nowait(self, write: Write) -> asyncio.Future[None]:
        """Queue ``write``; the future settles once it is durable (or refused)."""
        self.start()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        # A run abandoned with commits in flight (its lease taken by another worker, a
        # stop) awaits them no more: their refusal (LeaseLost) is expected, and must not
        # reach the worker's log as asyncio's "Future exception was never retrieved".
        # Whoever awaits the future still gets the exception.
        fut.add_done_callback(_observed)
        self._q.put(_Item(write, fut, loop))
        return fut

    async def submit(self, write: Write) -> None:
        """Commit ``write`` durably; raises what the store refused it with."""
        fut = self.submit_nowait(write)
        # Shielded so that cancelling the caller does not disturb the future the writer
        # settles. A write once queued cannot be recalled: it lands, in order, before
        # anything the run queues afterwards, so the run's chain stays consistent.
        await asyncio.shield(fut)

    def abort(self) -> None:
        """Stop retrying storage failures: a batch waiting for the disk to work again fails
        with its error at once, and so does any later one (the worker gives up, or stops)."""
        self._abort.set()

    def close(self) -> None:
        """Finish queued writes and stop the writer thread (without waiting for a failing
        disk)."""
        self.abort()
        if self._started:
            self._q.put(_STOP)
            self._thread.join()
            self._started = False

    def _run(self) -> None:
        while True:
            first = self._q.get()
            if first is _STOP:
                return
            items = [first]
            stop = False
            while len(items) < self.max_batch:
                try:
                    nxt = self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                items.append(nxt)
            self._commit([i for i in items if isinstance(i, _Item)])
            # Drop the batch now: a thread blocked on the queue would keep it alive.
            del items, first
            if stop:
                return

    def _commit(self, items: list[_Item]) -> None:
        writes = [i.write for i in items]
        tries, waited, seconds = 0, 0.0, 0.0
        timer = self.timer if self.on_commit is not None else None  # no sink: no clock read
        while True:
            try:
                t0 = timer() if timer is not None else 0.0
                results = self.store.commit(writes)
                seconds = timer() - t0 if timer is not None else 0.0
                self.failure = None
                if any(r is None for r in results):
                    self.committed += 1
                break
            except (StoreLocked, StorageError) as exc:
                # Another process holds the write lock, or the disk is full: these writes
                # must land (one may record an effect that happened, which would otherwise be
                # in doubt), and the transaction rolled back whole, so try again, for a while.
                delay = self._retry_delay(exc, tries, waited, len(items))
                if delay is None:
                    results = [exc] * len(items)
                    break
                if isinstance(exc, StoreLocked):
                    time.sleep(delay)
                else:
                    self._abort.wait(delay)  # a give-up or a shutdown cuts it short
                waited += delay
                tries += 1
            except BaseException as exc:  # the whole transaction failed: tell every waiter
                results = [exc] * len(items)
                break
        self.batches += 1
        self.writes += len(items)
        for item, err in zip(items, results, strict=True):
            item.loop.call_soon_threadsafe(_settle, item.future, err)
        if self.on_commit is not None:
            self._tell(self.on_commit, writes, results, seconds)

    @staticmethod
    def _tell(sink: OnCommit, writes: list[Write], results: list[BaseException | None],
              seconds: float) -> None:
        """Hand the writes the store accepted to the committed stream's sink."""
        done = [w for w, r in zip(writes, results, strict=True) if r is None]
        if done:
            try:
                sink(done, seconds)
            except Exception:  # a sink's failure must never stop the journal
                log.exception("the committed-stream sink failed on a batch of %d writes",
                              len(done))

    def _retry_delay(self, exc: StoreError, tries: int, waited: float, n: int) -> float | None:
        """How long to wait before trying a failed batch again; None: give up on it."""
        if isinstance(exc, StoreLocked):
            # Not cut short by abort(): the lock is another process's, and goes away.
            if waited >= self.lock_patience:
                return None
            # One line when it starts, not one a second for as long as it lasts.
            log.log(logging.DEBUG if tries else logging.WARNING, "store locked; retrying a "
                    "group commit of %d writes for up to %gs", n, self.lock_patience)
            return _LOCKED.delay(tries, random.random())
        if self._abort.is_set() or waited >= self.storage_patience:
            return None
        self.failure = exc  # the worker watches it, and logs the state changes
        log.debug("storage failed; retrying a group commit of %d writes: %s", n, exc)
        return self.storage_backoff.delay(tries, random.random())


def _observed(fut: asyncio.Future[None]) -> None:
    if not fut.cancelled():
        fut.exception()


def _settle(fut: asyncio.Future[None], err: BaseException | None) -> None:
    if fut.done():
        return
    if err is None:
        fut.set_result(None)
    else:
        fut.set_exception(err)
