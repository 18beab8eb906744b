"""Operators' side of policies: apply one to the store (or a swarm), show what is in force.

The policy in force is a property of the store, not of a worker's folder:
``apply`` checks a policy, then records its text and hash in the store chain
(``policy.applied``, naming who applied it); every worker of the store picks it
up at its next scheduling pass. With none applied, the built-in defaults gate
(irreversible actions need approval).
"""

from __future__ import annotations

from tether.core.ids import UlidSource, iso
from tether.core.policy import Policy, PolicyError, policy_from_text
from tether.core.settings import StoreEvent, swarm_scope
from tether.errors import UsageError
from tether.runtime.policybook import InForce, PolicyBook
from tether.store.protocol import Store
from tether.system_clock import SYSTEM_CLOCK

__all__ = ["InForce", "apply_policy", "clear_policy", "in_force"]


def in_force(store: Store, swarm: str | None = None) -> InForce:
    """The policy that gates runs of ``swarm`` (None: runs in no swarm) right now."""
    book = PolicyBook()
    book.refresh(store)
    return book.for_swarm(swarm)


def apply_policy(store: Store, policy: Policy, *, who: str, swarm: str | None = None
                 ) -> StoreEvent | None:
    """Put ``policy`` in force for the store (or ``swarm``): journaled with who applied it.

    Returns the ``policy.applied`` event, or None when exactly this policy is in force
    there already (nothing is written).

    Raises:
        PolicyError: the policy's recorded text would not compile back to the same hash.
    """
    if swarm is not None and not swarm.strip():
        raise UsageError("--swarm needs a swarm name")
    if not policy.text:
        raise PolicyError(f"{policy.source}: a policy built without its text cannot be applied; "
                          "load it from a file or build it with rules_from_python")
    # Check what will be recorded, not the object given: the text is what workers compile.
    again = policy_from_text(policy.text, policy.format, source=policy.source)
    if again.hash != policy.hash:
        raise PolicyError(f"{policy.source}: its text hashes to {again.hash[:12]}, not "
                          f"{policy.hash[:12]}; reload it from its file")
    book = PolicyBook()
    book.refresh(store)
    scope = swarm_scope(swarm)
    current = book.for_swarm(swarm)
    if current.event is not None and current.event.scope == scope \
            and current.policy.hash == policy.hash:
        return None
    payload = {"text": policy.text, "format": policy.format, "hash": policy.hash,
               "source": policy.source, "rules": len(policy.rules),
               "replaces": current.policy.hash if current.scope == scope else None}
    now = SYSTEM_CLOCK.now()
    return store.append_store_event("policy.applied", scope, payload, actor=who, time=iso(now),
                                    id=UlidSource(lambda: now).new())


def clear_policy(store: Store, *, who: str, swarm: str | None = None) -> StoreEvent | None:
    """Take the policy applied to the store (or ``swarm``) out of force, journaled
    (``policy.cleared``); its runs fall back to the store's policy, then to the built-in
    defaults. None when none was applied there (nothing is written)."""
    book = PolicyBook()
    book.refresh(store)
    scope = swarm_scope(swarm)
    if all(x.scope != scope for x in book.scopes()):
        return None
    now = SYSTEM_CLOCK.now()
    return store.append_store_event("policy.cleared", scope, {}, actor=who, time=iso(now),
                                    id=UlidSource(lambda: now).new())
