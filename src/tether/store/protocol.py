"""The one storage protocol every backend implements.

Kept narrow on purpose: a PostgreSQL store implements the same methods and
passes the same conformance suite (``tests/store_conformance.py``).
"""

# long: the one protocol is one class on purpose (DESIGN.md: one storage protocol for every
# backend); a method per line of docstring, split it would scatter the seam it is.

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from tether.core.events import Event
from tether.core.identity import TokenInfo
from tether.core.settings import StoreEvent
from tether.store.layout import RowStream
from tether.store.records import (
    ApprovalRow,
    Batch,
    ChainRow,
    CheckpointChain,
    Command,
    EffectRow,
    Link,
    MessageRow,
    Notification,
    Produced,
    Reached,
    RunRow,
    VersionRow,
    Write,
)
from tether.store.seal_records import LeafSpan, SealCache, SignedCheckpoint


class Store(Protocol):
    """A journal of events plus the projections written with them."""

    url: str

    # -- writing ---------------------------------------------------------
    def commit(self, writes: Sequence[Write]) -> list[BaseException | None]:
        """Commit ``writes`` in one transaction with one batch-chain link.

        A write whose fence no longer matches the run's lease is left out and
        its slot in the result holds a LeaseLost; the others commit.
        """
        ...

    # -- leases ----------------------------------------------------------
    def acquire(self, run: str, owner: str, ttl: float, now: float) -> int | None:
        """Take the run's lease if free or expired; return the new fencing token."""
        ...

    def acquire_many(self, runs: Sequence[str], owner: str, ttl: float, now: float) -> dict[str, int]:
        """Take every free or expired lease among ``runs`` at once; run -> new token."""
        ...

    def renew(self, leases: dict[str, int], owner: str, ttl: float, now: float) -> list[str]:
        """Extend the leases (run -> token) held by ``owner``; return runs that were lost."""
        ...

    def release(self, run: str, owner: str, token: int) -> None:
        """Give a lease back (no-op when it is no longer ours)."""
        ...

    def lease_of(self, run: str) -> tuple[str, int, float] | None:
        """(owner, token, expires) of the run's lease, if any."""
        ...

    def runnable(self, now: float, limit: int, lease_now: float | None = None) -> list[str]:
        """Runs that are running, or sleeping and due by ``now`` (the run clock), and not
        leased by a live owner at ``lease_now`` (the wall clock; default: the store's)."""
        ...

    def held_by_others(self, owner: str, lease_now: float) -> list[str]:
        """Runs running, sleeping or waiting whose lease others than ``owner`` hold at ``lease_now``."""
        ...

    def next_wake(self) -> float | None:
        """Earliest wake time among sleeping runs."""
        ...

    # -- commands --------------------------------------------------------
    def add_command(self, run: str, kind: str, args: dict[str, object], actor: str,
                    now: float, *, key: str | None = None) -> int:
        """Queue an operator's command for the run's owner; its id. With ``key``, once: a
        command queued before with the same key is not queued again (its id is returned),
        applied or not."""
        ...

    def pending_commands(self, runs: Sequence[str] | None = None) -> list[Command]:
        """Commands not yet applied, oldest first (for ``runs``, or all)."""
        ...

    # -- reading ---------------------------------------------------------
    def get_run(self, run: str) -> RunRow | None:
        """The run's projection row."""
        ...

    def find_runs(self, prefix: str) -> list[str]:
        """Runs whose id starts with ``prefix`` (literally, case-insensitively) or whose
        name is ``prefix`` (for short ids on the CLI); an empty prefix finds none."""
        ...

    def list_runs(self, *, status: str | None = None, swarm: str | None = None) -> list[RunRow]:
        """All runs, newest first."""
        ...

    def events(self, run: str, *, after_seq: int = 0, limit: int | None = None) -> list[Event]:
        """The run's events in seq order."""
        ...

    def tail_events(self, run: str, epoch: int, step: int) -> list[Event]:
        """The events of (epoch, step) at the end of the run's chain (the in-flight step)."""
        ...

    def event(self, event_id: str) -> Event | None:
        """One event by id."""
        ...

    def events_of_kinds(self, kinds: Sequence[str], *, run: str | None = None,
                        since: float | None = None) -> list[Event]:
        """Events of ``kinds`` across runs (or of ``run``), in time order, from ``since``
        (seconds since the epoch, by their ``time``). Their ``prev`` is not set: read a
        run's chain with :meth:`events` to verify it."""
        ...

    def latest_event_time(self) -> float | None:
        """The newest event's ``time`` (seconds since the epoch, its run's clock); None for
        a store without events."""
        ...

    def events_in_window(self, since: float | None, until: float | None, *,
                         runs: Sequence[str] | None = None, kinds: Sequence[str] | None = None,
                         limit: int | None = None) -> list[Event]:
        """Events whose ``time`` (the clock of the run that wrote them, seconds since the
        epoch) is in ``[since, until)`` (None: unbounded), of ``runs`` and ``kinds`` when
        given, in time order (then run, seq), at most ``limit``. Indexed by time, so the
        cost follows the window, not the store. ``prev`` is not set."""
        ...

    def latest_batch(self) -> int:
        """The number of the newest commit batch (0: none yet). Every commit of run or
        store-chain events adds one, so a reader that polls it (the web UI's live updates)
        learns that something changed for the price of one indexed read."""
        ...

    def all_run_ids(self) -> list[str]:
        """Every run that has events (for audit)."""
        ...

    def batches(self) -> Iterator[Batch]:
        """The batch chain in order."""
        ...

    def erase_payload(self, event_id: str) -> None:
        """Erase an event's payload (privacy, secrets), keeping its hash so the chain verifies,
        and its seal, so its rows and checkpoint are still checked."""
        ...

    def approval(self, approval_id: str) -> ApprovalRow | None:
        """One approval request by id."""
        ...

    def approvals(self, *, run: str | None = None, status: str | None = None,
                  expired_by: float | None = None) -> list[ApprovalRow]:
        """Approval requests, oldest first; ``expired_by``: only those expiring by then."""
        ...

    def notify(self, notes: Sequence[Notification]) -> None:
        """Queue notifications outside a run's commit (e.g. an approval about to expire)."""
        ...

    def outbox_due(self, now: float, limit: int = 100) -> list[Notification]:
        """Undelivered notifications whose next attempt is due, oldest first."""
        ...

    def outbox_mark(self, note_id: str, *, delivered: float | None, next_at: float | None = None,
                    error: str | None = None) -> None:
        """Record a delivery, or a failed attempt and when to try again."""
        ...

    def effect(self, effect_id: str) -> EffectRow | None:
        """One effect by its intent event id."""
        ...

    def effects(self, *, run: str | None = None, status: str | None = None) -> list[EffectRow]:
        """Effects, oldest first."""
        ...

    def checkpoint_chain(self, run: str, epoch: int, step: int) -> CheckpointChain | None:
        """The keyframe at or before ``step`` in ``epoch`` and the deltas up to ``step``."""
        ...

    def checkpoint_steps(self, run: str, epoch: int) -> list[tuple[int, str, int]]:
        """(step, kind, bytes) of every checkpoint of the run's epoch."""
        ...

    def checkpoint_bodies(self, run: str) -> Iterator[tuple[int, int, str, bytes]]:
        """(epoch, step, kind, body) of every checkpoint of the run (for audit)."""
        ...

    def chunks(self, digests: Sequence[str]) -> dict[str, bytes]:
        """Several chunks in one round trip (restoring a keyframe)."""
        ...

    def chunk(self, digest: str) -> bytes:
        """A content-addressed chunk."""
        ...

    def usage_since(self, *, run: str | None = None, swarm: str | None = None,
                    since: float) -> dict[str, float]:
        """Usage counters summed over minute buckets at or after ``since``."""
        ...

    def swarm_usage(self, swarm: str) -> dict[str, float]:
        """Lifetime usage summed over a swarm's runs."""
        ...

    def get_meta(self, key: str) -> str | None:
        """A value an application keeps in the store (e.g. the demo's clock)."""
        ...

    def set_meta(self, key: str, value: str) -> None:
        """Keep a small application value in the store."""
        ...

    def swarm_budget(self, swarm: str) -> dict[str, float]:
        """The budget shared by a swarm's runs (empty when none is set)."""
        ...

    def swarm_pause_points(self, swarm: str) -> dict[str, Any]:
        """Pause points every run of the swarm has (a run's own override them)."""
        ...

    def swarm_rows(self) -> dict[str, dict[str, Any]]:
        """Every swarm's settings row: name -> ``{"budget": {...}, "pause_points": {...} or
        None}``. Rows are the projection of the store chain's ``swarm.*`` events, which are
        the only way to change them (:meth:`append_store_event`)."""
        ...

    # -- the store chain (operator settings) -----------------------------------
    def append_store_event(self, kind: str, scope: str, payload: Any, *, actor: str, time: str,
                           id: str) -> StoreEvent:
        """Append one event to the store chain, with a batch naming it, atomically; a
        ``swarm.budget`` or ``swarm.pause_points`` event also sets that swarm's row (the
        projection :meth:`swarm_budget` and :meth:`swarm_pause_points` read) in the same
        transaction, and a ``token.*`` event the token's row (:meth:`tokens`)."""
        ...

    # -- API tokens (the projection of the store chain's token.* events) --------
    def tokens(self, *, active: bool = False, limit: int | None = None) -> list[TokenInfo]:
        """Every API token, valid or revoked (only the valid ones with ``active``), oldest
        first, at most ``limit``. Rows change only with their
        ``token.created`` / ``token.revoked`` events (:meth:`append_store_event`, which
        refuses a name a valid token has and a token revoked already)."""
        ...

    def token_by_hash(self, digest: str) -> TokenInfo | None:
        """The token whose secret's SHA-256 is ``digest`` (hex), valid or revoked."""
        ...

    def erase(self, event_id: str, *, reason: str, actor: str, time: str,
              id: str) -> StoreEvent:
        """Erase event ``event_id``'s payload (its hash stays: the chain still verifies) and
        every copy of it in the projections (a message's body, a blackboard value, an effect's
        arguments or result, an approval's arguments, a notification's body), each replaced
        by ``{"erased": EVENT_ID}``, and every checkpoint and keyframe chunk of any run that
        holds one of its values (rewritten by ``tether.core.erasure``), in one transaction
        with the ``payload.erased`` store event recording who, when and why, the rewritten
        checkpoints' old and new hashes, the runs whose live lease it took (``fenced``) and
        other events still holding a value (``also_in``). The replaced bytes must not stay
        readable in the backend's files where it can prevent it. NotFound for an unknown
        event; UsageError for one erased already."""
        ...

    def store_events(self, *, after: int = 0) -> list[StoreEvent]:
        """The store chain after event ``after``, in order (empty for a store without one)."""
        ...

    def chain_rows(self, *, part: tuple[float, float] = (0.0, 1.0)) -> Iterator[ChainRow]:
        """Every run's events as stored, for the audit: run by run (in no set order of
        runs), each run's in seq order, read in bulk; the payload as its stored bytes,
        undecoded (verify hashes those). See :data:`~tether.store.records.ChainRow`.

        ``part=(a, b)``: only the whole runs from the one at fraction ``a`` of all events
        (in this order) up to, not including, the one at fraction ``b``; parts that tile
        0..1, read in one snapshot, yield together exactly what the whole does, in order."""
        ...

    def chain_size(self) -> int:
        """How many events :meth:`chain_rows` yields (the audit splits large stores)."""
        ...

    def snapshot_mark(self) -> str:
        """What the store holds, as far as the audit's chains go, in a few bytes: the newest
        commit batch and the newest checkpoint and chunk rows. Two snapshots with the same
        mark read the same :meth:`chain_rows`, checkpoints and chunks (every commit that
        changes those appends a batch or adds a row), save a payload dropped by
        :meth:`erase_payload`, which journals nothing."""
        ...

    def reader_url(self) -> str | None:
        """The URL another process opens this store by, read-only (:func:`open_store`), or
        None if it cannot (a store only this process sees)."""
        ...

    # -- signed checkpoints (tether audit seal) ----------------------------------
    def leaf_hashes(self) -> list[bytes]:
        """Every event's hash (32 bytes), run and store chain alike, in commit order: the
        order the batch chain names them (batch by batch, entry by entry, seq by seq).
        StoreCorrupt if a batch names an event that is not there."""
        ...

    def leaves_since(self, batch: int) -> LeafSpan:
        """The hashes of the events committed in the batches after number ``batch``, in
        commit order (:meth:`leaf_hashes` is ``leaves_since(0).hashes``), with the hashes
        of that batch and of the last one, read in one snapshot: what an incremental seal
        reads. StoreCorrupt if a batch names an event that is not there."""
        ...

    def event_count(self) -> int:
        """How many events (run and store chains) the store holds: what a seal now would
        cover, read cheaply (a worker asks on its sealing schedule)."""
        ...

    def signed_checkpoints(self, *, after: int = 0) -> list[SignedCheckpoint]:
        """The signed checkpoints after number ``after``, oldest first."""
        ...

    def add_signed_checkpoint(self, size: int, root: str, note: str, proof: Sequence[str],
                              created: float, *, after: int,
                              cache: tuple[int, str, bytes] | None = None) -> SignedCheckpoint:
        """Write the next signed checkpoint; Conflict unless the last one is number
        ``after`` (0: none), so two sealers at once cannot both extend the same one.
        ``cache``: (last batch covered, its hash, frontier) kept beside it for the next
        seal (:class:`SealCache`)."""
        ...

    def seal_cache(self) -> SealCache | None:
        """The cache kept beside the last signed checkpoint; None when there is none (no
        checkpoint, or one written without a cache: before schema 12, or by hand)."""
        ...

    # -- a swarm's world ---------------------------------------------------
    def claim_messages(self, run: str, fence: int, claim: str, now: float,
                       limit: int | None = None) -> list[MessageRow]:
        """Take the run's pending messages for one receive call (idempotent per ``claim``)."""
        ...

    def messages(self, *, sender: str | None = None, recipient: str | None = None,
                 status: str | None = None, ids: Sequence[str] | None = None) -> list[MessageRow]:
        """Messages, oldest first."""
        ...

    def current_versions(self, ns: str, keys: Iterable[str]) -> dict[str, VersionRow]:
        """The newest live version of each key (blackboard key or workspace file)."""
        ...

    def versions(self, *, ns: str | None = None, key: str | None = None, run: str | None = None,
                 events: Sequence[str] | None = None) -> list[VersionRow]:
        """Versions in commit order."""
        ...

    def links_from(self, run: str, epoch: int, from_step: int) -> list[Link]:
        """Provenance links whose source is a step of (run, epoch) at or after ``from_step``."""
        ...

    def links(self) -> list[Link]:
        """Every provenance link (for the audit)."""
        ...

    def downstream(self, run: str, epoch: int, step: int) -> list[Reached]:
        """Every (run, epoch) the work of ``step`` of (run, epoch) on reached, through the
        links, the origin first; each with the first step reached and the link that did."""
        ...

    def produced(self, run: str, epoch: int, from_step: int) -> Produced:
        """What (run, epoch) produced at or after ``from_step``: effects, messages, versions."""
        ...

    # -- maintenance -----------------------------------------------------
    def snapshot(self) -> AbstractContextManager[None]:
        """Reads made inside (on this thread) all see the store as it was on entry, whatever
        other writers commit meanwhile: what an audit of a live store needs, or it reads a
        run's events before a commit and its checkpoints or batches after it."""
        ...

    # -- moving a store (tether store copy; see tether.store.layout) -------------
    def table_columns(self) -> dict[str, tuple[str, ...]]:
        """Every table the store's file or schema holds, as its engine lists them, with
        their columns: what a copy checks against the tables it knows, so a table it does
        not know is refused, never dropped."""
        ...

    def export_rows(self, table: str) -> RowStream:
        """The rows of ``table`` (one of :data:`tether.store.layout.TABLES`, or ``leases``)
        as stored, in its key order, a batch at a time, with their number. Call it and
        iterate inside :meth:`snapshot`, so every table read is of one state of the store."""
        ...

    def import_rows(self, streams: Iterable[RowStream]) -> dict[str, int]:
        """Write the rows of every stream (as :meth:`export_rows` gave them, of any
        backend) into this store in one transaction: all of them, or none on any error or
        a kill. The store must be empty (Conflict, naming where it holds rows, and how to
        choose an empty one): no rows but the meta rows a new store is made with, which
        the copied meta replaces. Rows written per table."""
        ...

    def check_integrity(self) -> list[str]:
        """What the storage engine finds wrong with the store's file (empty when sound):
        damage the hash chains cannot see, such as a garbled index page."""
        ...

    def backup(self, path: str) -> None:
        """Write a consistent online copy of the store to ``path``."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...
