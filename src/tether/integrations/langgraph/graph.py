"""A LangGraph graph as a tether agent: one superstep per tether step.

:class:`TetherGraph` takes a ``StateGraph`` (or the graph compiled from one) and
is an :class:`~tether.runtime.agent.AgentLike` a Worker runs by reference. Each
tether step:

1. loads the graph's last checkpoint from the run's state into a
   :class:`~tether.integrations.langgraph.saver.StepSaver` (the first step starts
   from the input instead);
2. runs exactly one LangGraph superstep (``interrupt_after="*"``: LangGraph stops
   itself once the superstep's nodes have run and their writes are applied), its
   tasks one at a time in LangGraph's order (``max_concurrency=1``), every model
   and tool call made through the journal;
3. puts the new checkpoint back in the run's state, which tether checkpoints.

So pause points, approvals, budgets, monitors and rollback work per superstep,
and a step re-run after a crash or a pause starts from the same checkpoint while
tether's journal hands back what it already did (nothing is asked or done twice).
The run is done when the graph has nothing left to run.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.graph.state import CompiledStateGraph, StateGraph
from langgraph.prebuilt import ToolNode

from tether.core.canonical import digest
from tether.core.effect_classes import TOOL_EFFECTS, Effect
from tether.errors import UsageError
from tether.integrations.langgraph.blocking import on_step_loop
from tether.integrations.langgraph.codec import decode, encode
from tether.integrations.langgraph.saver import StepSaver
from tether.integrations.langgraph.tools import WrappedTool, wrap_tool
from tether.runtime.outcome import Continue, Done, Outcome
from tether.runtime.step_api import StepContextLike
from tether.tools.base import Tool


def messages_input(goal: str) -> dict[str, Any]:
    """The default input: the goal as the conversation's first human message."""
    return {"messages": [HumanMessage(goal)]}


