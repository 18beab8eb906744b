"""The monitor contract: a pure object fed a run's events, one at a time, in order.

A monitor never does I/O and never reads a clock: it gets each :class:`Event` of
the run it watches with a :class:`View` (a read-only snapshot of what it may look
at) and returns the :class:`Signal` objects it sees in it, usually none. It may
keep state between events (a streak, a rolling window), derived only from what it
was fed, so feeding the same events again gives the same signals: a worker that
takes a run over rebuilds its monitors by feeding them the run's recent events,
and ``tether analyze`` feeds them a recorded transcript.

A monitor can also be asked about a call before it runs (:meth:`Monitor.propose`),
which is how a loop detector refuses the fourth identical call instead of
reporting it afterwards.

Built-in monitors register themselves by name (:func:`register`); the policy
file's ``[monitors.NAME]`` tables configure them (:mod:`.settings`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, runtime_checkable

from tether.core.events import Event
from tether.core.monitors.verdicts import DEFAULT_STAGES, Level, Signal


@dataclass(frozen=True, slots=True)
class View:
    """What a monitor may look at besides the event: the run as it stands.

    Read-only by contract (the mappings are the runtime's own, not copies, so that a
    view costs nothing to build): a monitor that changes one breaks replay.
    """

    run: str
    agent: str
    swarm: str | None
    goal: str
    epoch: int
    step: int
    """The step the event belongs to."""
    now: float
    """The run's clock (seconds since the epoch) when the event was made."""
    usage: Mapping[str, float] = field(default_factory=dict)
    """Lifetime usage so far (``steps``, ``input_tokens``, ``cost_usd``...)."""
    budget: Mapping[str, float] = field(default_factory=dict)
    state: Mapping[str, Any] | None = None
    """The run's state at the last step boundary (None when not known, e.g. offline)."""
    progress: float | None = None
    """The last value the step declared with ``ctx.progress(value)``, if any."""


@dataclass(frozen=True, slots=True)
class Proposal:
    """A call about to run: what a monitor may refuse before anything happens."""

    i: int
    """The call's index in its step."""
    tool: str
    effect: str
    """``read``, ``reversible`` or ``irreversible``."""
    arguments: Any
    """The JSON form of the arguments."""
    fp: str
    """The call's fingerprint (tool and canonical arguments)."""


@runtime_checkable
class Monitor(Protocol):
    """What the host calls; see the module docstring."""

    name: str

    def observe(self, event: Event, view: View) -> Iterable[Signal]:
        """Signals seen in ``event`` (the run's next event, in order)."""
        ...

    def propose(self, call: Proposal, view: View) -> Iterable[Signal]:
        """Signals about ``call`` before it runs; one at level ``block`` (or a stage that
        gives it) refuses it."""
        ...


class Quiet:
    """A base for monitors that never judge proposed calls."""

    name = "quiet"

    def propose(self, call: Proposal, view: View) -> Iterable[Signal]:
        return ()


@dataclass(frozen=True, slots=True)
class MonitorKind:
    """A monitor that can be named in a policy file."""

    name: str
    make: Callable[[Mapping[str, Any]], Monitor]
    """Build one for one run from its parameters (defaults merged with the policy's)."""
    defaults: Mapping[str, Any]
    """Every parameter it takes, with its default: anything else in the policy is refused."""
    stages: tuple[Level, ...] = DEFAULT_STAGES
    enabled: bool = True
    """On with no configuration (the cheap built-ins are)."""
    doc: str = ""
    window: int = 64
    """How many of a run's latest events rebuild it when a worker takes the run over."""
    check: Callable[[Mapping[str, Any], str], None] | None = None
    """Checks one policy table's parameters beyond their types (``check(params, path)``),
    raising ValueError that starts with the key path: e.g. compiles the expressions."""


KINDS: Final[dict[str, MonitorKind]] = {}
"""The registry, by name."""


def register(kind: MonitorKind) -> MonitorKind:
    """Make a monitor nameable in policy files; a second registration of a name replaces
    the first (a user's monitor may stand in for a built-in)."""
    KINDS[kind.name] = kind
    return kind
