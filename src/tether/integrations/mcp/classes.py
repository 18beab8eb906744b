"""Which effect class each MCP tool gets: a pure decision from the listing and the user's
declarations.

MCP's tool annotations (``readOnlyHint``, ``idempotentHint``, ``destructiveHint``) are
hints the server gives about itself; the specification says a client must not decide on
them for a server it does not trust. So by default they decide nothing: every tool is
``irreversible`` (it waits for an allow rule or a person's approval) unless the user
declares otherwise. ``trust_annotations=True`` lets the hints weaken that (``readOnlyHint``
-> ``read``, ``idempotentHint`` -> idempotent); what the user declares always wins.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from tether.core.effect_classes import Effect
from tether.errors import ToolDefinitionError

DECLARABLE: tuple[Effect, ...] = ("read", "irreversible")
"""``reversible`` is not offered: an MCP tool cannot register its own undo with tether."""


@dataclass(frozen=True, slots=True)
class Hints:
    """The annotations a server gave one tool (None: not given)."""

    read_only: bool | None = None
    destructive: bool | None = None
    idempotent: bool | None = None


@dataclass(frozen=True, slots=True)
class Classified:
    """One tool's effect class, and why (for the docs page and error messages)."""

    effect: Effect
    idempotent: bool
    source: str
    """``declared``, ``annotations`` or ``default``."""


def check_declarations(server: str, names: Sequence[str], effects: Mapping[str, str],
                       idempotent: Collection[str]) -> None:
    """Refuse declarations naming tools the server does not have, or classes tether cannot
    honour for an MCP tool, naming the server and what it offers.

    Raises:
        ToolDefinitionError: the message lists the server's tools.
    """
    known = set(names)
    unknown = sorted((set(effects) | set(idempotent)) - known)
    if unknown:
        raise ToolDefinitionError(
            f"MCP server {server} has no tool {', '.join(unknown)} (named in effects=, "
            f"idempotent= or only=); it offers: {', '.join(sorted(known)) or 'none'}. Use the server's "
            "own tool names, without the prefix")
    for name, effect in effects.items():
        if effect not in DECLARABLE:
            raise ToolDefinitionError(
                f"MCP server {server}, tool {name}: effect must be one of "
                f"{', '.join(DECLARABLE)}, not {effect!r} (an MCP tool cannot register an "
                "undo, so it cannot be reversible)")


def classify(name: str, hints: Hints, *, effects: Mapping[str, str],
             idempotent: Collection[str], trust_annotations: bool) -> Classified:
    """The effect class of tool ``name`` (declarations checked by
    :func:`check_declarations` first)."""
    if name in effects:
        effect: Effect = "read" if effects[name] == "read" else "irreversible"
        same = name in idempotent or (trust_annotations and hints.idempotent is True)
        return Classified(effect, effect != "read" and same, "declared")
    if name in idempotent:
        return Classified("irreversible", True, "declared")
    if trust_annotations and hints.read_only is True:
        return Classified("read", False, "annotations")
    if trust_annotations and hints.idempotent is True:
        return Classified("irreversible", True, "annotations")
    return Classified("irreversible", False, "default")
