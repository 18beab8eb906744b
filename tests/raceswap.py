"""A process that keeps swapping workspace paths for symlinks to an outside folder.

Run as ``python -m tests.raceswap WORKSPACE OUTSIDE STOPFILE``. Layout it expects
(made by ``tests/test_file_race.py``): ``WORKSPACE/d`` a real folder holding
``f.txt``, ``WORKSPACE/d.swap`` a symlink to OUTSIDE, and ``d/f.swap`` a symlink
to ``OUTSIDE/secret.txt``. Each cycle exchanges ``d`` with ``d.swap`` and back, then
``d/f.txt`` with ``d/f.swap`` and back, so between any check and use of a tool the
folder or the file may have become a symlink leading outside.

The exchange is atomic (Linux ``renameat2(RENAME_EXCHANGE)``): the names never
vanish, which keeps the tools busy on the race rather than on missing paths.
Elsewhere it falls back to three renames. It prints ``ready`` after its first
cycle and, once STOPFILE exists, the number of cycles it made.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from collections.abc import Callable

AT_FDCWD = -100
RENAME_EXCHANGE = 2


def _exchanger() -> Callable[[str, str], None]:
    libc = ctypes.CDLL(None, use_errno=True)
    fn = getattr(libc, "renameat2", None)

    def atomic(a: str, b: str) -> None:
        assert fn is not None
        if fn(AT_FDCWD, a.encode(), AT_FDCWD, b.encode(), RENAME_EXCHANGE) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), a)

    def by_renames(a: str, b: str) -> None:
        tmp = a + ".x"
        os.rename(a, tmp)
        os.rename(b, a)
        os.rename(tmp, b)

    if fn is None:
        return by_renames
    return atomic


def _relink(link: str, target: str) -> None:
    """Make ``link`` a symlink to ``target`` again (a tool may have written over it)."""
    if not os.path.islink(link):
        with contextlib.suppress(OSError):
            os.unlink(link)
        with contextlib.suppress(OSError):
            os.symlink(target, link)


def main(workspace: str, outside: str, stop: str) -> int:
    exchange = _exchanger()
    d, d_swap = os.path.join(workspace, "d"), os.path.join(workspace, "d.swap")
    f, f_swap = os.path.join(d, "f.txt"), os.path.join(d, "f.swap")
    secret = os.path.join(outside, "secret.txt")
    cycles = 0
    while not os.path.exists(stop):
        for a, b in ((d, d_swap), (d, d_swap), (f, f_swap), (f, f_swap)):
            with contextlib.suppress(OSError):  # a tool may have removed or replaced one
                exchange(a, b)
        if not os.path.islink(d):  # the real folder is in place: repair its file link
            _relink(f_swap, secret)
        cycles += 1
        if cycles == 1:
            print("ready", flush=True)
    print(cycles, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
