"""The user's SDK agents, copied with every model and function tool wrapped for tether.

Starting from one agent, every agent reachable by a handoff is found (an ``Agent`` in
``handoffs``, or the agent a ``handoff()`` was made for) and cloned: its model becomes a
:class:`~tether.integrations.openai_agents.model.TetherModel`, its function tools the
copies :func:`~tether.integrations.openai_agents.tools.wrap_tool` makes, and its handoffs
lead to the clones. The user's own objects are never changed.

What tether could not journal or gate is refused here, when the agent is built, not when
a run meets it: hosted tools (they act on the provider's side), MCP servers (their tools
are listed at run time; wrap them as function tools), two agents with one name (a run's
state names its current agent), two different tools with one name.
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

from agents import Agent, Handoff
from agents.exceptions import ModelBehaviorError
from agents.models.default_models import get_default_model
from agents.models.interface import Model, ModelProvider
from agents.models.multi_provider import MultiProvider
from agents.run_context import RunContextWrapper
from agents.tool import FunctionTool

from tether.core.effect_classes import Effect
from tether.errors import PauseRequested, UsageError
from tether.runtime.step_api import current_step
from tether.tools.base import Tool

from .model import TetherModel
from .tools import wrap_tool

SDKAgent = Agent[Any]


@dataclasses.dataclass(frozen=True)
class Graph:
    """The wrapped agents by name, the tether tools by name, and the first agent's name."""

    agents: Mapping[str, SDKAgent]
    tools: Mapping[str, Tool]
    start: str
    originals: tuple[SDKAgent, ...]
    """The user's agents, in the order found (kept alive: clones are looked up by id)."""


def reachable(start: SDKAgent) -> list[SDKAgent]:
    """Every agent a run starting at ``start`` can hand off to, ``start`` first."""
    found: list[SDKAgent] = []
    seen: set[int] = set()
    todo = [start]
    while todo:
        agent = todo.pop(0)
        if id(agent) in seen:
            continue
        seen.add(id(agent))
        found.append(agent)
        for h in agent.handoffs:
            target = h if isinstance(h, Agent) else _target(h)
            if target is not None:
                todo.append(target)
    return found


def _target(h: Handoff[Any, Any]) -> SDKAgent | None:
    ref = h._agent_ref  # set by handoff(agent); a hand-made Handoff names its agent only
    got = ref() if ref is not None else None
    return got if isinstance(got, Agent) else None


def build(start: SDKAgent, *, effects: Mapping[str, Effect], idempotent: frozenset[str],
          provider: ModelProvider | None) -> Graph:
    """Clone the agents reachable from ``start`` with their models and tools wrapped."""
    agents = reachable(start)
    _check_names(agents)
    prov = provider or MultiProvider()
    tools = _wrap_tools(agents, effects, idempotent)
    memo: dict[int, SDKAgent] = {}
    for a in agents:
        memo[id(a)] = a.clone(model=_model_of(a, prov),
                              tools=[tools[id(t)][0] for t in a.tools])
    for a in agents:
        memo[id(a)].handoffs = [memo[id(h)] if isinstance(h, Agent) else _rebind(h, memo)
                                for h in a.handoffs]
    by_name = {t.name: t for _, t in tools.values()}
    return Graph({a.name: memo[id(a)] for a in agents}, by_name, start.name, tuple(agents))


def _check_names(agents: Sequence[SDKAgent]) -> None:
    names: dict[str, SDKAgent] = {}
    for a in agents:
        if a.name in names:
            raise UsageError(f"two agents are named {a.name!r}: a run's state names the agent "
                             "whose turn it is; give each agent its own name")
        names[a.name] = a
        if a.mcp_servers:
            raise UsageError(f"agent {a.name}: MCP servers (mcp_servers=) list their tools at run "
                             "time, where tether cannot gate them; wrap each as a function tool")


