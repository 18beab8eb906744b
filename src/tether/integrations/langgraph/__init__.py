"""LangGraph under tether: a graph run durably, one superstep per tether step.

- :class:`TetherGraph`: a ``StateGraph`` as a tether agent a Worker runs by
  reference; the graph's state is the run's checkpointed state (JSON), its
  ``ToolNode`` tools become tether tools with the effect classes you declare;
- :class:`TetherChatModel`: any LangChain chat model, its calls journaled,
  gated, priced, budgeted and replayed through ``ctx.model_call``;
- :func:`wrap_tool`: one LangChain tool as a tether tool, for node code that
  calls tools itself.

Needs the ``langgraph`` extra: ``pip install 'tether[langgraph]'``.
See docs/integrations/langgraph.md.
"""

from __future__ import annotations

try:
    import langchain_core  # noqa: F401
    import langgraph  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("tether.integrations.langgraph needs the langgraph extra: "
                      "pip install 'tether[langgraph]'") from exc

from tether.integrations.langgraph.chat import TetherChatModel
from tether.integrations.langgraph.graph import TetherGraph, messages_input
from tether.integrations.langgraph.tools import WrappedTool, wrap_tool

__all__ = ["TetherChatModel", "TetherGraph", "WrappedTool", "messages_input", "wrap_tool"]
