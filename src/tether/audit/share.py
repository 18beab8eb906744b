"""The audit's second core: a helper process that walks the later part of the chains.

``tether audit verify`` is CPU-bound Python, and the runs' chains are independent
of each other, so on a large store a second process walks the runs past
:data:`SPLIT` of the events (and runs SQLite's integrity check, which takes no
facts from the chains) while this one walks the others and the store chain.
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
``(url, mark, part)`` on its stdin, the :func:`answer` on its stdout, both
pickled (the two ends are one installation of tether).
"""

from __future__ import annotations

import os
import pickle
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from tether.audit.chains import ChainShare, walk_share
from tether.audit.report import VerifyReport
from tether.audit.store_chain import verify_store_chain
from tether.errors import StoreError
from tether.store.protocol import Store

PARALLEL_MIN = 20_000
"""Events from which verify walks with a helper: below, starting a Python process
(about 0.2 s) costs more than the half of the walk it saves (measured in
docs/benchmarks.md)."""

SPLIT = 0.6
"""The fraction of the events walked here; the helper walks the rest and runs the
integrity check, while this process also checks batches, links, rows and signed
checkpoints after the walk."""


@dataclass(frozen=True, slots=True)
class HelperResult:
    """What the helper found: SQLite's integrity lines and its part of the chains."""

    integrity: list[str]
    share: ChainShare


class Helper:
    """The helper process, started on a store this process holds a snapshot of."""

    def __init__(self, command: Sequence[str], url: str, mark: str, split: float) -> None:
        self._done = False
        self._result: HelperResult | None = None
        try:
            self._proc: subprocess.Popen[bytes] | None = subprocess.Popen(  # noqa: S603
                list(command), stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            assert self._proc.stdin is not None
            self._proc.stdin.write(pickle.dumps((url, mark, (split, 1.0))))
            self._proc.stdin.close()
        except OSError:
            self.close()

    def result(self) -> HelperResult | None:
        """Wait for the helper's answer: None if it has none (its snapshot was not this
        one's, or it failed), and the caller walks its part itself."""
        if self._done or self._proc is None:
            return self._result
        self._done = True
        try:
            assert self._proc.stdout is not None
            with self._proc.stdout:
                out = self._proc.stdout.read()  # (communicate() would flush the closed stdin)
            self._proc.wait()
            if self._proc.returncode == 0:
                got = pickle.loads(out)  # noqa: S301 (our own child, over its private pipe)
                self._result = got if isinstance(got, HelperResult) else None
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ValueError):
            self._result = None
        return self._result

    def share(self) -> ChainShare | None:
        """The helper's part of the chains, or None (see :meth:`result`)."""
        got = self.result()
        return got.share if got else None

    def close(self) -> None:
        """Stop the helper if it still runs (verify failed or was interrupted)."""
        proc, self._proc, self._done = getattr(self, "_proc", None), None, True
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


def answer(store: Store, mark: str, part: tuple[float, float]) -> HelperResult | None:
    """The helper's work on its own open ``store``: None if its snapshot is not the one
    marked ``mark`` (the caller then walks ``part`` itself) or a page cannot be read."""
    try:
        with store.snapshot():
            if store.snapshot_mark() != mark:
                return None
            integrity = store.check_integrity()
            rep = VerifyReport()
            verify_store_chain(store, rep)  # the checkpoints its erasures rewrote
            return HelperResult(integrity, walk_share(store, part, rep.rewritten))
    except StoreError:
        return None
