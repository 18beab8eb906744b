"""Records the store reads and writes: frozen, typed, one shape for every backend."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

# The vocabularies live in core (one definition for every layer); re-exported here for
# the store's callers.
from tether.core.budget import USAGE_KEYS as USAGE_KEYS
from tether.core.checkpoint import Checkpoint
from tether.core.events import Event
from tether.core.seals import Seal
from tether.core.statuses import ACTIVE_STATUSES as ACTIVE_STATUSES
from tether.core.statuses import APPROVAL_STATUSES as APPROVAL_STATUSES
from tether.core.statuses import EFFECT_STATUSES as EFFECT_STATUSES
from tether.core.statuses import RUN_STATUSES as RUN_STATUSES
from tether.core.statuses import TERMINAL_STATUSES as TERMINAL_STATUSES


@dataclass(slots=True)
class RunRow:
    """The runs projection: one row per run, rewritten with each of its commits.

    Not frozen: the run's owner updates its copy in place on the hot path (a
    ``dataclasses.replace`` per change cost more than the rest of a step's
    bookkeeping) and hands the store a snapshot at each commit.
    """

    id: str
    name: str
    agent: str
    """Agent reference (``module:attr``) or a built-in name."""
    swarm: str | None
    goal: str
    status: str
    epoch: int
    step: int
    """Last completed step."""
    seq: int
    """Seq of the run's last event."""
    head: str
    """Hash of the run's last event."""
    spec: dict[str, Any]
    """How to rebuild the agent and its settings (agent ref, workspace, options)."""
    budget: dict[str, float]
    """Caps and windows, e.g. ``{"steps": 100, "cost_usd_per_day": 5}``."""
    usage: dict[str, float]
    """Lifetime counters: steps, input_tokens, output_tokens, cost_usd, tool_calls, wall_seconds."""
    wake_at: float | None
    created: float
    updated: float
    reason: str = ""
    """Why the run is paused, failed or stopped."""
    parent: str | None = None


@dataclass(frozen=True, slots=True)
class EffectRow:
    """The effects projection: one row per effect, keyed by its intent event id."""

    id: str
    run: str
    epoch: int
    step: int
    idx: int
    """Position of the call within its step."""
    tool: str
    effect: str
    idempotent: bool
    key: str
    """Idempotency key given to the tool."""
    status: str
    arguments: dict[str, Any]
    result: Any = None
    undo: dict[str, Any] | None = None
    updated: float = 0.0


@dataclass(frozen=True, slots=True)
class ApprovalRow:
    """A durable request for a human decision on one proposed action."""

    id: str
    """Id of the ``approval.requested`` event."""
    run: str
    epoch: int
    step: int
    idx: int
    """The call's index within its step."""
    tool: str
    effect: str
    arguments: dict[str, Any]
    rule: str | None
    """Policy rule that asked (None: the default for irreversible effects)."""
    reason: str
    policy_hash: str
    approvers: tuple[str, ...]
    """Who may decide (empty: anyone but the run itself)."""
    requested_at: float
    expires_at: float | None
    on_expiry: str
    """``deny`` (default), ``allow`` or ``escalate``."""
    status: str = "pending"
    decided_by: str | None = None
    decided_at: float | None = None
    note: str | None = None
    edited_arguments: dict[str, Any] | None = None
    always: bool = False
    """Approved with "always allow this tool for this run"."""

    def to_json(self) -> dict[str, Any]:
        """The public JSON form (``tether approvals --json``, notification payloads)."""
        return {"id": self.id, "run": self.run, "step": self.step, "tool": self.tool,
                "effect": self.effect, "arguments": self.arguments, "status": self.status,
                "rule": self.rule, "reason": self.reason, "approvers": list(self.approvers),
                "requested_at": self.requested_at, "expires_at": self.expires_at,
                "on_expiry": self.on_expiry, "decided_by": self.decided_by,
                "decided_at": self.decided_at, "note": self.note,
                "edited_arguments": self.edited_arguments, "always": self.always}


