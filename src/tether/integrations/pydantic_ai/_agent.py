"""A PydanticAI ``Agent`` as a tether agent: one tether step per model turn.

A step runs the PydanticAI agent node by node (``agent.iter``) from the
conversation kept in the run's state, through one model request and the tool
calls it asked for, and stops before the next request: the conversation
(PydanticAI's own message JSON) goes back into the state and tether checkpoints
it. Approvals, pauses, budgets, rollback and crash recovery therefore work per
turn, and a re-run step replays its model call and tool calls from the journal.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

from pydantic import TypeAdapter
from pydantic_ai import Agent
from pydantic_ai.agent import AgentRun
from pydantic_ai.models import Model
from pydantic_ai.run import AgentRunResult
from pydantic_ai.tools import ToolDefinition
from pydantic_ai.toolsets import FunctionToolset
from pydantic_core import to_jsonable_python

from tether.core.canonical import digest
from tether.core.effect_classes import TOOL_EFFECTS, Effect
from tether.core.monitors import Monitor
from tether.core.pricing import refuse_unpriced
from tether.errors import Signal, ToolDefinitionError, UsageError
from tether.integrations.pydantic_ai._capability import TetherStepCapability
from tether.integrations.pydantic_ai._messages import dump_messages, load_messages
from tether.integrations.pydantic_ai._toolset import tether_tool
from tether.runtime.outcome import Continue, Done, Outcome
from tether.runtime.prices import price_table
from tether.runtime.step_api import StepContextLike
from tether.tools.base import Tool


class TetherAgent:
    """Run a PydanticAI ``Agent`` durably under tether (an ``AgentLike`` a Worker runs).

    Each model request is a journaled ``ctx.model_call``; each tool call goes through
    tether's policy, approvals and effect journal. A tool not named in ``effects`` is
    ``irreversible``: it runs only under an allow rule or with a person's approval.

    Args:
        agent: the PydanticAI agent (left untouched: tether plugs in per run).
        name: the tether agent's name (default: the PydanticAI agent's name).
        effects: effect class by tool name: ``read``, ``reversible`` or ``irreversible``.
        idempotent: tools safe to retry with the same idempotency key after a crash.
        budget: tether budget caps for each run (``tokens``, ``cost_usd``, ...).
        deps: PydanticAI dependencies passed to every step's run.
        on_change: what a run does when resumed under a changed definition
            (``refuse``, ``warn`` or ``allow``; default: refuse with irreversible tools).
        pause_points: review points where each run waits for a person.
        monitors: monitors of the agent's own, beside the store's.

    Example:
        >>> support = TetherAgent(pydantic_agent, name="support",
        ...                       effects={"lookup_order": "read"}, idempotent={"refund"},
        ...                       budget={"cost_usd": 2.0})
    """

    def __init__(self, agent: Agent[Any, Any], *, name: str | None = None,
                 effects: Mapping[str, Effect] | None = None, idempotent: Iterable[str] = (),
                 budget: Mapping[str, float] | None = None, deps: Any = None,
                 on_change: str | None = None, pause_points: Mapping[str, Any] | None = None,
                 monitors: Sequence[Callable[[], Monitor]] = ()) -> None:
        if not isinstance(agent, Agent):
            raise UsageError(f"TetherAgent wraps a pydantic_ai.Agent, not {type(agent).__name__}")
        self.agent = agent
        self.name = name or agent.name or ""
        if not self.name:
            raise UsageError("TetherAgent needs a name: pass name=... or give the PydanticAI "
                             "agent one (Agent(..., name=...))")
        self.effects: dict[str, Effect] = dict(effects or {})
        wrong = {k: v for k, v in self.effects.items() if v not in TOOL_EFFECTS}
        if wrong:
            raise ToolDefinitionError(f"agent {self.name}: effects {wrong} are not effect "
                                      f"classes; use one of {', '.join(TOOL_EFFECTS)}")
        self.idempotent = frozenset(idempotent)
        self.budget = dict(budget) if budget else None
        model = _model_name(agent.model)
        if self.budget and model is not None:  # a cost cap on an unpriced model: refused now
            # Priced by the name the model goes by in requests ("openai:gpt-4o" -> "gpt-4o").
            refuse_unpriced(model.split(":", 1)[-1], self.budget, price_table(),
                            f"agent {self.name}")
        self.deps = deps
        self.on_change = on_change
        self.pause_points = dict(pause_points) if pause_points else None
        """Review points for every run, e.g. ``{"every_steps": 10}`` (one step = one turn)."""
        self.monitors = tuple(monitors)
        """The agent's own monitors: each made afresh (a class or a factory) for every run."""
        self.model: None = None  # the PydanticAI agent's model answers, through model_call
        self.tools: tuple[Tool, ...] = tuple(
            tether_tool(d, self.effects, self.idempotent) for d in _static_tool_defs(agent))
        self._by_name = {t.name: t for t in self.tools}
        self._definition: str | None = None
        unknown = sorted((set(self.effects) | self.idempotent) - set(self._by_name))
        if unknown and _tools_known(agent):  # else checked against what the first step offers
            raise ToolDefinitionError(
                f"agent {self.name}: effects/idempotent name tools it does not have: "
                f"{', '.join(unknown)}; its tools: {', '.join(sorted(self._by_name)) or 'none'}")

    def initial_state(self, goal: str) -> dict[str, Any]:
        """The goal is the user prompt of the first turn; ``messages`` fill as turns pass."""
        return {"prompt": goal, "messages": []}

    def is_async(self) -> bool:
        """Always: PydanticAI's run is async."""
        return True

    def definition_hash(self) -> str:
        """A digest of what defines the agent: model, instructions and system prompts (a
        function's by its source), tool schemas with their effect classes, output type.
        A run resumed under another definition is paused (``on_change``)."""
        if self._definition is None:  # reading function sources is slow: once per agent
            self._definition = self._digest()
        return self._definition

    def _digest(self) -> str:
        a = self.agent
        return digest({
            "framework": "pydantic-ai",
            "model": _model_name(a.model),
            "instructions": [_describe(getattr(s, "instruction", s))
                             for s in getattr(a, "_instructions", ())],
            "system_prompts": [*getattr(a, "_system_prompts", ()),
                               *(_describe(getattr(r, "function", r))
                                 for r in getattr(a, "_system_prompt_functions", ()))],
            "tools": [{**t.spec(), "effect": t.effect, "idempotent": t.idempotent}
                      for t in self.tools],
            "effects": self.effects, "idempotent": sorted(self.idempotent),
            "output": _output_schema(a.output_type),
        })

    async def step(self, ctx: StepContextLike, state: dict[str, Any]) -> Outcome:
        """One model turn: the request, then the tool calls it asked for."""
        history = load_messages(state.get("messages") or ())
        if not history and not isinstance(state.get("prompt"), str):
            raise UsageError(f"run {ctx.run_id} step {ctx.step}: the state of a PydanticAI "
                             "run needs a 'prompt' (text) or 'messages' (PydanticAI's message "
                             "JSON); start it with start_run(..., goal=...)")
        cap = TetherStepCapability(ctx, self._by_name, self.effects, self.idempotent,
                                   offered=None if history else self._check_offered)
        try:
            with Agent.parallel_tool_call_execution_mode("sequential"):
                async with self.agent.iter(None if history else state["prompt"],
                                           message_history=history or None, deps=self.deps,
                                           capabilities=[cap]) as run:
                    outcome = await _one_turn(run, state)
        except BaseExceptionGroup as group:  # a task group's wrapping: tether's signal first
            # (A signal the framework swallowed or turned into an error of its own is
            # raised by the runtime, which kept it, when the step returns.)
            raise _signal_in(group) or group from None
        return outcome

    def _check_offered(self, run: str, offered: Collection[str]) -> None:
        """At a run's first step: refuse ``effects``/``idempotent`` naming a tool that no
        toolset offers (e.g. a prefixed toolset's tool by its unprefixed name), which would
        otherwise be ignored, leaving the tool irreversible."""
        unknown = sorted((set(self.effects) | self.idempotent) - set(offered) - set(self._by_name))
        if unknown:
            raise UsageError(
                f"run {run}: agent {self.name}: effects/idempotent name tools the agent does "
                f"not offer: {', '.join(unknown)}; the tools it offers: "
                f"{', '.join(sorted({*offered, *self._by_name})) or 'none'} (a prefixed "
                "toolset's tools go by their prefixed names)")


