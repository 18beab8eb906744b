"""Agents: the built-in tool-calling agent and custom step functions.

An agent has a name, tools, optionally a model, and a ``step(ctx, state)``
that mutates ``state`` in place and returns an outcome. The runtime journals
what the step does through ``ctx`` and checkpoints the state after it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from tether.core.canonical import digest
from tether.core.monitors import Monitor
from tether.core.monitors.invariants import Invariant, InvariantsMonitor
from tether.errors import ToolFailed, UsageError
from tether.models.base import Model, ToolCall, ToolSpec
from tether.runtime import swarm_tools
from tether.runtime.outcome import Continue, Done, Outcome
from tether.runtime.step_api import StepContextLike
from tether.runtime.swarm_tools import SWARM_TOOL_NAMES, SWARM_TOOL_SPECS
from tether.tools.base import Tool


@runtime_checkable
class AgentLike(Protocol):
    """What the runtime needs of an agent."""

    @property
    def name(self) -> str: ...

    @property
    def tools(self) -> Sequence[Tool]: ...

    @property
    def model(self) -> Model | None: ...

    @property
    def budget(self) -> Mapping[str, float] | None: ...

    def initial_state(self, goal: str) -> dict[str, Any]: ...

    def step(self, ctx: Any, state: dict[str, Any]) -> Any:
        """Sync agents return an outcome; async agents return a coroutine of one."""
        ...

    def is_async(self) -> bool: ...

    def definition_hash(self) -> str: ...


class Agent:
    """The built-in tool-calling agent: one model call per step plus the tools it asks for.

    The conversation lives in ``state["messages"]``. The run is done when the
    model answers without asking for a tool.

    Example:
        >>> agent = Agent("helper", model=ScriptedModel([...]),
        ...               instructions="Tidy the notes.", tools=FILE_TOOLS)
    """

    def __init__(self, name: str, *, model: Model, instructions: str,
                 tools: Sequence[Tool] = (), budget: Mapping[str, float] | None = None,
                 pause_points: Mapping[str, Any] | None = None,
                 on_change: str | None = None, swarm: bool = False,
                 monitors: Sequence[Callable[[], Monitor]] = (),
                 invariants: Sequence[Invariant] = ()) -> None:
        self.name = name
        self.monitors = _own_monitors(monitors, invariants)
        """The agent's own monitors: each made afresh (a class or a factory) for every run."""
        self.pause_points = dict(pause_points) if pause_points else None
        self.on_change = on_change
        self.model: Model | None = model
        self.instructions = instructions
        self.tools = tuple(tools)
        self.budget = dict(budget) if budget else None
        _refuse_unpriced(name, model, self.budget)
        names = [t.name for t in self.tools]
        if len(set(names)) != len(names):
            raise UsageError(f"agent {name}: two tools share a name: {sorted(names)}")
        self._by_name = {t.name: t for t in self.tools}
        # swarm=True: the model may message other runs and use the swarm's blackboard.
        self.swarm = swarm
        if swarm and SWARM_TOOL_NAMES & set(names):
            raise UsageError(f"agent {name}: tools {sorted(SWARM_TOOL_NAMES & set(names))} "
                             "clash with the swarm tools swarm=True adds; rename them")
        self._offered: tuple[Tool | ToolSpec, ...] = (*self.tools,
                                                      *(SWARM_TOOL_SPECS if swarm else ()))

    def initial_state(self, goal: str) -> dict[str, Any]:
        return {"messages": [{"role": "system", "content": self.instructions},
                             {"role": "user", "content": goal}]}

    def is_async(self) -> bool:
        return True

    def definition_hash(self) -> str:
        return digest({"instructions": self.instructions,
                       "model": self.model.name if self.model else None,
                       "tools": [t.spec() if isinstance(t, Tool) else t for t in self._offered]})

    async def step(self, ctx: StepContextLike, state: dict[str, Any]) -> Outcome:
        messages = state.setdefault("messages", [])
        resp = await ctx.model(messages, self._offered)
        messages.append(resp.as_message())
        if not resp.tool_calls:
            return Done(resp.content)
        for call in resp.tool_calls:
            content = await self._call(ctx, call)
            messages.append({"role": "tool", "tool_call_id": call.id, "content": content})
        return Continue()

    async def _call(self, ctx: StepContextLike, call: ToolCall) -> str:
        if self.swarm and call.name in SWARM_TOOL_NAMES:
            return await self._swarm_call(ctx, call)
        tool = self._by_name.get(call.name)
        if tool is None:
            offered = sorted({*self._by_name, *(SWARM_TOOL_NAMES if self.swarm else ())})
            return ctx.reject(call.name, call.arguments,
                              f"unknown tool {call.name!r}; available: "
                              f"{', '.join(offered) or 'none'}")
        try:
            args = tool.validate(json_loads_object(call.arguments))
        except ValueError as exc:
            return ctx.reject(call.name, call.arguments, str(exc))
        except UsageError as exc:  # valid JSON, wrong shape: the model is told what to fix
            return ctx.reject(call.name, call.arguments,
                              str(exc).removeprefix(f"tool {tool.name}: "))
        try:
            result = await ctx.call(tool, **args)
        except (ToolFailed, UsageError) as exc:
            return f"error: {exc}"
        text = result if isinstance(result, str) else _compact(result)
        if ctx.suspect_files:  # journaled with the call: a replay tells the model the same
            text += (f"\n(warning: {', '.join(ctx.suspect_files)} was last written by a "
                     "quarantined or flagged run: treat its content as suspect)")
        return text

    async def _swarm_call(self, ctx: StepContextLike, call: ToolCall) -> str:
        try:
            args = swarm_tools.validate(call.name, json_loads_object(call.arguments))
        except (ValueError, UsageError) as exc:
            return ctx.reject(call.name, call.arguments, str(exc))
        try:
            return await swarm_tools.call(ctx, call.name, args)
        except UsageError as exc:  # e.g. no run by that name: the model is told
            return f"error: {exc}"


