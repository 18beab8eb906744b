"""What erasing a payload removes from a run's state: pure, no I/O.

``tether audit erase EVENT`` removes a payload from the event and from the rows
that copied it whole (core/settings.py, store). A step may also have put a piece of
it into its state (``state["card"] = args["card"]``, a tool result quoted in the
conversation the agent keeps), and the state is stored in checkpoints. This module
says which values of a payload count as *the erased value* (:func:`needles`) and
rewrites a checkpoint body or chunk without them (:func:`scrub_checkpoint`,
:func:`scrub_chunk`).

The rule, applied to every node of a state, whatever its depth:

* a string or number equal to an erased value becomes the marker ``{"erased": EVENT}``;
* a string (or a dict key) that contains one has each occurrence replaced by the
  marker's JSON text ``{"erased":"EVENT"}``, so it stays a string;
* containers are never replaced whole, only their items: the rewrite of a list is the
  list of the rewrites of its items, so a delta that appends to a list and the
  keyframe it follows can be rewritten apart and still restore consistently.

An erased value is a string of at least :data:`MIN_CHARS` characters, or an integer
of at least that many digits, found in the payload outside the structural fields
(:data:`STRUCTURAL`: call index, tool name, fingerprint...). Shorter values ("ok",
``1``, ``true``) are left: they would match unrelated parts of every state.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from tether.core.canonical import dumps, loads
from tether.core.settings import erased_marker

MIN_CHARS: Final = 8
"""Shortest string (or integer, in digits) that counts as an erased value."""

STRUCTURAL: Final = frozenset({
    "i", "fp", "tool", "effect", "idempotent", "kind", "hash", "model", "approval", "rule",
    "policy_hash", "checkpoint", "settled", "recorded", "suspect", "to", "topic", "key", "ns",
    "version", "status", "resolution", "approvers", "on_expiry", "expires_at", "to_name",
    "run", "swarm", "name", "agent", "parent", "id", "epoch", "step", "seq", "actor", "by",
    "time", "scope", "latency_s", "cost_usd", "until", "alert", "command", "fork",
})
"""Payload fields that name things rather than carry data (a tool's name, a call's
index, a recipient's run id): their values are not erased from states."""


REPLAYED: Final = frozenset({
    "model.called", "tool.called", "effect.intent", "clock.read", "random.read", "message.sent",
    "message.received", "blackboard.read", "blackboard.write", "effect.done", "effect.failed",
    "effect.in_doubt", "effect.resolved", "effect.retried", "policy.decided",
    "approval.requested", "approval.decided", "alert",
})
"""Kinds whose payload re-running a step in flight is given back (its calls, their
results, the gate's decisions, monitor verdicts; the runtime's replay, kept equal by a
test): erased in a step not complete, that step cannot be resumed."""


@dataclass(frozen=True, slots=True)
class Needles:
    """The values of one erased payload to look for, and what replaces them."""

    event: str
    exact: frozenset[str | int]
    """Scalars replaced whole by the marker where a node equals one."""
    texts: tuple[str, ...]
    """Substrings replaced by the marker's text, longest first (each value and, when it
    differs, its JSON-escaped form, as it appears in JSON text kept in a string)."""

    @property
    def marker(self) -> dict[str, str]:
        """What replaces a value equal to an erased one."""
        return erased_marker(self.event)

    @property
    def marker_text(self) -> str:
        """What replaces an erased value inside a longer string."""
        return dumps(self.marker).decode()

    def patterns(self) -> list[bytes]:
        """Byte strings at least one of which a stored canonical JSON body that holds an
        erased value contains (for a store to find such bodies without decoding all)."""
        out = {t.encode() for t in self.texts}
        out |= {dumps(t)[1:-1] for t in self.texts}
        return sorted(out)

    def __bool__(self) -> bool:
        return bool(self.texts)


def needles(event: str, payload: Any) -> Needles:
    """The erased values of ``payload`` (the payload of event ``event``)."""
    found: set[str | int] = set()
    _collect(payload, found)
    texts: set[str] = set()
    for v in found:
        s = v if isinstance(v, str) else str(v)
        texts.add(s)
        esc = dumps(s).decode()[1:-1]
        if esc != s:
            texts.add(esc)
    return Needles(event, frozenset(found), tuple(sorted(texts, key=lambda t: (-len(t), t))))


def _collect(v: Any, out: set[str | int]) -> None:
    if isinstance(v, dict):
        for k, x in v.items():
            if k not in STRUCTURAL:
                _collect(x, out)
    elif isinstance(v, list):
        for x in v:
            _collect(x, out)
    elif isinstance(v, str):
        if len(v) >= MIN_CHARS:
            out.add(v)
    elif isinstance(v, int) and not isinstance(v, bool) and len(str(abs(v))) >= MIN_CHARS:
        out.add(v)


def scrub(value: Any, n: Needles) -> Any:
    """``value`` with every erased value replaced (see the module docstring); the same
    object when nothing in it changed."""
    if isinstance(value, str):
        if value in n.exact:
            return n.marker
        return _scrub_text(value, n)
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return n.marker if value in n.exact else value
    if isinstance(value, list):
        items = [scrub(x, n) for x in value]
        return value if all(a is b for a, b in zip(items, value, strict=True)) else items
    if isinstance(value, dict):
        out = {_scrub_text(k, n): scrub(x, n) for k, x in value.items()}
        same = len(out) == len(value) and all(k in value and out[k] is value[k] for k in out)
        return value if same else out
    return value


def scrub_text(s: str, n: Needles) -> str:
    """A text column's value (a run's reason) with each erased value in it replaced by the
    marker's text: it stays text."""
    return _scrub_text(s, n)


def _scrub_text(s: str, n: Needles) -> str:
    for t in n.texts:
        if t in s:
            s = s.replace(t, n.marker_text)
    return s


def scrub_chunk(body: bytes, n: Needles) -> bytes | None:
    """A keyframe chunk's bytes without the erased values, or None if it holds none."""
    value = loads(body)
    new = scrub(value, n)
    return None if new is value else dumps(new)


def chunk_name(body: bytes) -> str:
    """The name a chunk is stored under (its SHA-256, as the encoder names it)."""
    return hashlib.sha256(body).hexdigest()


def scrub_checkpoint(kind: str, body: bytes, n: Needles,
                     renamed: Mapping[str, str]) -> bytes | None:
    """A checkpoint body without the erased values, its keyframe's references to chunks
    ``renamed`` (old name -> new name, chunks rewritten by :func:`scrub_chunk`) updated;
    None if nothing in it changed."""
    doc = loads(body)
    if kind == "key":
        new: Any = {_scrub_text(k, n): _scrub_ref(ref, n, renamed) for k, ref in doc.items()}
    else:
        new = {}
        for part in ("set", "app"):
            if part in doc:
                new[part] = {_scrub_text(k, n): scrub(v, n) for k, v in doc[part].items()}
        if "del" in doc:
            new["del"] = [_scrub_text(k, n) for k in doc["del"]]
    out = dumps(new)
    return None if out == bytes(body) else out


def _scrub_ref(ref: dict[str, Any], n: Needles, renamed: Mapping[str, str]) -> dict[str, Any]:
    if "v" in ref:
        return {"v": scrub(ref["v"], n)}
    if "c" in ref:
        return {"c": renamed.get(ref["c"], ref["c"])}
    return {"l": [renamed.get(h, h) for h in ref["l"]], "t": scrub(ref["t"], n)}
