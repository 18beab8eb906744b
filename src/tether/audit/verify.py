"""Walk every run's chain and the store's batch chain; name the first bad event.

What is detected:

* a changed byte in any field of an event: its hash no longer matches (or its
  payload no longer matches the payload hash);
* an inserted, removed or reordered event inside a run: seq gaps or broken links;
* the last events of a run deleted (truncation): a batch names seqs that are gone;
* a whole run deleted: a batch names a run with no events;
* a changed, removed or reordered batch: the batch chain breaks;
* a changed checkpoint body: it no longer matches the hash its step journaled;
* a changed provenance index: the links (which ``tether impact`` and cascade
  rollbacks walk) no longer match the ones the events' causes imply;
* a changed message or version row: its sender, recipient or body, or its
  writer, key or value, no longer match the event that made it;
* a changed, removed or inserted operator setting in the store chain
  (``audit/store_chain.py``).

An erased payload (NULL, kept hash) is allowed: that is what payload hashing is for.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from tether.audit.store_chain import verify_store_chain
from tether.core.canonical import loads
from tether.core.events import (
    BATCH_GENESIS,
    Event,
    batch_hash,
    event_hash,
    genesis,
    payload_digest,
)
from tether.core.settings import STORE_CHAIN
from tether.errors import StoreError
from tether.store.protocol import Store
from tether.store.sqlite_swarm import LINK_KINDS, derive_links

_NULL_DIGEST = payload_digest(None)


@dataclass(slots=True)
class VerifyReport:
    """Outcome of :func:`verify_store`."""

    runs: int = 0
    events: int = 0
    batches: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_bad(self) -> str | None:
        return self.problems[0] if self.problems else None


def verify_store(store: Store, *, progress: Callable[[int, int], None] | None = None) -> VerifyReport:
    """Verify every chain in ``store``. ``progress(done, total)`` is called per run."""
    rep = VerifyReport()
    # The chains say nothing of pages they never read (an index): SQLite checks the file.
    rep.problems.extend(
        f"the store file is damaged: SQLite's check says {line!r}; restore it from a backup "
        "(made with tether store backup), or salvage what SQLite can read into a new file "
        "(sqlite3 FILE .recover) and verify that" for line in store.check_integrity()[:10])
    hashes: dict[str, dict[int, str]] = {}
    facts = _LinkFacts()
    runs = store.all_run_ids()
    for i, run in enumerate(runs):
        try:
            hashes[run] = _verify_run(store, run, rep, facts)
        except (StoreError, ValueError, TypeError) as exc:
            # An event so damaged it cannot be read or hashed: name what we can and go on.
            rep.problems.append(f"run {run}: unreadable event ({exc})")
            hashes[run] = {}
        rep.runs += 1
        if progress:
            progress(i + 1, len(runs))
    hashes[STORE_CHAIN] = verify_store_chain(store, rep)
    covered: dict[str, set[int]] = {}
    prev = BATCH_GENESIS
    for b in store.batches():
        rep.batches += 1
        if b.n != rep.batches:
            rep.problems.append(f"batch {b.n}: expected batch number {rep.batches} "
                                "(batches were removed or renumbered)")
        if b.prev != prev:
            rep.problems.append(f"batch {b.n}: links to {b.prev[:12]}, expected {prev[:12]} "
                                "(a batch was removed, reordered or changed)")
        listed: list[tuple[str, int, str]] = []
        for run, first, last in b.entries:
            chain = hashes.get(run)
            if chain is None:
                rep.problems.append(f"batch {b.n}: names run {run}, which has no events "
                                    "(the run was deleted)")
                continue
            for seq in range(first, last + 1):
                h = chain.get(seq)
                if h is None:
                    rep.problems.append(f"batch {b.n}: names event {run}#{seq}, which is missing "
                                        "(the run was truncated)")
                    break
                listed.append((run, seq, h))
                covered.setdefault(run, set()).add(seq)
        if b.hash != batch_hash(b.prev, listed):
            rep.problems.append(f"batch {b.n}: hash does not match its events "
                                "(an event or the batch was changed)")
        prev = b.hash
    for run, chain in hashes.items():
        missing = set(chain) - covered.get(run, set())
        if missing:
            rep.problems.append(f"run {run}: events {sorted(missing)[:5]} are in no commit batch "
                                "(inserted outside tether)")
    _verify_links(store, facts, rep)
    _verify_world(store, facts, rep)
    return rep


@dataclass(slots=True)
class _LinkFacts:
    """What re-deriving the provenance links needs: where each event is, and the events
    that imply links."""

    at: dict[str, tuple[str, int, int]] = field(default_factory=dict)
    sources: list[Event] = field(default_factory=list)
    runs: set[str] = field(default_factory=set)
    writes: dict[str, Event] = field(default_factory=dict)
    """``message.sent`` and ``blackboard.write`` events, by id: what the rows must say."""
    intents: dict[str, Event] = field(default_factory=dict)
    """``effect.intent`` events, by id: the writers file versions name."""


def _verify_world(store: Store, facts: _LinkFacts, rep: VerifyReport) -> None:
    """Message and version rows must say what the (verified) events that made them say.

    Their statuses change with later events (delivery, retraction, rollback); what a row
    was made with (sender, recipient, body; writer, key, value) does not.
    """
    try:
        messages, versions = store.messages(), store.versions()
    except StoreError as exc:
        rep.problems.append(f"messages or versions cannot be read ({exc})")
        return
    for m in messages:
        e = facts.writes.get(m.id)
        p = e.payload if e is not None and e.kind == "message.sent" else None
        if e is None or (p is not None and (
                m.sender != e.run or (m.epoch, m.step) != (e.epoch, e.step)
                or m.recipient != p.get("to") or m.body != p.get("body")
                or m.topic != p.get("topic"))):
            rep.problems.append(f"message {m.id}: the row does not match its message.sent event "
                                "(its sender, recipient or body was changed outside tether)")
            return
    for v in versions:
        e = facts.writes.get(v.event) if v.ns.startswith("board:") else facts.intents.get(v.event)
        ok = e is not None and v.run == e.run and (v.epoch, v.step) == (e.epoch, e.step)
        if ok and e is not None and e.payload is not None and v.ns.startswith("board:"):
            ok = e.kind == "blackboard.write" and v.key == e.payload.get("key") \
                and v.value == e.payload.get("value")
        if not ok:
            rep.problems.append(f"version {v.version} of {v.key!r} ({v.ns}): the row does not "
                                f"match the event that wrote it ({v.event}): changed outside "
                                "tether")
            return


def _verify_links(store: Store, facts: _LinkFacts, rep: VerifyReport) -> None:
    """The links index must be exactly what the (verified) events imply."""
    want: set[tuple[str, str, int, int, str, str, int, int, str]] = set()
    for e in facts.sources:
        if e.payload is None and e.kind not in LINK_KINDS:
            continue  # an erased rollback or run.started: its link cannot be re-derived
        for kind, src, s_epoch, s_step, s_event in derive_links(e, facts.at.get):
            if kind == "fork" and s_event not in facts.at and src not in facts.runs:
                continue  # forked from a run this store does not hold: the commit skipped it
            want.add((kind, src, s_epoch, s_step, s_event, e.run, e.epoch, e.step, e.id))
    erased = {e.id for e in facts.sources if e.payload is None and e.kind not in LINK_KINDS}
    try:
        have = {(x.kind, x.src_run, x.src_epoch, x.src_step, x.src_event, x.dst_run, x.dst_epoch,
                 x.dst_step, x.dst_event) for x in store.links()}
    except StoreError as exc:
        rep.problems.append(f"provenance links cannot be read ({exc})")
        return
    have = {x for x in have if x[8] not in erased}
    for what, diff in (("missing", want - have), ("not implied by any event", have - want)):
        if diff:
            x = sorted(diff)[0]
            rep.problems.append(f"provenance index: {len(diff)} link(s) {what}, e.g. {x[0]} from "
                                f"run {x[1]} step {x[3]} to run {x[5]} step {x[7]} (event {x[8]}); "
                                "the links table was changed outside tether, so `tether impact` "
                                "cannot be trusted until it is restored from a backup")


def _verify_checkpoints(store: Store, run: str, recorded: dict[tuple[int, int], str | None],
                        rep: VerifyReport) -> None:
    """Each stored checkpoint body must match the hash its step's event journaled."""
    for epoch, step, kind, body in store.checkpoint_bodies(run):
        if (epoch, step) in recorded and recorded[(epoch, step)] is None:
            continue
        want = recorded.get((epoch, step))
        if want is None:
            rep.problems.append(f"run {run} checkpoint epoch {epoch} step {step}: no event "
                                "journals it (a checkpoint was added outside tether)")
            return
        if hashlib.sha256(body).hexdigest() != want:
            rep.problems.append(f"run {run} checkpoint epoch {epoch} step {step}: body does not "
                                "match the hash journaled for it (the checkpoint was changed)")
            return
        if kind == "key":
            _verify_chunks(store, run, epoch, step, body, rep)


