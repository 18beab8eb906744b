"""Provenance links: which events tie one run's step to another's (or to its own past).

A pure rule over an event and its causes, shared by every store backend (which
records the links in the same transaction as the events) and by the audit
(which re-derives them from the verified events and compares).
"""

from __future__ import annotations

from typing import Any, Final

from tether.core.events import Event

LINK_KINDS: Final = {"message.received": "message", "blackboard.read": "board",
                     "effect.done": "file", "tool.called": "file"}
"""Event kinds whose causes in other runs are provenance links, and the link's kind."""


def derive_links(e: Event, cause_at: Any) -> list[tuple[str, str, int, int, str]]:
    """Links an event implies: (kind, source run, source epoch, source step, source event).

    ``cause_at(event_id)`` gives (run, epoch, step) of a cause, or None. Pure but for
    that lookup, so the audit derives the same links the commit did.
    """
    out: list[tuple[str, str, int, int, str]] = []
    kind = LINK_KINDS.get(e.kind)
    if kind is not None:
        for cid in e.causes:
            at = cause_at(cid)
            if at is not None and at[0] != e.run:
                out.append((kind, at[0], at[1], at[2], cid))
    elif e.kind == "rollback" and isinstance(e.payload, dict):
        # The new epoch starts from the history's state at to_step (read from state_epoch):
        # taint at or before it carries over.
        src_epoch = e.payload.get("state_epoch")
        if src_epoch is None:
            src_epoch = e.payload["from_epoch"]
        out.append(("epoch", e.run, int(src_epoch), int(e.payload["to_step"]), e.id))
    elif e.kind == "run.started" and isinstance(e.payload, dict):
        fork = ((e.payload.get("spec") or {}).get("forked_from")) or None
        if isinstance(fork, dict):
            out.append(("fork", str(fork["run"]), int(fork["epoch"]), int(fork["step"]), e.id))
    return out
