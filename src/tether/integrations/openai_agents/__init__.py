"""Run an OpenAI Agents SDK agent durably under tether (``pip install 'tether[openai-agents]'``).

:class:`TetherAgent` wraps an SDK :class:`agents.Agent` (and every agent it hands off
to) as a tether agent a :class:`~tether.Worker` runs by ref: one tether step per model
turn, the conversation in the run's state; every model call journaled through
``ctx.model_call`` (:class:`TetherModel`); every function tool a tether tool with an
effect class, gated by the policy, journaled write-ahead and replayed. See
docs/integrations/openai-agents.md.
"""

from __future__ import annotations

try:
    import agents as _agents  # noqa: F401  (the SDK: fail here, with the install hint)
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("tether.integrations.openai_agents needs the openai-agents extra: "
                      "pip install 'tether[openai-agents]'") from exc

from .agent import TetherAgent
from .model import TetherModel

__all__ = ["TetherAgent", "TetherModel"]