def _tools_known(agent: Agent[Any, Any]) -> bool:
    """Whether every tool the agent can offer is known before a run: only function
    toolsets, none a capability or a function adds at run time."""
    dynamic = getattr(agent, "_dynamic_toolsets", None)
    from_capabilities = getattr(agent, "_cap_toolsets", None)
    return (all(isinstance(ts, FunctionToolset) for ts in agent.toolsets)
            and isinstance(dynamic, list) and not dynamic
            and isinstance(from_capabilities, list) and not from_capabilities)


async def _one_turn(run: AgentRun[Any, Any], state: dict[str, Any]) -> Outcome:
    from pydantic_ai import CallToolsNode, ModelRequestNode
    from pydantic_graph import End
    node: Any = run.next_node
    answered = False
    while True:
        if isinstance(node, End):
            result: AgentRunResult[Any] | None = run.result
            assert result is not None
            state["messages"] = dump_messages(run.all_messages())
            state["output"] = to_jsonable_python(result.output, fallback=str)
            return Done(state["output"])
        if isinstance(node, ModelRequestNode) and answered:
            # The next request holds the tool results; it is sent by the next step.
            state["messages"] = dump_messages([*run.all_messages(), node.request])
            return Continue()
        answered = answered or isinstance(node, CallToolsNode)
        node = await run.next(node)


def _signal_in(group: BaseExceptionGroup[Any]) -> BaseException | None:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            found = _signal_in(exc)
            if found is not None:
                return found
        elif isinstance(exc, Signal):
            return exc
    return None


def _static_tool_defs(agent: Agent[Any, Any]) -> list[ToolDefinition]:
    """The function tools known before a run (an MCP server's are listed only at run time)."""
    out: list[ToolDefinition] = []
    for ts in agent.toolsets:
        if isinstance(ts, FunctionToolset):
            out.extend(t.tool_def for t in ts.tools.values())
    names = [d.name for d in out]
    if len(set(names)) != len(names):
        raise ToolDefinitionError(f"agent {agent.name}: two tools share a name: {sorted(names)}")
    return out


def _model_name(model: Model | str | None) -> str | None:
    if model is None or isinstance(model, str):
        return model
    return model.model_name


def _describe(x: Any) -> str:
    """An instruction or system prompt as the definition sees it: its text, or a function's
    name and source (editing the function changes the definition)."""
    if isinstance(x, str):
        return x
    try:
        src = inspect.getsource(x)
    except (OSError, TypeError):
        src = ""
    return f"{getattr(x, '__module__', '')}.{getattr(x, '__qualname__', repr(x))}:{digest(src)}"


def _output_schema(output_type: Any) -> Any:
    if output_type is str:
        return "str"
    try:
        return TypeAdapter(output_type).json_schema()
    except Exception:  # output functions, unions of them: their name is what defines them
        return repr(output_type)
