"""Run a PydanticAI ``Agent`` durably under tether (the ``pydantic-ai`` extra).

:class:`TetherAgent` makes a PydanticAI agent an agent a tether ``Worker`` runs:
one tether step per model turn, the conversation (PydanticAI's own message JSON)
checkpointed in the run's state, every model request journaled and replayed
(:class:`TetherModel`), every tool call gated by tether's policy, approvals and
effect journal (:class:`TetherToolset`). See docs/integrations/pydantic-ai.md.
"""

from __future__ import annotations

try:
    import pydantic_ai  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("tether.integrations.pydantic_ai needs the pydantic-ai extra: "
                      "pip install 'tether[pydantic-ai]'") from exc

from tether.integrations.pydantic_ai._agent import TetherAgent
from tether.integrations.pydantic_ai._model import TetherModel
from tether.integrations.pydantic_ai._toolset import TetherToolset

__all__ = ["TetherAgent", "TetherModel", "TetherToolset"]
