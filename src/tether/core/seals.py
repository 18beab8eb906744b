"""Seals: what an event commits to beyond its payload.

Some events make rows or bodies that tether reads back later: a step's
checkpoint body, a message row, a blackboard or file version, an effect row
(which rollback reads its undo from). The audit compares each with the event
that made it. A payload can be erased, though, and with it what the row must
say. So every such event also carries a *seal*: a few named hashes of exactly
the values its rows hold, computed from the payload when the event is made and
chained with the event's other fields (see :func:`tether.core.events.event_hash`),
but kept outside the payload, so erasing the payload keeps them.

A name's meaning never changes once written (old seals are compared as they
were made); new names may be added. The names:

* ``checkpoint``: the SHA-256 of the checkpoint body (``checkpoint`` and
  ``step.finished`` events);
* ``message``: :func:`message_digest` of the message row (``message.sent``);
* ``version``: :func:`version_digest` of the blackboard version row
  (``blackboard.write``);
* ``effect``: :func:`effect_digest` of what an effect row keeps for its life
  (``effect.intent``);
* ``outcome``: :func:`outcome_digest` of the result and undo the effect row holds
  after this event (``effect.done``, ``effect.failed``, ``effect.in_doubt``,
  ``effect.resolved``);
* ``files``: :func:`files_digest` of the file versions the event wrote
  (``effect.done``: its after-image's files, only those it names in ``recorded``
  if it has that; ``effect.resolved`` as done when it names its ``files``);
* ``links``: :func:`links_digest` of the lineage link the event implies (a
  ``rollback``'s epoch link, a fork's ``run.started`` link to its parent).

Events written before seals existed (release 0.1.0) carry none: the audit then
derives the same names from the payload while it is there, and cannot check
their rows once it is erased.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from tether.core.canonical import digest

Seal = tuple[tuple[str, str], ...]
"""(name, hex SHA-256) pairs sorted by name; empty for an event that makes no rows."""

NAMES: tuple[str, ...] = ("checkpoint", "message", "version", "effect", "outcome", "files",
                          "links")
"""Every seal name, in a fixed order (stores may number them by position: only append)."""

_HEX = frozenset("0123456789abcdef")


def message_digest(recipient: Any, topic: Any, body: Any) -> str:
    """What a message row says beyond its sender and step (the event's own fields)."""
    return digest(["message", recipient, topic, body])


def version_digest(key: Any, value: Any) -> str:
    """What a blackboard version row says beyond its writer and step."""
    return digest(["version", key, value])


def effect_digest(idx: Any, tool: Any, effect: Any, idempotent: Any, arguments: Any) -> str:
    """What an effect row keeps from its intent for its whole life."""
    return digest(["effect", idx, tool, effect, idempotent, arguments])


def outcome_digest(result: Any, undo: Any) -> str:
    """The result and the undo an effect row holds (rollback runs that undo)."""
    return digest(["outcome", result, undo])


def files_digest(files: Mapping[str, Any]) -> str:
    """The file versions (path and content hash) one event wrote."""
    return digest(["files", sorted([k, v] for k, v in files.items())])


def links_digest(links: list[tuple[str, str | None, Any, Any]]) -> str:
    """Lineage links one event implies: (kind, source run, source epoch, source step); the
    source run of an epoch link is the event's own (None here), its destination the event."""
    return digest(["links", sorted([list(x) for x in links], key=repr)])


def lineage(kind: str, payload: Any) -> list[tuple[str, str | None, Any, Any]] | None:
    """The lineage links a ``rollback`` or a fork's ``run.started`` payload implies (as
    ``derive_links`` derives them), or None for other events."""
    if not isinstance(payload, dict):
        return None
    if kind == "rollback":
        src_epoch = payload.get("state_epoch")
        if src_epoch is None:
            src_epoch = payload.get("from_epoch")
        return [("epoch", None, src_epoch, payload.get("to_step"))]
    spec = payload.get("spec") if kind == "run.started" else None
    fork = spec.get("forked_from") if isinstance(spec, dict) else None
    if isinstance(fork, dict):
        return [("fork", fork.get("run"), fork.get("epoch"), fork.get("step"))]
    return None


SEALED_KINDS: frozenset[str] = frozenset({
    "checkpoint", "step.finished", "message.sent", "blackboard.write", "effect.intent",
    "effect.done", "effect.failed", "effect.in_doubt", "effect.resolved", "rollback",
    "run.started"})
"""The kinds :func:`seal_of` may give a seal (an event of any other kind has none)."""


def seal_of(kind: str, payload: Any) -> Seal:
    """The seal of an event of ``kind`` with ``payload`` (empty if it makes no rows)."""
    if not isinstance(payload, dict):
        return ()
    p = payload
    out: dict[str, str] = {}
    if kind in ("checkpoint", "step.finished"):
        info = p if kind == "checkpoint" else p.get("checkpoint")
        h = info.get("hash") if isinstance(info, dict) else None
        if isinstance(h, str) and len(h) == 64 and set(h) <= _HEX:
            out["checkpoint"] = h
    elif kind == "message.sent":
        out["message"] = message_digest(p.get("to"), p.get("topic"), p.get("body"))
    elif kind == "blackboard.write":
        out["version"] = version_digest(p.get("key"), p.get("value"))
    elif kind == "effect.intent":
        out["effect"] = effect_digest(p.get("i"), p.get("tool"), p.get("effect"),
                                      p.get("idempotent"), p.get("arguments"))
    elif kind in _OUTCOMES:
        out.update(_OUTCOMES[kind](p))
    elif (links := lineage(kind, p)) is not None:
        out["links"] = links_digest(links)
    return tuple(sorted(out.items()))


def _done(p: dict[str, Any]) -> dict[str, str]:
    after = p.get("after")
    files = after.get("files") if isinstance(after, dict) else None
    files = files if isinstance(files, dict) else {}
    recorded = p.get("recorded")
    if isinstance(recorded, list):  # versions recorded late, for some of the paths only
        files = {k: v for k, v in files.items() if k in recorded}
    return {"outcome": outcome_digest(p.get("result"), p.get("undo")),
            "files": files_digest(files)}


def _resolved(p: dict[str, Any]) -> dict[str, str]:
    # Only an in-doubt effect is resolved: its row had no result and no undo.
    done = p.get("resolution") == "done"
    out = {"outcome": outcome_digest(p.get("result") if done else None, None)}
    if isinstance(p.get("files"), dict):
        out["files"] = files_digest(p["files"])
    return out


_OUTCOMES: dict[str, Callable[[dict[str, Any]], dict[str, str]]] = {
    "effect.done": _done,
    "effect.failed": lambda p: {"outcome": outcome_digest({"error": p.get("error")}, None)},
    "effect.in_doubt": lambda p: {"outcome": outcome_digest(None, None)},
    "effect.resolved": _resolved,
}
"""Events that set an effect row's result and undo, and how their seal is made."""
