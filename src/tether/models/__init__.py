"""Models: the protocol agents call, and its adapters."""

from tether.models.base import (
    ForeignCall,
    ForeignResponse,
    Message,
    Model,
    ModelResponse,
    ToolCall,
    ToolSpec,
    Usage,
)
from tether.models.scripted import ScriptedModel


def __getattr__(name: str) -> object:
    # The OpenAI adapter imports the openai client (slow to import); load it on first use.
    if name == "OpenAIModel":
        from tether.models.openai import OpenAIModel
        return OpenAIModel
    raise AttributeError(name)


__all__ = ["ForeignCall", "ForeignResponse", "Message", "Model", "ModelResponse", "OpenAIModel",
           "ScriptedModel", "ToolCall", "ToolSpec", "Usage"]
