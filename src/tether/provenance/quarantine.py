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

from dataclasses import dataclass
from typing import Any

from tether.errors import Conflict, UsageError
from tether.provenance import rollback as rb
from tether.runtime.holding import holding
from tether.runtime.journal import RunJournal
from tether.runtime.operator import actor, find_run
from tether.store.protocol import Store
from tether.store.records import transition


@dataclass(frozen=True, slots=True)
class QuarantineResult:
    run: str
    held: tuple[str, ...]
    """Messages held (or, on release, delivered again)."""
    suspect: tuple[str, ...]
    """Writing events whose versions were marked (or unmarked) suspect."""
    released: bool

    def to_json(self) -> dict[str, Any]:
        return {"run": self.run, "released": self.released, "messages": list(self.held),
                "writes": list(self.suspect)}


def quarantine(store: Store, run_ref: str, *, release: bool = False, reason: str = "",
               who: str | None = None) -> QuarantineResult:
    """Quarantine the run (or release it); see the module docstring."""
    row = find_run(store, run_ref)
    by = who or actor()
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
            done = _contain(store, j, release=release, reason=reason, by=by)
            if done is not None:
                return done
    raise UsageError(f"run {row.id}: its messages kept being delivered while they were being "
                     "held; run the command again")


def _contain(store: Store, j: RunJournal, *, release: bool, reason: str, by: str
             ) -> QuarantineResult | None:
    """One attempt, in one commit: hold (or deliver again) the run's messages and mark (or
    unmark) its writes suspect; None if a recipient took a message meanwhile."""
    run = j.row.id
    frm, to = ("held", "pending") if release else ("pending", "held")
    held = tuple(m.id for m in store.messages(sender=run, status=frm))
    writes = tuple(sorted({v.event for v in store.versions(run=run)
                           if v.status == "live" and v.suspect == release}))
    spec = dict(j.row.spec)
    if release:
        spec.pop("quarantined", None)
        j.append("run.released", {"messages": list(held), "writes": list(writes),
                                  "by": by}, actor=by)
    else:
        spec["quarantined"] = {"by": by, "reason": reason}
        ev = j.append("run.quarantined", {"messages": list(held), "writes": list(writes),
                                          "reason": reason, "by": by}, actor=by)
        if j.row.status == "awaiting_approval":
            # Its pending request cannot be granted now; the run waits, paused.
            why = f"quarantined by {by}" + (f": {reason}" if reason else "")
            j.append("run.paused", {"reason": why}, actor=by, causes=(ev.id,))
    j.update(spec=spec)
    if held:
        j.transition(transition("messages", held, "status", to, (frm,)))
    if writes:
        j.transition(transition("versions", writes, "suspect", not release))
    try:
        j.flush_sync()
    except Conflict:
        j.discard()  # a recipient took a message meanwhile: look again
        return None
    return QuarantineResult(run, held, writes, release)
