"""The store chain: operator settings of the whole store, journaled and hash-chained.

The policy in force (store-wide, or for one swarm) is a property of the store,
not of a worker's working folder: every change is a :class:`StoreEvent` in one
append-only chain, apart from any run's chain, and the settings in force are
a fold of that chain (:func:`fold`). Each event names a *setting* and a
*scope*; the kinds in :data:`STORE_KINDS` say which setting an event sets or
clears, so later settings (swarm budgets, pause points, tokens, store
options) join the same chain by adding a kind.

Hashing follows the run chains (docs/events.md): an event's hash covers its
payload's hash, not the payload, and the previous event's hash
(:data:`STORE_GENESIS` before the first). Each append also commits a batch
naming the event (run id :data:`STORE_CHAIN` in the batch chain), so a
removed last event is caught like a truncated run. Pure: no I/O, no clock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from tether.core.canonical import digest
from tether.core.events import payload_digest

STORE_GENESIS: Final = hashlib.sha256(b"tether.store-chain").hexdigest()
"""The ``prev`` of the store chain's first event."""

STORE_CHAIN: Final = "@store"
"""The name the batch chain gives the store chain (never a run id: those are ULIDs)."""

STORE_SCOPE: Final = "store"
"""The scope of a store-wide setting; a swarm's is ``swarm:NAME``."""

STORE_KINDS: Final[dict[str, tuple[str, Literal["set", "clear"]]]] = {
    "policy.applied": ("policy", "set"),
    "policy.cleared": ("policy", "clear"),
    "swarm.budget": ("budget", "set"),
    "swarm.pause_points": ("pause_points", "set"),
    "payload.erased": ("", "set"),
    "token.created": ("", "set"),
    "token.revoked": ("", "set"),
    "store.allow_as": ("allow_as", "set"),
}
"""Every store event kind: the setting it changes and how; docs/events.md describes each."""


SWARM_KINDS: Final[dict[str, str]] = {"swarm.budget": "budget",
                                      "swarm.pause_points": "pause_points"}
"""Store event kinds that set one of a swarm's settings (payload ``{FIELD: value}``), which
the store also keeps in its ``swarms`` rows, written in the same transaction."""


ALLOW_AS_KIND: Final = "store.allow_as"
"""Whether the CLI may record a name claimed with ``--as`` / ``TETHER_USER`` instead of the
OS user (payload ``{"allow": bool}``, scope ``store``); refused while never set."""


ERASED_KIND: Final = "payload.erased"
"""Not a setting: an operator's erasure of an event's payload, recorded in the chain so the
audit accepts the rows it blanked (:func:`erased_marker`) and shows who, when and why."""


def erased_marker(event: str) -> dict[str, str]:
    """What a row holds in place of a value copied from an erased event's payload."""
    return {"erased": event}


def swarm_scope(swarm: str | None) -> str:
    """The scope of a swarm's settings, or the store's for None."""
    return STORE_SCOPE if swarm is None else f"swarm:{swarm}"


@dataclass(frozen=True, slots=True)
class StoreEvent:
    """One record of the store chain."""

    n: int
    """Position in the chain, from 1, without gaps."""
    id: str
    """Sortable unique id (ULID form)."""
    kind: str
    """One of :data:`STORE_KINDS`."""
    scope: str
    """``store`` or ``swarm:NAME``."""
    time: str
    """ISO-8601 UTC time from the writer's wall clock."""
    actor: str
    """Who changed the setting: ``human:USER`` or ``system:...``."""
    payload: Any
    """Kind-specific JSON value (for ``policy.applied``: the policy's text and hash)."""
    payload_hash: str
    """SHA-256 of the canonical payload."""
    prev: str
    """Hash of the previous store event (or :data:`STORE_GENESIS`)."""
    hash: str = field(default="")
    """Hash of this event: see the module docstring."""

    @property
    def setting(self) -> str:
        """The setting this event changes (``policy`` ...); empty for an unknown kind."""
        return STORE_KINDS.get(self.kind, ("", "set"))[0]

    def to_json(self) -> dict[str, Any]:
        """The public JSON form (``tether policy show --json``)."""
        return {"n": self.n, "id": self.id, "kind": self.kind, "scope": self.scope,
                "time": self.time, "actor": self.actor, "payload": self.payload,
                "hash": self.hash}


def store_event_hash(e: StoreEvent) -> str:
    """The chained hash of ``e`` from its fields (payload by hash)."""
    return digest({"n": e.n, "id": e.id, "kind": e.kind, "scope": e.scope, "time": e.time,
                   "actor": e.actor, "payload": e.payload_hash, "prev": e.prev})


def make_store_event(after: tuple[int, str] | None, *, id: str, kind: str, scope: str,
                     time: str, actor: str, payload: Any) -> StoreEvent:
    """The event that follows the chain's head ``after`` = (n, hash) (None: the first), hashed.

    Raises:
        ValueError: an unknown kind, or a scope that is neither ``store`` nor ``swarm:NAME``.
    """
    if kind not in STORE_KINDS:
        raise ValueError(f"unknown store event kind {kind!r}")
    if scope != STORE_SCOPE and not (scope.startswith("swarm:") and len(scope) > 6):
        raise ValueError(f"store event scope {scope!r}: use 'store' or 'swarm:NAME'")
    n, prev = after or (0, STORE_GENESIS)
    e = StoreEvent(n=n + 1, id=id, kind=kind, scope=scope, time=time, actor=actor,
                   payload=payload, payload_hash=payload_digest(payload), prev=prev)
    object.__setattr__(e, "hash", store_event_hash(e))
    return e


Settings = dict[tuple[str, str], StoreEvent]
"""(setting, scope) -> the event that set what is in force."""


def fold(events: Iterable[StoreEvent], into: Settings | None = None) -> Settings:
    """The settings in force after ``events`` (in chain order), starting from ``into``."""
    out: Settings = dict(into or {})
    for e in events:
        setting, how = STORE_KINDS.get(e.kind, ("", "clear"))
        if not setting:
            continue  # a kind this version does not know: it changes nothing here
        if how == "set":
            out[(setting, e.scope)] = e
        else:
            out.pop((setting, e.scope), None)
    return out
