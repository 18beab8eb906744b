"""The PydanticAI capability a tether step runs its agent with.

Passed to ``agent.iter(capabilities=[...])`` for one step, it plugs tether into
PydanticAI's own seams without touching the user's agent: the model that serves
each request is wrapped (:class:`TetherModel`), the assembled toolset is wrapped
(:class:`TetherToolset`), tool arguments the model got wrong are journaled as a
rejected call before PydanticAI tells the model, and the run's ids are stable
across re-runs of a step. (A tether signal a wrapper raised and the framework
swallowed is raised again by the runtime when the step returns.)
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from pydantic_ai.capabilities import AbstractCapability
from pydantic_ai.exceptions import ModelRetry
from pydantic_ai.messages import ToolCallPart
from pydantic_ai.models import Model
from pydantic_ai.tools import RunContext, ToolDefinition
from pydantic_ai.toolsets import AbstractToolset

from tether.core.effect_classes import Effect
from tether.integrations.pydantic_ai._messages import raw_arguments
from tether.integrations.pydantic_ai._model import TetherModel
from tether.integrations.pydantic_ai._toolset import TetherToolset
from tether.runtime.step_api import StepContextLike
from tether.tools.base import Tool


@dataclass
class TetherStepCapability(AbstractCapability[Any]):
    """Routes one step's model requests and tool calls through tether (internal)."""

    step: StepContextLike
    tools: Mapping[str, Tool] = field(default_factory=dict)
    effects: Mapping[str, Effect] = field(default_factory=dict)
    idempotent: frozenset[str] = frozenset()
    offered: Callable[[str, Collection[str]], None] | None = None
    """Told the run's id and the names of the tools the step offers (a run's first step)."""

    def get_default_run_id(self) -> str | None:
        return f"{self.step.run_id}:{self.step.step}"

    def get_default_conversation_id(self, run_id: str) -> str | None:
        return self.step.run_id

    def get_wrapper_model(self, model: Model) -> Model | None:
        return TetherModel(model)

    def get_wrapper_toolset(self, toolset: AbstractToolset[Any]) -> AbstractToolset[Any] | None:
        offered = self.offered
        return TetherToolset(toolset, tools=self.tools, effects=self.effects,
                             idempotent=self.idempotent,
                             offered=None if offered is None else
                             (lambda names: offered(self.step.run_id, names)))

    async def on_tool_validate_error(self, ctx: RunContext[Any], *, call: ToolCallPart,
                                     tool_def: ToolDefinition, args: Any,
                                     error: ValidationError | ModelRetry) -> Any:
        # Journaled like tether's own agent journals a malformed call: nothing ran, and the
        # record shows what the model sent. PydanticAI then tells the model (a retry prompt).
        why = str(error.message) if isinstance(error, ModelRetry) else _errors(error)
        self.step.reject(call.tool_name, raw_arguments(call), why)
        raise error


def _errors(error: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(arguments)'}: {e['msg']}"
                     for e in error.errors(include_url=False)[:8])
