"""What an audit found: the report every verification step adds its problems to.

A leaf of the audit package, so the steps (``verify.py``, ``store_chain.py``)
import it rather than each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class VerifyReport:
    """Outcome of :func:`verify_store`."""

    runs: int = 0
    events: int = 0
    batches: int = 0
    problems: list[str] = field(default_factory=list)
    erasures: list[dict[str, str]] = field(default_factory=list)
    """Payloads erased on purpose (``tether audit erase``), from the store chain: ``event``,
    ``run``, ``kind``, ``by``, ``time``, ``reason``, ``checkpoints`` (how many it rewrote)."""
    rewritten: dict[tuple[str, int, int], list[tuple[str, str]]] = field(default_factory=dict)
    """Checkpoints an erasure rewrote (its value removed from the state they hold):
    ``(run, epoch, step)`` -> ``(old hash, new hash)`` per erasure, in the chain's order."""
    helped: int = 0
    """Runs walked by a helper process (:mod:`tether.audit.share`), not here."""
    checkpoints: int = 0
    """Signed checkpoints checked."""
    sealed: int = 0
    """Events (in commit order) covered by the last signed checkpoint that still matches."""
    unsealed: int = 0
    """Events committed after the last signed checkpoint."""
    witnessed: int = 0
    """Checkpoints of a witness's copy (``--witness``) checked against the store."""
    signatures_checked: bool = False
    """Whether the checkpoints' signatures were checked (a verifier key was given)."""

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_bad(self) -> str | None:
        return self.problems[0] if self.problems else None

    def to_json(self) -> dict[str, Any]:
        """The form ``tether audit verify --json`` prints."""
        return {"ok": self.ok, "runs": self.runs, "events": self.events,
                "batches": self.batches, "checkpoints": self.checkpoints,
                "sealed": self.sealed, "unsealed": self.unsealed, "witnessed": self.witnessed,
                "signatures_checked": self.signatures_checked,
                "erasures": self.erasures, "problems": self.problems}
