"""Tools, effect classes and the built-in workspace file tools."""

from tether.core.effect_classes import TOOL_EFFECTS as EFFECTS
from tether.core.effect_classes import Effect
from tether.tools.base import (
    IntentInput,
    Prepared,
    Settled,
    SettleInput,
    Settlement,
    Tool,
    ToolContext,
    Undo,
    current,
    record_after,
    record_touch,
    register_undo,
    tool,
)
from tether.tools.files import DIR_HASH, FILE_TOOLS, file_hash, resolve
from tether.tools.schema import schema_tool

__all__ = ["DIR_HASH", "EFFECTS", "FILE_TOOLS", "Effect", "IntentInput", "Prepared", "SettleInput",
           "Settled", "Settlement", "Tool", "ToolContext", "Undo", "current", "file_hash",
           "record_after", "record_touch", "register_undo", "resolve", "schema_tool", "tool"]
