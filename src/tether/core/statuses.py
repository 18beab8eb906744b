"""The statuses of runs, effects and approvals: one vocabulary for every layer.

The store keeps them in its projection rows, the fold (:mod:`tether.core.fold`)
derives them from events, workers and commands decide by them.
"""

from __future__ import annotations

from typing import Final

RUN_STATUSES: Final = ("running", "sleeping", "waiting", "paused", "awaiting_approval",
                       "stopped", "failed", "done")
ACTIVE_STATUSES: Final = ("running", "sleeping", "waiting")
"""Statuses a worker drives; ``waiting``: asleep until a message arrives (or ``wake_at``)."""
TERMINAL_STATUSES: Final = ("stopped", "failed", "done")
"""Statuses no worker drives again by itself (a name resolves to a live run first)."""
CLOSED_STATUSES: Final = ("stopped", "done")
"""Terminal statuses no command but ``budget`` applies to. ``failed`` is terminal but not
closed: ``tether resume`` re-runs the failed step from its checkpoint."""

EFFECT_STATUSES: Final = ("intent", "done", "failed", "in_doubt", "resolved_done",
                          "resolved_not_done", "resolved_retry", "undone")
APPROVAL_STATUSES: Final = ("pending", "approved", "denied", "expired", "cancelled")