class TetherGraph:
    """A LangGraph graph that a tether Worker runs durably, one superstep per step.

    The tools of the graph's ``ToolNode``\\ s are wrapped in place (see
    :func:`~tether.integrations.langgraph.tools.wrap_tool`): from then on they run
    only inside a tether step. Wrap chat models with
    :class:`~tether.integrations.langgraph.chat.TetherChatModel`.

    Args:
        graph: a ``StateGraph`` (compiled here) or a compiled one.
        name: the agent's name.
        effects: tool name -> ``read``, ``reversible`` or ``irreversible``; a tool not
            named is ``irreversible`` (it waits for an allow rule or an approval).
        idempotent: names of tools safe to run again with the same idempotency key.
        tools: more tools the graph's own node code calls (``wrap_tool``'s result).
        input: the graph's input from the run's goal (``{"messages": [HumanMessage(goal)]}``).
        config: a ``RunnableConfig`` for every invocation (``configurable`` values your
            nodes read, tags); tether sets the thread id and ``max_concurrency``.
        context: LangGraph's run-time context (``context_schema``), the same every step.
        budget, pause_points, on_change: as for :class:`~tether.StepAgent`.

    Example:
        >>> agent = TetherGraph(builder, name="booker", effects={"search": "read"})
        >>> start_run(store, agent, agent_ref="app.agents:agent", goal="Book a table")
    """

    def __init__(self, graph: StateGraph[Any, Any, Any, Any] | CompiledStateGraph[Any, Any, Any, Any],
                 *, name: str, effects: Mapping[str, Effect] | None = None,
                 idempotent: Sequence[str] | set[str] = (), tools: Sequence[WrappedTool] = (),
                 input: Callable[[str], Any] = messages_input,
                 config: RunnableConfig | None = None, context: Any = None,
                 budget: Mapping[str, float] | None = None,
                 pause_points: Mapping[str, Any] | None = None,
                 on_change: str | None = None) -> None:
        self.name = name
        self._graph = graph.compile() if isinstance(graph, StateGraph) else graph
        if not isinstance(self._graph, CompiledStateGraph):
            raise UsageError(f"agent {name}: TetherGraph takes a StateGraph or the graph "
                             f"compiled from one, not {type(graph).__name__}")
        self._effects = dict(effects or {})
        bad = {k: v for k, v in self._effects.items() if v not in TOOL_EFFECTS}
        if bad:
            raise UsageError(f"agent {name}: effects {bad} must each be one of "
                             f"{', '.join(TOOL_EFFECTS)}")
        _refuse_retries(name, self._graph)
        self._idempotent = frozenset(idempotent)
        wrapped = [*self._wrap_tool_nodes(), *tools]
        self.tools: tuple[Tool, ...] = _one_per_name(name, wrapped)
        unknown = sorted({*self._effects, *self._idempotent} - {t.name for t in self.tools})
        if unknown:  # a typo would leave the tool irreversible: safe, but not what was meant
            raise UsageError(f"agent {name}: effects/idempotent name tools the graph does not "
                             f"have: {unknown}; its tools: {sorted(t.name for t in self.tools)}")
        self.model = None
        self.budget = dict(budget) if budget else None
        self.pause_points = dict(pause_points) if pause_points else None
        self.on_change = on_change
        self._input = input
        self._config = dict(config or {})
        self._context = context
        self._definition: str | None = None

    def _wrap_tool_nodes(self) -> list[WrappedTool]:
        """Wrap, in place, the tools of every ``ToolNode`` of the graph and its subgraphs."""
        out = []
        for node in _tool_nodes(self._graph, set()):
            by_name = node.tools_by_name  # LangGraph's own dict: replaced entry by entry
            for tool_name, tool in list(by_name.items()):
                effect = self._effects.get(tool_name, "irreversible")
                again = tool_name in self._idempotent
                seen = _WRAPPED.get(id(tool))
                if seen is None:
                    seen = wrap_tool(tool, effect=effect, idempotent=again)
                    _WRAPPED[id(seen.langchain)] = seen
                    by_name[tool_name] = seen.langchain
                elif (seen.tool.effect, seen.tool.idempotent) != (effect, again):
                    raise UsageError(
                        f"agent {self.name}: tool {tool_name} of this graph was already "
                        f"wrapped as {seen.tool.effect}{' idempotent' if seen.tool.idempotent else ''}"
                        " by another TetherGraph; build the graph afresh for each, or declare "
                        "the same effects")
                out.append(seen)
        return out

    # -- AgentLike --------------------------------------------------------------------
    def initial_state(self, goal: str) -> dict[str, Any]:
        return {"input": encode(self._input(goal))}

    def is_async(self) -> bool:
        return True

    def definition_hash(self) -> str:
        # The graph's shape, its nodes' code and its tools: computed once per agent object
        # (reading source is slow, and every run asks when a worker takes it).
        if self._definition is None:
            drawn = self._graph.get_graph()
            self._definition = digest({
                "graph": "langgraph", "name": self.name,
                "nodes": {n: _source(spec.runnable) for n, spec in self._graph.builder.nodes.items()},
                "edges": sorted([e.source, e.target, e.conditional] for e in drawn.edges),
                "tools": [t.spec() for t in self.tools],
                "effects": {t.name: [t.effect, t.idempotent] for t in self.tools}})
        return self._definition

    async def step(self, ctx: StepContextLike, state: dict[str, Any]) -> Outcome:
        saver = StepSaver(ctx.run_id)
        config: RunnableConfig = {**self._config,  # type: ignore[typeddict-item]
                                  "configurable": {**self._config.get("configurable", {}),
                                                   "thread_id": ctx.run_id},
                                  "max_concurrency": 1}
        graph = self._graph.copy(update={"checkpointer": saver})
        if state.get("graph"):
            saver.restore(state["graph"])
            given = None
        else:
            given = decode(state["input"])
        # A signal a node caught or turned into an error still ends the step: the runtime
        # keeps it and raises it when the step returns (or instead of that error).
        with on_step_loop():
            await graph.ainvoke(given, config, context=self._context, interrupt_after="*",
                                durability="sync")
        state["graph"] = saver.snapshot()
        state.pop("input", None)
        now = await graph.aget_state(config)
        if now.interrupts:
            raise UsageError(f"run {ctx.run_id} step {ctx.step}: the graph called LangGraph's "
                             "interrupt(), which tether does not resume; ask for a person's "
                             "approval with a tether policy (approve rules) instead")
        if not now.next:
            return Done(_result(now.values))
        return Continue()