def _verify_chunks(store: Store, run: str, epoch: int, step: int, body: bytes,
                   rep: VerifyReport) -> None:
    """A keyframe names its chunks by content hash: each must still hash to its name."""
    try:
        refs = loads(body)
        names = sorted({h for r in refs.values() for h in ([r["c"]] if "c" in r else r.get("l", []))})
        found = store.chunks(names) if names else {}
    except (StoreError, ValueError, KeyError, TypeError, AttributeError) as exc:
        rep.problems.append(f"run {run} checkpoint epoch {epoch} step {step}: its chunks cannot "
                            f"be read ({exc})")
        return
    for name in names:
        if hashlib.sha256(found[name]).hexdigest() != name:
            rep.problems.append(f"run {run} checkpoint epoch {epoch} step {step}: chunk {name[:12]} "
                                "does not match its hash (the chunk was changed)")
            return


def _verify_run(store: Store, run: str, rep: VerifyReport, facts: _LinkFacts) -> dict[int, str]:
    chain: dict[int, str] = {}
    ckpts: dict[tuple[int, int], str | None] = {}
    prev = genesis(run)
    expected = 1
    bad = False
    for e in store.events(run):
        rep.events += 1
        chain[e.seq] = e.hash
        if bad:
            continue
        where = f"run {run} event #{e.seq} ({e.kind}, id {e.id})"
        if e.seq != expected:
            rep.problems.append(f"{where}: seq {e.seq} follows #{expected - 1} "
                                "(events were removed or inserted)")
            bad = True
            continue
        expected += 1
        try:
            h = event_hash(dataclasses.replace(e, prev=prev, hash=""))
        except TypeError as exc:  # e.g. bytes that are not UTF-8 any more
            rep.problems.append(f"{where}: a field is no longer valid text ({exc})")
            bad = True
            continue
        if h != e.hash:
            rep.problems.append(f"{where}: hash mismatch (a field or the payload of this event, "
                                "or its predecessor, was changed)")
            bad = True
            continue
        erased = e.payload is None and e.payload_hash != _NULL_DIGEST
        if not erased and payload_digest(e.payload) != e.payload_hash:
            rep.problems.append(f"{where}: payload does not match its hash (payload changed)")
            bad = True
            continue
        prev = e.hash
        facts.at[e.id] = (e.run, e.epoch, e.step)
        facts.runs.add(e.run)
        if e.kind in ("message.sent", "blackboard.write"):
            facts.writes[e.id] = e
        elif e.kind == "effect.intent":
            facts.intents[e.id] = e
        if (e.causes and e.kind in LINK_KINDS) or e.kind in ("rollback", "run.started"):
            facts.sources.append(e)
        if e.kind in ("checkpoint", "step.finished"):
            if erased:  # its checkpoint hash was erased with it: nothing to compare against
                ckpts[(e.epoch, e.step)] = None
            elif isinstance(e.payload, dict):
                info = e.payload if e.kind == "checkpoint" else e.payload.get("checkpoint")
                if isinstance(info, dict) and "hash" in info:
                    ckpts[(e.epoch, e.step)] = info["hash"]
    if not bad:
        _verify_checkpoints(store, run, ckpts, rep)
    return chain
