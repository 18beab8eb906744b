"""Models: the protocol agents call, and its adapters."""

from tether.models.base import Message, Model, ModelResponse, ToolCall, ToolSpec, Usage
from tether.models.scripted import ScriptedModel

__all__ = ["Message", "Model", "ModelResponse", "ScriptedModel", "ToolCall", "ToolSpec", "Usage"]
