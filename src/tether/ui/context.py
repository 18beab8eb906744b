"""One dashboard server's shared parts: its store, who may act, its guards' settings."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from tether.ops import Tether
from tether.runtime.agent import AgentLike
from tether.store.protocol import Store
from tether.ui.auth import Auth, Caller
from tether.ui.coalesce import LiveRegions
from tether.ui.live import Poller
from tether.ui.security import allowed_hosts

__all__ = ["UiContext"]


@dataclass
class UiContext:
    """What every request of one server shares (``app.state.ctx``)."""

    store: Store
    host: str
    port: int
    auth: Auth
    agents: dict[str, AgentLike] = field(default_factory=dict)
    """Agents by reference, as :class:`~tether.ops.Tether` takes them; a run's agent not in
    it is imported as ``module:attr`` (as the CLI does)."""
    poll_interval: float = 0.25
    secret: bytes = field(default_factory=lambda: os.urandom(32))
    """Signs CSRF tokens; new at every start, so tokens die with the server."""
    last_verify: dict[str, Any] | None = None
    """The last ``audit verify`` this server ran (the journal keeps no record of one)."""
    poller: Poller = field(init=False)
    live: LiveRegions = field(default_factory=LiveRegions)
    """Live regions shared by the open pages that show the same thing."""
    hosts: frozenset[str] | None = field(init=False)

    def __post_init__(self) -> None:
        self.poller = Poller(self.store.latest_batch, self.poll_interval)
        self.hosts = allowed_hosts(self.host, self.port)

    def ops(self, who: Caller | None = None) -> Tether:
        """The operations façade acting as ``who`` (its journal actor,
        :attr:`tether.identity.Principal.actor`; None: a read)."""
        return Tether(self.store, agents=self.agents, who=who.actor if who else "human:-")
