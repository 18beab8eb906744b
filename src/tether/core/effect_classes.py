"""Effect classes: what a call may do to the world, the words tools, policies and the
store share.

Two sets, named apart: a tool is one of :data:`TOOL_EFFECTS`; a policy rule (and an
:class:`~tether.core.policy_match.Action`) may also name ``model``, for model calls.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

Effect = Literal["read", "reversible", "irreversible"]
"""A tool's effect class."""
TOOL_EFFECTS: Final[tuple[Effect, ...]] = get_args(Effect)
ACTION_EFFECTS: Final[tuple[str, ...]] = (*TOOL_EFFECTS, "model")
"""What a policy rule can name: the tool effect classes, plus ``model`` for model calls."""
