"""What a run's step contexts call on: its agent and tools, effects, oversight, budget,
prices, monitors, and the policy's secret patterns (made once per run by the executor)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tether.core.canonical import digest
from tether.core.fingerprint import ConversationHasher, fingerprint
from tether.core.pricing import PriceTable
from tether.core.redaction import Redactor, keyed_digest
from tether.errors import UsageError
from tether.runtime.agent import AgentLike
from tether.runtime.effects import EffectRunner
from tether.runtime.monitoring import MonitorHost
from tether.runtime.oversight import Oversight
from tether.runtime.run_budget import RunBudget
from tether.runtime.stepping import StepRuntime
from tether.tools.base import Tool


@dataclass(slots=True)
class StepServices:
    """What a run's step contexts call on, made once per run by the executor."""

    rt: StepRuntime
    agent: AgentLike
    effects: EffectRunner
    oversight: Oversight
    budget: RunBudget
    prices: PriceTable
    monitors: MonitorHost
    hasher: ConversationHasher = field(default_factory=ConversationHasher)
    _tools: dict[str, Tool] = field(init=False)
    _fp_key: bytes | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self._tools = {t.name: t for t in self.agent.tools}

    @property
    def redactor(self) -> Redactor:
        """The secret patterns of the policy in force (the built-ins at least)."""
        return self.oversight.policy.redaction

    def args_fingerprint(self, kind: str, name: str, args_json: Any) -> tuple[str, Any]:
        """A call's fingerprint and the arguments to journal: as they are, or, when they
        hold a secret, redacted, with the fingerprint a keyed hash of the real ones (so a
        re-run step with the same arguments matches, and the journal cannot be searched
        for a guessed secret)."""
        shown = self.redactor.redact(args_json)
        if shown is args_json:
            return fingerprint(kind, name, digest(args_json)), args_json
        if self._fp_key is None:
            key = self.rt.journal.store.get_meta("fingerprint_key")
            if not key:
                raise UsageError(f"run {self.rt.journal.run}: the store has no fingerprint "
                                 "key (it was not migrated); open it once with a tether "
                                 "that writes (e.g. tether worker --until-idle)")
            self._fp_key = bytes.fromhex(key)
        return fingerprint(kind, name, keyed_digest(self._fp_key, args_json)), shown

    def tool(self, tool: Tool | str) -> Tool:
        """The agent's tool of that name (a tool passed directly need not be declared)."""
        name = tool if isinstance(tool, str) else tool.name
        t = self._tools.get(name)
        if t is None:
            if isinstance(tool, Tool):
                return tool
            raise UsageError(f"run {self.rt.journal.run}: unknown tool {name!r}; the agent "
                             f"{self.agent.name} has {', '.join(sorted(self._tools)) or 'none'}")
        return t


