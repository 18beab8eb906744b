"""The audit's second core: a helper process that walks the later part of the chains.

``tether audit verify`` is CPU-bound Python, and the runs' chains are independent
of each other, so on a large store a second process walks the runs past
:data:`SPLIT` of the events while this one walks the others and the store chain.
It sends its part as soon as it is walked, then runs SQLite's integrity check
(which takes no facts from the chains) on the same snapshot while this process
checks batches, links, rows and signed checkpoints: those need every chain, so
the helper would otherwise sit idle through them.
What it found comes back pickled and is taken into the whole as if this process
had walked those runs next (:meth:`~tether.audit.chains.ChainFacts.merge`), so
the report is the one an unsplit walk gives, problems in the same order.

Both must read one snapshot of a store that may be written meanwhile. The
helper opens its own read transaction, later than this one's, and compares the
store's :meth:`~tether.store.protocol.Store.snapshot_mark` with the one read
here: if a commit landed in between, it walks nothing and this process walks
those runs itself, in its own snapshot, as without a helper. So a live store
can cost the helper's work, never the result. (The one write the mark cannot
see, :meth:`~tether.store.protocol.Store.erase_payload`, journals nothing and
leaves a chain that verifies either way.) Any failure of the helper (it cannot
start, is killed, cannot read a page) falls back the same way, where the
unsplit walk then names what it cannot read.

The helper is a command the caller names (``tether.cli.verify_helper``, which
opens the store: the audit does not pick a backend): the request
``(url, mark, part)`` on its stdin, the two messages of :func:`answer` on its
stdout, all pickled (the two ends are one installation of tether). If the
integrity check does not come back, this process runs it itself.
"""

from __future__ import annotations

import os
import pickle
import subprocess
from collections.abc import Callable, Sequence

from tether.audit.chains import ChainShare, walk_share
from tether.audit.report import VerifyReport
from tether.audit.store_chain import verify_store_chain
from tether.errors import StoreError
from tether.store.protocol import Store

PARALLEL_MIN = 20_000
"""Events from which verify walks with a helper: below, starting a Python process
(about 0.2 s) costs more than the half of the walk it saves (measured in
docs/benchmarks.md)."""

SPLIT = 0.45
"""The fraction of the events walked here; the helper walks the rest. Meanwhile this
process also reads the projection rows and the batch chain, so it walks less than
before the helper ran the integrity check after its hand-back (0.6 then). On the bench
store (101,505 events, 2 cores), CPU up to the hand-back: this process 1.9 s, the
helper 1.7 s (its start, walk and pickling) at 0.5; 1.9 s and 1.9-2.2 s at 0.45."""


class Helper:
    """The helper process, started on a store this process holds a snapshot of."""

    def __init__(self, command: Sequence[str], url: str, mark: str, split: float) -> None:
        self._taken = False
        self._share: ChainShare | None = None
        try:
            self._proc: subprocess.Popen[bytes] | None = subprocess.Popen(  # noqa: S603
                list(command), stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            assert self._proc.stdin is not None
            self._proc.stdin.write(pickle.dumps((url, mark, (split, 1.0))))
            self._proc.stdin.close()
        except OSError:
            self.close()

    def share(self) -> ChainShare | None:
        """Wait for the helper's part of the chains: None if it has none (its snapshot was
        not this one's, or it failed), and the caller walks that part itself."""
        if not self._taken:
            self._taken = True
            got = self._next()
            self._share = got if isinstance(got, ChainShare) else None
        return self._share

    def integrity(self) -> list[str] | None:
        """Wait for SQLite's check of the file, which the helper runs after its part of the
        chains, on the same snapshot: its lines (none: sound), or None if it gave no part or
        no check (it failed), and the caller runs the check itself."""
        if self.share() is None:
            return None
        got = self._next()
        if isinstance(got, list) and all(isinstance(x, str) for x in got):
            return got
        return None

    def _next(self) -> object:
        """The helper's next message, or None (it has no more, or it failed)."""
        proc = self._proc
        if proc is None or proc.stdout is None:
            return None
        try:
            # One pickle of the several on the pipe (communicate() would read to the end).
            return pickle.load(proc.stdout)  # noqa: S301 (our own child, its private pipe)
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ValueError,
                TypeError, IndexError, ImportError):
            self.close()
            return None

    def close(self) -> None:
        """Stop the helper if it still runs (verify is done, failed or was interrupted)."""
        proc, self._proc = getattr(self, "_proc", None), None
        self._taken = True
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()


def start_helper(command: Sequence[str], url: str | None, mark: str, size: int,
                 least: int = PARALLEL_MIN) -> Helper | None:
    """A helper for a store of ``size`` events, if it has ``least`` events at least, there
    is a second core, and the store can be opened elsewhere (``url``); ``command`` starts
    it."""
    if not command or url is None or size < least or (os.cpu_count() or 1) < 2:
        return None
    return Helper(command, url, mark, SPLIT)


def answer(store: Store, mark: str, part: tuple[float, float],
           send: Callable[[object], None]) -> None:
    """The helper's work on its own open ``store``, as two messages to ``send``: its part of
    the chains as soon as walked (a :class:`~tether.audit.chains.ChainShare`), then SQLite's
    integrity check of the same snapshot (its lines). None instead if its snapshot is not
    the one marked ``mark`` (the caller then walks ``part`` itself) or a page cannot be read
    (the caller then runs what is missing itself)."""
    try:
        with store.snapshot():
            if store.snapshot_mark() != mark:
                send(None)
                return
            rep = VerifyReport()
            verify_store_chain(store, rep)  # the checkpoints its erasures rewrote
            send(walk_share(store, part, rep.rewritten))
            send(store.check_integrity())
    except StoreError:
        send(None)