def _one_per_name(agent: str, wrapped: Sequence[WrappedTool]) -> tuple[Tool, ...]:
    """The graph's tether tools, one per name. A step finds a tool by its name, so two
    different tools named alike (or one declared two ways) would run one in the other's
    place, under the other's effect class: refused."""
    by_name: dict[str, WrappedTool] = {}
    for w in wrapped:
        seen = by_name.setdefault(w.tool.name, w)
        if seen.tool is w.tool:
            continue
        same = (seen.original is w.original and (seen.tool.effect, seen.tool.idempotent)
                == (w.tool.effect, w.tool.idempotent))
        if not same:
            raise UsageError(f"agent {agent}: two tools are named {w.tool.name!r} (in ToolNodes "
                             "or tools=), different tools or one declared two ways; tether "
                             "finds a tool by its name: rename one, or declare it once")
    return tuple(w.tool for w in by_name.values())


def _refuse_retries(agent: str, graph: CompiledStateGraph[Any, Any, Any, Any]) -> None:
    """Refuse a graph whose nodes LangGraph retries (``retry_policy=``). A retry re-runs the
    node inside the same step, and with it the tool and model calls it already made, as new
    calls: an effect already done would run again. tether's replay and in-doubt handling
    take the place of node retries (a failed model call pauses the run; a step re-run
    replays what it did)."""
    retrying = _retrying_nodes(graph, "", set())
    if retrying:
        raise UsageError(
            f"agent {agent}: node(s) {', '.join(retrying)} have a LangGraph retry policy "
            "(retry_policy=, or a default one); a retry re-runs the node and every tool call "
            "it made, so an effect already done would run again. Drop the retry policy: "
            "tether replays a re-run step from its journal and pauses a run whose model or "
            "effect failed, for `tether resume`")


def _retrying_nodes(graph: CompiledStateGraph[Any, Any, Any, Any], prefix: str,
                    seen: set[int]) -> list[str]:
    """The nodes (``parent/child`` in subgraphs) that LangGraph would retry."""
    if id(graph) in seen:
        return []
    seen.add(id(graph))
    found = [f"{prefix}{n}" for n, node in graph.nodes.items()
             if (node.retry_policy or graph.retry_policy) and n != "__start__"]
    for n, spec in graph.builder.nodes.items():
        if isinstance(spec.runnable, CompiledStateGraph):
            found.extend(_retrying_nodes(spec.runnable, f"{prefix}{n}/", seen))
    return found


def _tool_nodes(graph: CompiledStateGraph[Any, Any, Any, Any], seen: set[int]) -> list[ToolNode]:
    """The ``ToolNode``\\ s of ``graph`` and of every compiled subgraph added as a node:
    a subgraph's tools run inside the parent's superstep, and unwrapped they would run
    past tether's policy and journal."""
    if id(graph) in seen:
        return []
    seen.add(id(graph))
    found: list[ToolNode] = []
    for spec in graph.builder.nodes.values():
        node = spec.runnable
        if isinstance(node, ToolNode):
            found.append(node)
        elif isinstance(node, CompiledStateGraph):
            found.extend(_tool_nodes(node, seen))
    return found


_WRAPPED: dict[int, WrappedTool] = {}
"""Wrapped LangChain tools by id: a graph wrapped twice (two TetherGraphs) keeps one."""


def _source(node: Any) -> str:
    """A node's code as its definition sees it: the source of the user's function; for a
    library's node (a ``ToolNode``: its tools are counted apart) its class, so upgrading
    LangGraph alone does not change the agent's definition."""
    if isinstance(node, CompiledStateGraph):  # a subgraph: its nodes define it
        return digest({n: _source(s.runnable) for n, s in node.builder.nodes.items()})
    fn = getattr(node, "afunc", None) or getattr(node, "func", None) or node
    if inspect.isfunction(fn):
        try:
            return inspect.getsource(fn)
        except (OSError, TypeError):
            return f"{fn.__module__}.{fn.__qualname__}"
    kind = type(node)
    return f"{kind.__module__}.{kind.__qualname__}"


def _result(values: Any) -> Any:
    """The run's result: the last message's text, or the graph's final values as JSON."""
    if isinstance(values, dict):
        messages = values.get("messages")
        if isinstance(messages, list) and messages and isinstance(messages[-1], BaseMessage):
            return str(messages[-1].text)
    return encode(values)
