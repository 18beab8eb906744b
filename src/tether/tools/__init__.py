"""Tools, effect classes and the built-in workspace file tools."""

from tether.tools.base import (
    EFFECTS,
    Effect,
    Tool,
    ToolContext,
    Undo,
    current,
    record_after,
    register_undo,
    tool,
)

__all__ = ["EFFECTS", "Effect", "Tool", "ToolContext", "Undo", "current", "record_after",
           "register_undo", "tool"]