def _refuse_unpriced(agent: str, model: Model | None, budget: Mapping[str, float] | None) -> None:
    """An agent built with a cost cap and a model that has no price (built in, or in the
    file ``$TETHER_PRICES`` names) is refused at once, not when its first run starts."""
    from tether.core.pricing import cost_caps, refuse_unpriced
    if model is not None and budget and cost_caps(budget):
        from tether.runtime.prices import price_table
        refuse_unpriced(model.name, budget, price_table(), f"agent {agent}")


def json_loads_object(text: str) -> dict[str, Any]:
    """Parse a model's tool arguments; ValueError in words the model can act on."""
    import orjson
    if not text or not text.strip():
        return {}
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"arguments are not valid JSON ({exc}); send a JSON object") from None
    if not isinstance(value, dict):
        raise ValueError(f"arguments must be a JSON object, got {type(value).__name__}")
    return value


def _compact(value: Any) -> str:
    import orjson
    return orjson.dumps(value).decode()


StepFn = Callable[..., Any]


class StepAgent:
    """An agent defined by a step function ``step(ctx, state)``, sync or async.

    Example:
        >>> @step_agent(tools=[fetch])
        ... async def watcher(ctx, state):
        ...     state["seen"] = await ctx.call(fetch, url="...")
        ...     return SleepUntil(await ctx.now() + 3600)
    """

    def __init__(self, fn: StepFn, *, name: str | None = None, tools: Sequence[Tool] = (),
                 model: Model | None = None, budget: Mapping[str, float] | None = None,
                 init: Callable[[str], dict[str, Any]] | None = None,
                 pause_points: Mapping[str, Any] | None = None,
                 on_change: str | None = None,
                 monitors: Sequence[Callable[[], Monitor]] = (),
                 invariants: Sequence[Invariant] = ()) -> None:
        self.fn = fn
        self.monitors = _own_monitors(monitors, invariants)
        """The agent's own monitors: each made afresh (a class or a factory) for every run."""
        self.pause_points = dict(pause_points) if pause_points else None
        self.on_change = on_change
        """What to do when a run resumes under a changed definition of this agent:
        ``refuse`` (default with irreversible tools), ``warn`` or ``allow``."""
        self.name = name or fn.__name__
        self.tools = tuple(tools)
        self.model = model
        self.budget = dict(budget) if budget else None
        _refuse_unpriced(self.name, model, self.budget)
        self._init = init

    def initial_state(self, goal: str) -> dict[str, Any]:
        return self._init(goal) if self._init else {"goal": goal}

    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.fn)

    def definition_hash(self) -> str:
        # Computed once per agent object: reading the source is slow, and every run of the
        # agent asks for it when a worker takes the run.
        cached: str | None = getattr(self, "_definition", None)
        if cached is None:
            try:
                src = inspect.getsource(self.fn)
            except (OSError, TypeError):
                src = self.fn.__qualname__
            cached = digest({"source": src, "model": self.model.name if self.model else None,
                             "tools": [t.spec() for t in self.tools]})
            self._definition = cached
        return cached

    def step(self, ctx: Any, state: dict[str, Any]) -> Any:
        return self.fn(ctx, state)


def _own_monitors(monitors: Sequence[Callable[[], Monitor]],
                  invariants: Sequence[Invariant]) -> tuple[Callable[[], Monitor], ...]:
    """An agent's monitors, with its ``@invariant`` functions checked by one more."""
    if not invariants:
        return tuple(monitors)
    checks = tuple(invariants)
    return (*monitors, lambda: InvariantsMonitor(checks))


def step_agent(fn: StepFn | None = None, /, **options: Any) -> Any:
    """Decorator form of :class:`StepAgent`."""
    if fn is not None:
        return StepAgent(fn, **options)
    return lambda f: StepAgent(f, **options)


__all__ = ["Agent", "AgentLike", "Continue", "Done", "StepAgent", "step_agent"]
