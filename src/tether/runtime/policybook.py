"""The policies in force on a store, as a worker (or the CLI) reads them from the store chain.

A worker keeps one :class:`PolicyBook`, refreshed at every scheduling pass: it
reads only the store events after the last one it saw (usually none: one
indexed query), folds them, and compiles each newly applied policy once. A
run is gated by its swarm's policy when one is applied, else by the store's,
else by the built-in defaults (irreversible needs approval). A recorded policy
that does not compile (a store written by a newer tether, or changed outside
it) never takes effect and never crashes the worker: the policy it would have
replaced stays in force; at start, the worker refuses to run instead.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from tether.core.policy import Policy, PolicyError, builtin_policy, policy_from_text
from tether.core.settings import STORE_SCOPE, StoreEvent, fold, swarm_scope
from tether.errors import UsageError
from tether.store.protocol import Store

log = logging.getLogger("tether.worker")


@dataclass(frozen=True, slots=True)
class InForce:
    """One policy in force and where it comes from."""

    policy: Policy
    event: StoreEvent | None
    """The ``policy.applied`` event that put it in force; None for the built-in defaults."""

    @property
    def scope(self) -> str:
        """``store``, ``swarm:NAME`` or ``built-in``."""
        return self.event.scope if self.event is not None else "built-in"

    def describe(self) -> str:
        """One line for people: the hash, and who applied it when (or that it is built in)."""
        if self.event is None:
            return (f"built-in defaults (hash {self.policy.hash[:12]}): irreversible actions "
                    "need approval; no policy was applied to this store")
        e = self.event
        what = "store-wide" if e.scope == STORE_SCOPE else f"for {e.scope.replace(':', ' ')}"
        source = (e.payload or {}).get("source") if isinstance(e.payload, dict) else None
        return (f"policy {self.policy.hash[:12]} {what}, applied by {e.actor} at {e.time}"
                + (f" from {source}" if source else ""))


@dataclass(frozen=True, slots=True)
class Unusable:
    """A policy applied to a scope (the latest there) that does not compile: no worker of the
    store starts while it is (a running one keeps the policy it had)."""

    event: StoreEvent
    """The ``policy.applied`` event that records it."""
    error: str
    """Why it cannot be used (the rule and field at fault, when the text names one)."""

    @property
    def scope(self) -> str:
        """``store`` or ``swarm:NAME``."""
        return self.event.scope

    @property
    def fix(self) -> str:
        """The command that replaces it (FILE: a good policy)."""
        swarm = self.scope.partition(":")[2] if self.scope != STORE_SCOPE else ""
        return "tether policy apply FILE" + (f" --swarm {swarm}" if swarm else "")


def compile_event(e: StoreEvent) -> Policy:
    """The policy a ``policy.applied`` event records.

    Raises:
        PolicyError: the recorded text does not compile, or does not hash as recorded.
    """
    p = e.payload if isinstance(e.payload, dict) else {}
    text, fmt = p.get("text"), p.get("format", "toml")
    if not isinstance(text, str) or not isinstance(fmt, str):
        raise PolicyError(f"store event #{e.n}: the policy's text is missing")
    policy = policy_from_text(text, fmt, source=f"store policy {e.scope} (event #{e.n})")
    if policy.hash != p.get("hash"):
        raise PolicyError(f"store event #{e.n}: the policy's text hashes to {policy.hash[:12]}, "
                          f"not the recorded {str(p.get('hash'))[:12]}")
    return policy


class PolicyBook:
    """The policies in force, per scope, kept current by :meth:`refresh`."""

    def __init__(self) -> None:
        self.seen = 0
        """The last store event folded in."""
        self._in_force: dict[str, InForce] = {}
        self._builtin = InForce(builtin_policy(), None)
        self._unusable: dict[str, Unusable] = {}

    def refresh(self, store: Store, *, strict: bool = False) -> list[str]:
        """Fold the store events applied since the last call; return what changed, for the log.

        A policy that does not compile is skipped with a logged error (the one before it stays
        in force), or, with ``strict`` (a worker starting), refused with UsageError.
        """
        new = store.store_events(after=self.seen)
        if not new:
            return []
        changes = []
        settings = fold(new)
        for e in new:
            if e.setting != "policy":
                continue
            cur = settings.get(("policy", e.scope))
            if cur is not e:
                if cur is None and e.kind == "policy.cleared":
                    self._in_force.pop(e.scope, None)
                    self._unusable.pop(e.scope, None)
                    changes.append(f"{e.scope}: the policy applied to it was cleared by {e.actor}")
                continue  # a later event of this pass changes the same scope again
            try:
                self._in_force[e.scope] = InForce(compile_event(e), e)
            except (PolicyError, RecursionError, ValueError, TypeError) as exc:
                self._unusable[e.scope] = Unusable(e, str(exc))
                if strict:
                    raise UsageError(f"the store's policy cannot be used ({exc}); apply a good one "
                                     "with `tether policy apply FILE`") from None
                log.error("store event #%d: the new policy for %s cannot be used, keeping the one "
                          "in force: %s", e.n, e.scope, exc)
                continue
            self._unusable.pop(e.scope, None)
            changes.append(f"now in force: {self._in_force[e.scope].describe()}")
        self.seen = new[-1].n
        return changes

    def for_swarm(self, swarm: str | None) -> InForce:
        """What gates a run of ``swarm`` (None: a run in no swarm); asked before every call."""
        if swarm is not None and self._in_force:
            hit = self._in_force.get(swarm_scope(swarm))
            if hit is not None:
                return hit
        return self._in_force.get(STORE_SCOPE) or self._builtin

    def require(self, policy: Policy, where: str) -> InForce:
        """The store-wide policy in force, which must be ``policy`` (a worker told to run under
        it); UsageError naming both hashes otherwise."""
        cur = self.for_swarm(None)
        if cur.policy.hash != policy.hash:
            raise UsageError(f"{where} {policy.source} has hash {policy.hash[:12]}, but the store's "
                             f"policy in force is the {cur.describe()}; apply it with `tether policy "
                             f"apply {policy.source}` (or add --apply), or leave out --policy to "
                             "run under the store's")
        return cur

    def unusable(self) -> list[Unusable]:
        """The scopes whose latest applied policy cannot be used, store-wide first: while
        there is one, a worker refuses to start (:meth:`refresh` with ``strict``)."""
        return sorted(self._unusable.values(), key=lambda x: (x.scope != STORE_SCOPE, x.scope))

    def scopes(self) -> list[InForce]:
        """Every applied policy in force, store-wide first."""
        return sorted(self._in_force.values(), key=lambda x: (x.scope != STORE_SCOPE, x.scope))