def _wrap_tools(agents: Sequence[SDKAgent], effects: Mapping[str, Effect],
                idempotent: frozenset[str]) -> dict[int, tuple[FunctionTool, Tool]]:
    out: dict[int, tuple[FunctionTool, Tool]] = {}
    owner: dict[str, tuple[int, str]] = {}
    for a in agents:
        for t in a.tools:
            if not isinstance(t, FunctionTool):
                raise UsageError(f"agent {a.name}: tool {getattr(t, 'name', t)!r} is a "
                                 f"{type(t).__name__}; tether gates function tools only (a hosted "
                                 "tool acts on the provider's side, unjournaled)")
            if t.name in owner and owner[t.name][0] != id(t):
                raise UsageError(f"agents {owner[t.name][1]} and {a.name} have two different "
                                 f"tools named {t.name!r}; tether names a tool once: rename one")
            owner[t.name] = (id(t), a.name)
            _check_agent_tool(t, effects.get(t.name, "irreversible"), t.name in idempotent)
            if id(t) not in out:
                out[id(t)] = wrap_tool(t, effects.get(t.name, "irreversible"), t.name in idempotent)
    _check_declared(effects, idempotent, set(owner))
    return out


def _check_agent_tool(t: FunctionTool, effect: Effect, idempotent: bool) -> None:
    """An agent used as a tool (``agent.as_tool()``) runs its own agent's tools inside the
    one tether call, past the policy and the journal: only the outer call is gated. So it
    may be declared ``read`` or idempotent only when its agent has nothing to act with."""
    if not getattr(t, "_is_agent_tool", False) or (effect == "irreversible" and not idempotent):
        return
    inner = getattr(t, "_agent_instance", None)
    if isinstance(inner, Agent) and not (inner.tools or inner.handoffs or inner.mcp_servers):
        return
    raise UsageError(f"tool {t.name} is an agent used as a tool (as_tool()) whose agent has "
                     "tools or handoffs, which run inside the call unseen by tether's policy; "
                     f"it cannot be declared {effect!r}{' idempotent' if idempotent else ''}. "
                     "Leave it irreversible (each call waits for approval) or make that agent "
                     "a handoff, so tether gates its tools one by one")


def _check_declared(effects: Mapping[str, Effect], idempotent: frozenset[str],
                    names: set[str]) -> None:
    unknown = sorted((set(effects) | idempotent) - names)
    if unknown:
        raise UsageError(f"effects/idempotent name tools no agent has: {', '.join(unknown)}; "
                         f"the tools are {', '.join(sorted(names)) or 'none'}")


def _model_of(agent: SDKAgent, provider: ModelProvider) -> TetherModel:
    m = agent.model
    if isinstance(m, TetherModel):
        return m
    if isinstance(m, Model):
        name = getattr(m, "model", None)
        return TetherModel(m, name if isinstance(name, str) else type(m).__name__)
    name = m or get_default_model()

    def make() -> Model:
        return provider.get_model(m)
    return TetherModel(make, name)


def _malformed_handoff(name: str, arguments: str, exc: ModelBehaviorError) -> PauseRequested:
    """The model called a handoff with arguments its input type refuses. The SDK has no way
    to tell the model (a handoff's output is its transfer message) and would fail the run
    for the model's mistake: the call is journaled as rejected and the run pauses."""
    step = current_step()
    step.reject(name, arguments, str(exc))
    return PauseRequested(
        f"run {step.run_id} step {step.step}: the model called handoff {name} with arguments "
        f"its input type refuses ({exc}); the Agents SDK cannot tell the model of a handoff's "
        f"error. Roll the run back to an earlier step (tether rollback {step.run_id} --to K) "
        "so the model is asked again, or stop it", detail={"handoff": name})


def _rebind(h: Handoff[Any, Any], memo: Mapping[int, SDKAgent]) -> Handoff[Any, Any]:
    """The handoff, leading to the clone of the agent it led to."""
    original = h.on_invoke_handoff

    async def invoke(ctx: RunContextWrapper[Any], arguments: str) -> SDKAgent:
        try:
            target = await original(ctx, arguments)
        except ModelBehaviorError as exc:
            raise _malformed_handoff(h.tool_name, arguments, exc) from None
        clone = memo.get(id(target))
        if clone is None:
            raise UsageError(f"handoff {h.tool_name} led to agent {target.name!r}, which tether "
                             "did not find when it wrapped the agents; build handoffs with "
                             "handoff(agent) or list the agent in handoffs=")
        return clone

    new = dataclasses.replace(h, on_invoke_handoff=invoke)
    target = _target(h)
    if target is not None:
        new._agent_ref = weakref.ref(memo[id(target)])
    return new

