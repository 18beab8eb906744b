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

A monitor that looks at a few kinds of events only says so in ``kinds`` (a set of
event kinds, read once when the run's watch is built; None, the default, is every
kind), and is fed only those: a run's monitors are on the hot path of every event
it journals, and most events mean nothing to most monitors. Declare every kind that
changes the monitor's state, not only those it signals on.

Built-in monitors register themselves by name (:func:`register`); the policy
file's ``[monitors.NAME]`` tables configure them (:mod:`.settings`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
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


FIELDS: Final = tuple(f.name for f in fields(View))


def lazy_view(describe: Callable[..., View], *args: Any) -> View:
    """A :class:`View` that calls ``describe(*args)`` for its fields the first time one
    is read.

    The worker's host gives one with each event it feeds, and most monitors look at
    the event alone: building the record for every event cost more than some
    monitors' own work. What ``describe`` reads (the run's name and goal, its usage,
    budget and state mappings) does not move while the run steps; what does (its
    clock, its progress) the host captures when it makes the view, so the view says
    the same whenever it is first read. Otherwise it is a View: frozen, equal to the
    View it describes, copied by :func:`dataclasses.replace`.
    """
    # Neither LazyView(...) (a Python __init__) nor a closure: each costs about as much
    # as the rest of this.
    view = _new(LazyView)
    _set(view, "_describe", (describe, args))
    return view


_new = object.__new__
_set = object.__setattr__


class LazyView(View):
    """A view made by :func:`lazy_view`."""

    __slots__ = ("_describe",)
    _describe: tuple[Callable[..., View], tuple[Any, ...]] | None

    def __init__(self, **values: Any) -> None:
        # Only dataclasses.replace(view, ...) calls it, with every field.
        _set(self, "_describe", None)
        for k, v in values.items():
            _set(self, k, v)

    def __getattr__(self, name: str) -> Any:
        # Reached only while the fields are unset: a set slot is found before this runs.
        describe = self._describe if name in FIELDS else None
        if describe is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        view = describe[0](*describe[1])
        for f in FIELDS:
            _set(self, f, getattr(view, f))
        _set(self, "_describe", None)
        return getattr(view, name)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, View):
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in FIELDS)

    __hash__ = View.__hash__  # defining __eq__ drops the inherited one


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
    """A base for monitors that never judge proposed calls (the host does not ask them)."""

    name = "quiet"
    kinds: frozenset[str] | None = None
    """The event kinds it is fed (None: every kind); see the module docstring."""

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
