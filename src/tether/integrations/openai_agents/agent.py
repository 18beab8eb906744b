"""An OpenAI Agents SDK agent as a tether agent: one tether step per model turn.

Each step runs the SDK's own loop for one turn (``Runner.run(..., max_turns=1)``): the
current agent's model is asked once, the tools it asked for run (through tether), a
handoff moves the turn to another agent. A turn that needs another one ends in the
SDK's ``MaxTurnsExceeded``, whose ``run_data`` holds the conversation so far and the agent
whose turn is next; that conversation (the SDK's input items, as JSON) and that agent's
name are the run's state, checkpointed after every turn. A turn that ends with a final
output finishes the run with it.

So approvals, pauses, stops, budgets and rollback work per turn, and a crash repeats at
most the turn in progress, whose journaled model call and effects come back from the
journal instead of being made again.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping
from typing import Any

from agents import Agent, Handoff, RunConfig, Runner
from agents.exceptions import AgentsException, MaxTurnsExceeded
from agents.lifecycle import RunHooks
from agents.models.interface import ModelProvider

from tether.core.canonical import digest
from tether.core.effect_classes import Effect
from tether.errors import TetherError, UsageError
from tether.runtime.outcome import Continue, Done, Outcome
from tether.runtime.step_api import StepContextLike
from tether.tools.base import Tool

from .graph import Graph, build
from .model import jsonable
from .turn import Turn, not_found_formatter


class TetherAgent:
    """Run an SDK :class:`agents.Agent` (and every agent it hands off to) under tether.

    Every model call goes through the journal (``ctx.model_call``); every function tool
    is a tether tool with an effect class, gated by the policy (an undeclared tool is
    ``irreversible``: it waits for an allow rule or a person's approval).

    Args:
        agent: the SDK agent a run starts with.
        name: the tether agent's name (runs, policies and the dashboard use it).
        effects: effect class per tool name (``read``, ``reversible``, ``irreversible``...);
            undeclared tools are ``irreversible``.
        idempotent: tools safe to retry with the same idempotency key.
        budget: the runs' budget (``{"steps": 20, "cost_usd": 1.0}``: a step is a turn).
        run_config: the SDK run configuration (tracing, settings); ``model`` may not be
            set in it: give each agent its model.
        model_provider: resolves agents whose model is a name (default: the SDK's).
        hooks: the SDK's run hooks, called each turn.
        context: the SDK's local context object, given to every turn (not checkpointed).
        on_change: what a run does when it resumes under a changed definition.

    Example:
        >>> triage = Agent("triage", instructions="...", tools=[lookup, refund])
        >>> support = TetherAgent(triage, name="support", effects={"lookup": "read"})
        >>> # a worker runs it by ref: start_run(store, support, agent_ref="app:support", ...)
    """

    def __init__(self, agent: Agent[Any], *, name: str, effects: Mapping[str, Effect] | None = None,
                 idempotent: set[str] | frozenset[str] = frozenset(),
                 budget: Mapping[str, float] | None = None, run_config: RunConfig | None = None,
                 model_provider: ModelProvider | None = None, hooks: RunHooks[Any] | None = None,
                 context: Any = None, on_change: str | None = None) -> None:
        if not isinstance(agent, Agent):
            raise UsageError(f"agent {name}: TetherAgent wraps an OpenAI Agents SDK Agent "
                             f"(agents.Agent), not {type(agent).__name__}")
        config = run_config or RunConfig()
        if config.model is not None:
            raise UsageError(f"agent {name}: run_config.model overrides every agent's model; "
                             "give each SDK agent its model instead")
        self.name = name
        self.budget = dict(budget) if budget else None
        self.on_change = on_change
        self.model = None  # each SDK agent has its own, wrapped
        self._graph: Graph = build(agent, effects=dict(effects or {}),
                                   idempotent=frozenset(idempotent),
                                   provider=model_provider or config.model_provider)
        # A call of a tool that does not exist is the model's mistake: it is told (and the
        # call journaled as rejected), as tether's own agent does; the SDK's default fails
        # the run with ModelBehaviorError.
        self._config = dataclasses.replace(
            config, tool_not_found_behavior="return_error_to_model",
            tool_error_formatter=not_found_formatter(config.tool_error_formatter))
        self._hooks = hooks
        self._context = context

    @property
    def tools(self) -> tuple[Tool, ...]:
        """Every function tool of every agent, as the tether tools they run through."""
        return tuple(self._graph.tools.values())

    @property
    def agents(self) -> Mapping[str, Agent[Any]]:
        """The wrapped SDK agents, by name (the clones runs use; the user's are untouched)."""
        return self._graph.agents

    def initial_state(self, goal: str) -> dict[str, Any]:
        """The conversation starts with the goal as the user's message."""
        return {"agent": self._graph.start, "items": [{"role": "user", "content": goal}],
                "turns": 0}

    def is_async(self) -> bool:
        return True

    def definition_hash(self) -> str:
        """A digest of what defines the agents: names, instructions, models, tools, handoffs."""
        return digest({"start": self._graph.start,
                       "agents": [_definition(a) for a in self._graph.agents.values()],
                       "tools": [t.spec() | {"effect": t.effect, "idempotent": t.idempotent}
                                 for t in self.tools]})

    async def step(self, ctx: StepContextLike, state: dict[str, Any]) -> Outcome:
        """One turn of the SDK's loop; the conversation and the next agent go to ``state``."""
        agent = self._graph.agents.get(state.get("agent", ""))
        if agent is None:
            raise UsageError(f"run {ctx.run_id}: its state names agent {state.get('agent')!r}, "
                             f"not one of {', '.join(self._graph.agents)}; was the agent renamed?")
        if state.get("turns", 0):  # input guardrails run once, at a run's first turn
            agent = agent.clone(input_guardrails=[])
        with Turn(_offered(agent)).current() as turn:
            try:
                result = await self._turn(agent, state, turn)
            except MaxTurnsExceeded as exc:  # the turn wants another: the next step
                data = exc.run_data
                assert data is not None, "the SDK reports its run data with MaxTurnsExceeded"
                history = [*_as_list(data.input), *(i.to_input_item() for i in data.new_items)]
                state.update(agent=data.last_agent.name, items=jsonable(history),
                             turns=state.get("turns", 0) + 1)
                return Continue()
            except AgentsException as exc:
                raise _unwrapped(exc) from exc.__cause__
        state.update(agent=result.last_agent.name, items=jsonable(result.to_input_list()),
                     turns=state.get("turns", 0) + 1)
        return Done(jsonable(result.final_output))

    async def _turn(self, agent: Agent[Any], state: dict[str, Any], turn: Turn) -> Any:
        try:
            return await Runner.run(agent, jsonable(state["items"]), max_turns=1,
                                    run_config=self._config, hooks=self._hooks,
                                    context=self._context)
        finally:
            if turn.failure is not None:  # raised where the SDK guarded it: raised here
                raise turn.failure


def _offered(agent: Agent[Any]) -> tuple[str, ...]:
    """The names the agent's model may call: its tools and its handoffs."""
    return tuple(sorted({*(t.name for t in agent.tools),
                         *(h.tool_name if isinstance(h, Handoff) else
                           Handoff.default_tool_name(h) for h in agent.handoffs)}))


def _unwrapped(exc: AgentsException) -> BaseException:
    """tether's own error where the SDK wrapped it (``UserError("Error running tool ...")``):
    a store failure must abandon the run, not fail it, and a tether error names the run
    and says what to do better than the SDK's wrapper."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, TetherError):
            return seen
        seen = seen.__cause__
    return exc


def _as_list(items: Any) -> list[Any]:
    return [{"role": "user", "content": items}] if isinstance(items, str) else list(items)


def _definition(a: Agent[Any]) -> dict[str, Any]:
    instructions = a.instructions
    if callable(instructions):  # dynamic instructions: their source defines them
        try:
            instructions = inspect.getsource(instructions)
        except (OSError, TypeError):
            instructions = getattr(instructions, "__qualname__", repr(instructions))
    return {"name": a.name, "instructions": instructions,
            "model": getattr(a.model, "name", None),
            "handoffs": sorted(getattr(h, "tool_name", getattr(h, "name", "")) for h in a.handoffs),
            "output_type": _stable(a.output_type), "settings": a.model_settings.to_json_dict(),
            "tool_use_behavior": _stable(a.tool_use_behavior)}


def _stable(value: Any) -> Any:
    """A value as the same text in every process (a repr may hold an address)."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    name = getattr(value, "__qualname__", None)
    mod = getattr(value, "__module__", None)
    return f"{mod}.{name}" if name else type(value).__qualname__