@dataclass(frozen=True, slots=True)
class Notification:
    """A message for operators, queued in the same transaction as the event behind it."""

    id: str
    """Unique and stable: receivers drop duplicates by it (the event's id)."""
    kind: str
    """``approval.requested``, ``approval.expiring``, ``run.paused``, ``run.stopped``,
    ``budget.exceeded``."""
    body: dict[str, Any]
    created: float
    attempts: int = 0
    next_at: float = 0.0
    delivered: float | None = None
    last_error: str | None = None


MESSAGE_STATUSES = ("pending", "delivered", "retracted", "held")


@dataclass(frozen=True, slots=True)
class MessageRow:
    """One message between runs; its id is the sender's ``message.sent`` event id."""

    id: str
    swarm: str | None
    sender: str
    epoch: int
    step: int
    recipient: str
    topic: str | None
    body: Any
    status: str = "pending"
    """``pending`` (in the inbox), ``delivered`` (a ``message.received`` event cites it),
    ``retracted`` (the sender was rolled back before delivery) or ``held`` (the sender is
    quarantined)."""
    created: float = 0.0
    claim: str | None = None
    """Which receive call (``epoch:step:index`` of the recipient) took it."""
    received: float | None = None
    suspect: bool = False
    """Its sender was under a monitor's verdict (``pause`` or stronger) while it was
    undelivered and nobody acked the alert: its recipient is told."""


VERSION_STATUSES = ("live", "reverted", "undone")


@dataclass(frozen=True, slots=True)
class VersionRow:
    """One attributed write to a named thing: a blackboard key or a workspace file.

    ``ns`` is ``board:SWARM`` or ``file:WORKSPACE``; the newest ``live`` version of
    a key is its current one. ``version`` is numbered per key at commit.
    """

    ns: str
    key: str
    event: str
    """The writing event: ``blackboard.write`` or the file effect's intent."""
    run: str
    epoch: int
    step: int
    value: Any = None
    """The blackboard value (None for files)."""
    hash: str | None = None
    """The file's SHA-256 after the write (None when deleted; None for the blackboard)."""
    version: int = 0
    status: str = "live"
    suspect: bool = False
    """The writer is quarantined, or was under a monitor's verdict (``pause`` or stronger)
    nobody acked yet: readers are told."""
    created: float = 0.0


@dataclass(frozen=True, slots=True)
class Transition:
    """A conditional change of message or version rows, applied with a run's write.

    Every row named must be in one of ``only_from`` (if given), or the whole write
    is refused with Conflict and nothing of it is applied.
    """

    table: str
    """``messages`` (ids: message ids) or ``versions`` (ids: writing event ids)."""
    ids: tuple[str, ...]
    column: str
    """``status`` or ``suspect`` (either table)."""
    value: Any
    only_from: tuple[Any, ...] | None = None


@dataclass(frozen=True, slots=True)
class Link:
    """A cause that crosses runs (or epochs): the source step's work flowed into the target."""

    kind: str
    """``message``, ``board``, ``file``, ``epoch`` (a rollback) or ``fork``."""
    src_run: str
    src_epoch: int
    src_step: int
    src_event: str
    dst_run: str
    dst_epoch: int
    dst_step: int
    dst_event: str


@dataclass(frozen=True, slots=True)
class Reached:
    """One (run, epoch) downstream of a step: from which step on, and by which link first."""

    run: str
    epoch: int
    first_step: int
    via: Link | None
    """The link that reached it at ``first_step`` (None for the origin)."""


@dataclass(frozen=True, slots=True)
class EffectRef:
    """An effect as an impact lists it: no arguments or results."""

    id: str
    step: int
    tool: str
    effect: str
    status: str


@dataclass(frozen=True, slots=True)
class MessageRef:
    """A message as an impact lists it: no body."""

    id: str
    step: int
    recipient: str
    status: str


@dataclass(frozen=True, slots=True)
class VersionRef:
    """A blackboard or file version as an impact lists it: no value."""

    ns: str
    key: str
    version: int
    step: int
    status: str
    event: str
    suspect: bool


