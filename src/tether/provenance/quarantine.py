"""Quarantine: contain a run suspected of going wrong, without undoing anything yet.

``quarantine`` pauses the run (journaled), holds its undelivered outgoing
messages (they stay out of their recipients' inboxes), and marks every live
blackboard and file version it wrote as suspect, so a run that reads one is
told (``suspect`` on the read). While quarantined, anything it sends is held
and anything it writes is suspect, even if an operator resumes it to look.
``release`` lifts all of it: held messages are delivered, the marks cleared.
Both are journaled in the run's chain (``run.quarantined``, ``run.released``)
with the row changes in the same commit. A rollback retracts held messages
after its step like any other undelivered message.
"""

from __future__ import annotations

from tether.errors import UsageError
from tether.provenance import rollback as rb
from tether.runtime.containment import QuarantineResult, contain
from tether.runtime.holding import holding
from tether.runtime.operator import actor, find_run
from tether.store.protocol import Store


def quarantine(store: Store, run_ref: str, *, release: bool = False, reason: str = "",
               who: str | None = None) -> QuarantineResult:
    """Quarantine the run (or release it); see the module docstring."""
    row = find_run(store, run_ref)
    by = who or actor(store=store)
    if not release:
        if row.spec.get("quarantined"):
            raise UsageError(f"run {row.id} is quarantined already; `tether quarantine {row.id} "
                             "--release` lifts it")
        rb.pause_if_active(store, row, by)
    elif not row.spec.get("quarantined"):
        raise UsageError(f"run {row.id} is not quarantined")
    with holding(store, row.id, kind="quarantine", busy=rb.busy(row.id), wait=5.0) as j:
        assert j is not None
        for _ in range(rb.RETRIES):
            done = contain(store, j, release=release, reason=reason, by=by)
            if done is not None:
                return done
    raise UsageError(f"run {row.id}: its messages kept being delivered while they were being "
                     "held; run the command again")
