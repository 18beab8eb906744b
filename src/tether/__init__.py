"""tether: the operations layer for always-on AI agent loops.

Define tools (with an effect class), agents (the built-in tool-calling
:class:`Agent` or a :class:`StepAgent` around ``step(ctx, state)``), start runs
in a store, and drive them with a :class:`Worker`. Every decision and effect is
journaled; every step is checkpointed; a crash loses nothing and repeats no
effect.
"""

from tether._version import __version__
from tether.audit import VerifyReport, verify_store
from tether.core.clock import Clock, FixedClock, WallClock
from tether.core.monitors.invariants import Facts as InvariantFacts
from tether.core.monitors.invariants import Invariant, invariant
from tether.core.policy import Action, Decision, Policy, PolicyError, load_policy, rules_from_python
from tether.core.pricing import PriceTable
from tether.errors import (
    AwaitApproval,
    BudgetExceeded,
    Deferred,
    EffectInDoubt,
    InvalidState,
    LeaseLost,
    ModelError,
    NotFound,
    PauseRequested,
    SchemaTooNew,
    Signal,
    StopRequested,
    StorageError,
    StorageFull,
    StoreCorrupt,
    StoreError,
    StoreLocked,
    StoreMissing,
    TetherError,
    ToolDefinitionError,
    ToolDenied,
    ToolFailed,
    UsageError,
)
from tether.models import (
    ForeignResponse,
    Message,
    Model,
    ModelResponse,
    ScriptedModel,
    ToolCall,
    ToolSpec,
    Usage,
)
from tether.ops import RunState, StepCheckpoint, Tether
from tether.policies import apply_policy
from tether.runtime.agent import Agent, AgentLike, StepAgent, step_agent
from tether.runtime.context import StepContext, SyncStepContext
from tether.runtime.outcome import AwaitMessages, Continue, Done, SleepUntil
from tether.runtime.runs import load_agent, start_run
from tether.runtime.step_api import BoardEntry, InboxMessage, current_step
from tether.runtime.worker import Worker
from tether.store import SQLiteStore, Store, open_store
from tether.system_clock import SystemClock
from tether.tools import (
    Effect,
    Tool,
    ToolContext,
    current,
    record_after,
    register_undo,
    schema_tool,
    tool,
)


def __getattr__(name: str) -> object:
    # The OpenAI adapter pulls in the openai client; import it only when asked for.
    if name == "OpenAIModel":
        from tether.models.openai import OpenAIModel
        return OpenAIModel
    raise AttributeError(f"module 'tether' has no attribute {name!r}")

__all__ = [
    "Action",
    "Agent",
    "AgentLike",
    "AwaitApproval",
    "AwaitMessages",
    "BoardEntry",
    "BudgetExceeded",
    "Clock",
    "Continue",
    "Decision",
    "Deferred",
    "Done",
    "Effect",
    "EffectInDoubt",
    "FixedClock",
    "ForeignResponse",
    "InboxMessage",
    "InvalidState",
    "Invariant",
    "InvariantFacts",
    "LeaseLost",
    "Message",
    "Model",
    "ModelError",
    "ModelResponse",
    "NotFound",
    "OpenAIModel",
    "PauseRequested",
    "Policy",
    "PolicyError",
    "PriceTable",
    "RunState",
    "SQLiteStore",
    "SchemaTooNew",
    "ScriptedModel",
    "Signal",
    "SleepUntil",
    "StepAgent",
    "StepCheckpoint",
    "StepContext",
    "StopRequested",
    "StorageError",
    "StorageFull",
    "Store",
    "StoreCorrupt",
    "StoreError",
    "StoreLocked",
    "StoreMissing",
    "SyncStepContext",
    "SystemClock",
    "Tether",
    "TetherError",
    "Tool",
    "ToolCall",
    "ToolContext",
    "ToolDefinitionError",
    "ToolDenied",
    "ToolFailed",
    "ToolSpec",
    "Usage",
    "UsageError",
    "VerifyReport",
    "WallClock",
    "Worker",
    "__version__",
    "apply_policy",
    "current",
    "current_step",
    "invariant",
    "load_agent",
    "load_policy",
    "open_store",
    "record_after",
    "register_undo",
    "rules_from_python",
    "schema_tool",
    "start_run",
    "step_agent",
    "tool",
    "verify_store",
]