@dataclass(slots=True)
class Produced:
    """What a run's steps from some step on produced, by id and status (light to read)."""

    effects: list[EffectRef] = field(default_factory=list)
    messages: list[MessageRef] = field(default_factory=list)
    versions: list[VersionRef] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Command:
    """An operator's request, written by any process, applied by the run's owner."""

    id: int
    run: str
    kind: str
    args: dict[str, Any]
    actor: str
    created: float
    applied: float | None = None


@dataclass(frozen=True, slots=True)
class UsageDelta:
    """Counters to add to the run's usage for the minute ``bucket`` (rolling windows)."""

    bucket: int
    counts: dict[str, float]


@dataclass(frozen=True, slots=True)
class Write:
    """Everything one run commits atomically: events and the projections they imply.

    ``fence`` is the lease token the writer holds; the store refuses the write
    (LeaseLost) when another process has taken the run since. ``fence=None``
    creates a new run and fails if the id exists.
    """

    run: str
    fence: int | None
    events: tuple[Event, ...]
    run_row: RunRow | None = None
    effects: tuple[EffectRow, ...] = ()
    checkpoint: tuple[int, Checkpoint] | None = None
    """(epoch, checkpoint)."""
    usage: UsageDelta | None = None
    commands_applied: tuple[int, ...] = ()
    swarm: str | None = None
    run_changes: tuple[str, ...] | None = None
    """Fields of ``run_row`` changed since the last write (None: write the whole row)."""
    approvals: tuple[ApprovalRow, ...] = ()
    notifications: tuple[Notification, ...] = ()
    messages: tuple[MessageRow, ...] = ()
    """Messages sent (inserted as ``pending``)."""
    versions: tuple[VersionRow, ...] = ()
    """Blackboard and file writes (numbered per key at commit)."""
    transitions: tuple[Transition, ...] = ()
    chunks: tuple[tuple[str, bytes], ...] = ()
    """Content-addressed blobs (SHA-256 hex, bytes) to keep with these events, e.g. a
    large before-image an ``effect.intent`` names; stored once, like checkpoint chunks."""


@dataclass(frozen=True, slots=True)
class Batch:
    """One link of the store-wide chain of commit batches."""

    n: int
    prev: str
    hash: str
    entries: tuple[tuple[str, int, int], ...]
    """(run, first seq, last seq) of each run's events in the batch; the store chain of
    operator settings is named ``@store`` (:data:`tether.core.settings.STORE_CHAIN`) here."""


@dataclass(slots=True)
class CheckpointChain:
    """What restoring a step needs: its keyframe and the deltas after it, in order."""

    key_step: int
    key_body: bytes
    deltas: list[bytes] = field(default_factory=list)


def transition(table: str, ids: Iterable[str], column: str, value: Any,
               only_from: tuple[Any, ...] | None = None) -> Transition:
    """A :class:`Transition` (sorted ids, so equal plans make equal writes)."""
    return Transition(table, tuple(sorted(set(ids))), column, value, only_from)


ChainRow = tuple[str, int, str, int, int, str, str, str, "str | bytes", "bytes | None",
                 "str | None", str, Seal, "str | None"]
"""One event as the audit reads it in bulk (:meth:`Store.chain_rows`), a plain tuple
because verify reads every event of a store: ``(run, seq, id, epoch, step, kind, time,
actor, causes, payload, payload_hash, hash, seal, damage)`` with

* ``causes``: the stored JSON list of cause ids, not decoded (it may have been changed);
* ``payload``: the stored canonical JSON of the payload (the bytes its hash was taken
  of), None once erased;
* ``payload_hash``: hex, or None when the store keeps none apart from the payload (its
  hash is then the SHA-256 of ``payload``, of ``b""`` if that is None);
* ``hash``: hex; ``seal``: decoded;
* ``damage``: None, or what could not be decoded (e.g. a stored time that is not a time),
  the other fields then holding what could.
"""
