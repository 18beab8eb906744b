"""Who gets a run's lease, the rule of every backend.

A run is owned by at most one process: a lease with an expiry and a fencing token
that only grows (a released lease keeps its row, so the next token is still larger),
checked by every write of the run (:func:`tether.store.writes.fence_refusal`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def granted_token(lease: Sequence[Any] | None, owner: str, now: float) -> int | None:
    """The fencing token ``owner`` gets for a run whose lease row is ``(owner, token,
    expires)`` (None: never leased): the next token when the lease is free, expired or
    ``owner``'s own; None while another owner holds it."""
    if lease is not None and lease[2] > now and lease[0] != owner:
        return None
    return int(lease[1]) + 1 if lease else 1
