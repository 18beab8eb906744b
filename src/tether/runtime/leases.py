"""Leases held by processes that died on this machine.

A killed worker's leases would block its runs until they expire (30 s by
default). When the owner named in a lease is a process on this host that no
longer exists, the lease can be released at once: no one can be writing with
it. Owners elsewhere are left to expire, as only their host can tell.
"""

from __future__ import annotations

import os
import socket

from tether.core.clock import WallClock
from tether.errors import TetherError
from tether.procs import pid_alive
from tether.store.protocol import Store
from tether.system_clock import SYSTEM_CLOCK

HOST = socket.gethostname()


def owner_name(kind: str | None = None, suffix: str = "") -> str:
    """A lease owner name: ``host:pid[:kind][:suffix]`` (parsed by :func:`reclaim_dead_local`)."""
    parts = [HOST, str(os.getpid())]
    if kind:
        parts.append(kind)
    if suffix:
        parts.append(suffix)
    return ":".join(parts)



def reclaim_dead_local(store: Store, *, wall: WallClock = SYSTEM_CLOCK,
                       statuses: tuple[str, ...] = ("running", "sleeping", "waiting"),
                       runs: list[str] | None = None) -> list[str]:
    """Release live-looking leases whose owner process on this host is gone (of ``runs``,
    or of every run in ``statuses``)."""
    ids = runs if runs is not None else [r.id for st in statuses for r in store.list_runs(status=st)]
    return [run for run in ids if _reclaim(store, run, wall.now())]


def _reclaim(store: Store, run: str, now: float) -> bool:
    lease = store.lease_of(run)
    if lease is None or lease[2] <= now:
        return False
    owner, token, _ = lease
    host, _, rest = owner.partition(":")
    pid = rest.split(":", 1)[0]
    if host != HOST or not pid.isdigit() or int(pid) == os.getpid() or pid_alive(int(pid)):
        return False
    try:
        store.release(run, owner, token)
    except TetherError:
        return False
    return True
