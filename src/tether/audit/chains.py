"""Step 1 of the audit: every run's hash chain, walked in one pass over the stored rows.

Verify reads every event of the store, so this is its hot loop. The rows come in
bulk as plain tuples (:meth:`tether.store.protocol.Store.chain_rows`) and each is
hashed as stored: the payload by its stored bytes, which are the bytes its hash
was taken of, instead of decoding it and encoding it again. Only an event that a
later check looks at (a row it made, a link, a checkpoint, a status it changes)
becomes an :class:`~tether.core.events.Event`, and only a payload that one of
those checks reads is decoded (:data:`PAYLOAD_READ`); the others keep ``None``
there, which no check reads for their kinds (``tests/test_audit_bulk.py`` holds
every check to that).

The first bad event of a run is named and the rest of that run is not checked:
its events are marked unchecked, so the rows, links and checkpoints they made are
not blamed for it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields, replace
from itertools import groupby
from operator import attrgetter, itemgetter
from typing import Any

from tether.audit.projections import FoldFacts
from tether.audit.report import VerifyReport
from tether.audit.rows import ROW_KINDS, RowFacts, expected_seal
from tether.core.canonical import loads
from tether.core.events import Event, fields_hash, genesis, make_event, payload_digest
from tether.core.fold import READS_PAYLOAD, STATUS_KINDS, STATUS_READS_PAYLOAD, RunFold, moves
from tether.core.links import LINK_KINDS
from tether.core.seals import SEALED_KINDS
from tether.errors import StoreError
from tether.store.protocol import Store
from tether.store.records import ChainRow

PAYLOAD_READ = READS_PAYLOAD | STATUS_READS_PAYLOAD | {"rollback", "run.started",
                                                       "effect.resolved"}
"""Kinds whose payload a check reads: the fold's, the effect and approval statuses', the
lineage links' (``derive_links``), and a resolution's (``RowFacts.note``). Any event
without a seal has its payload read too (its seal is derived from it)."""

_NULL_DIGEST = payload_digest(None)
_CHECKPOINTS = ("checkpoint", "step.finished")
_LINEAGE = ("rollback", "run.started")
_START = RunFold()


@dataclass(slots=True)
class ChainFacts:
    """What the later checks need from the verified events: where each event is, the
    events that imply links, and what rows must say."""

    at: dict[str, tuple[str, int, int]] = field(default_factory=dict)
    sources: list[Event] = field(default_factory=list)
    runs: set[str] = field(default_factory=set)
    rows: RowFacts = field(default_factory=RowFacts)
    """What message, version and effect rows must say; which events were not verified."""
    folds: FoldFacts = field(default_factory=FoldFacts)
    """What run, effect and approval rows must say (the folds of the events)."""

    def merge(self, later: ChainFacts) -> None:
        """Take in the facts of runs walked apart, after these: what walking them here
        next would have added (a later run's fact replaces an earlier one's, as it
        would)."""
        self.at.update(later.at)
        self.sources.extend(later.sources)
        self.runs |= later.runs
        self.rows.merge(later.rows)
        self.folds.merge(later.folds)


@dataclass(slots=True)
class ChainShare:
    """What walking some of the runs found, on its own (:mod:`tether.audit.share`), to be
    taken into the whole after the runs before it (:meth:`ChainFacts.merge`)."""

    hashes: dict[str, dict[int, str]]
    found: dict[str, list[str]]
    facts: ChainFacts
    runs: int
    events: int

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled for the trip from the helper with its events as plain tuples, each once:
        frozen events unpickle at a third of the speed, in the process that waits."""
        f = self.facts
        index: dict[int, int] = {}
        events: list[tuple[Any, ...]] = []

        def ref(e: Event) -> int:
            i = index.get(id(e))
            if i is None:
                i = index[id(e)] = len(events)
                events.append(_EVENT_FIELDS(e))
            return i

        sources = [ref(e) for e in f.sources]
        made = {k: (ref(e), seal) for k, (e, seal) in f.rows.made.items()}
        facts = (f.at, sources, f.runs, replace(f.rows, made={}), f.folds, made)
        return (_unshare, (self.hashes, self.found, self.runs, self.events, events, facts))


_EVENT_FIELDS = attrgetter(*(x.name for x in fields(Event)))


def _unshare(hashes: dict[str, dict[int, str]], found: dict[str, list[str]], runs: int,
             events: int, fields_of: list[tuple[Any, ...]], facts: tuple[Any, ...]
             ) -> ChainShare:
    evs = [make_event(*x) for x in fields_of]
    at, sources, names, rows, folds, made = facts
    rows.made = {k: (evs[i], seal) for k, (i, seal) in made.items()}
    return ChainShare(hashes, found, ChainFacts(at, [evs[i] for i in sources], names, rows,
                                                folds), runs, events)


def walk_chains(store: Store, rep: VerifyReport, facts: ChainFacts,
                progress: Callable[[int, int], None] | None, *, split: float = 1.0,
                later: Callable[[], ChainShare | None] | None = None
                ) -> dict[str, dict[int, str]]:
    """Verify each run's chain and checkpoints; return each run's event hashes by seq.
    Problems are reported run by run in the order of the runs' ids.

    ``split`` < 1: the runs past that fraction of the events (``Store.chain_rows``' part)
    come from ``later()``, walked elsewhere on the same snapshot, if it has them (not
    None); otherwise they are walked here after the others, as they would be unsplit."""
    hashes: dict[str, dict[int, str]] = {}
    found: dict[str, list[str]] = {}
    total = len(store.all_run_ids()) if progress else 0
    parts = [(0.0, split), (split, 1.0)] if split < 1.0 else [(0.0, 1.0)]
    reading = [""]  # the run being read
    done = (lambda: progress(rep.runs, total)) if progress else None
    try:
        for part in parts:
            got = later() if later is not None and part[0] > 0.0 else None
            if got is None:
                _walk_runs(store, part, rep, facts, hashes, found, reading, done)
                continue
            _take(got, hashes, found, facts, rep)
            if done:
                done()
    except StoreError as exc:
        # Some pages cannot be read: the run being read and those not reached are unread.
        if reading[0]:
            _unreadable(reading[0], f"unreadable event ({exc})", hashes, found, facts)
        for other in _run_ids(store):
            if other not in hashes:
                _unreadable(other, f"its events cannot be read ({exc})", hashes, found, facts)
    for name in sorted(found):
        rep.problems.extend(found[name])
    return hashes


def walk_share(store: Store, part: tuple[float, float], rewritten: dict[
        tuple[str, int, int], list[tuple[str, str]]]) -> ChainShare:
    """Walk the runs of ``part`` alone, for :func:`walk_chains` elsewhere (``rewritten``:
    the checkpoints the store chain's erasures rewrote). A StoreError goes to the caller:
    the part is then walked there, where it names the runs not reached."""
    rep = VerifyReport(rewritten=rewritten)
    facts = ChainFacts()
    hashes: dict[str, dict[int, str]] = {}
    found: dict[str, list[str]] = {}
    _walk_runs(store, part, rep, facts, hashes, found, [""], None)
    return ChainShare(hashes, found, facts, rep.runs, rep.events)


def _walk_runs(store: Store, part: tuple[float, float], rep: VerifyReport, facts: ChainFacts,
               hashes: dict[str, dict[int, str]], found: dict[str, list[str]],
               reading: list[str], done: Callable[[], None] | None) -> None:
    """Walk the runs of ``part`` into ``hashes`` and ``found``; ``reading[0]`` is the run
    being read ("" between runs), ``done()`` is called after each."""
    for run, rows in groupby(store.chain_rows(part=part), itemgetter(0)):
        reading[0] = run
        found[run] = []
        try:
            hashes[run] = _walk_run(store, run, rows, rep, facts, found[run])
        except (ValueError, TypeError) as exc:
            # Noted as verified, yet not what any tether wrote (e.g. a payload forged to
            # match its hash): name what we can and go on.
            _unreadable(run, f"unreadable event ({exc})", hashes, found, facts)
        reading[0] = ""
        rep.runs += 1
        if done:
            done()


def _take(got: ChainShare, hashes: dict[str, dict[int, str]], found: dict[str, list[str]],
          facts: ChainFacts, rep: VerifyReport) -> None:
    """Take in the runs walked elsewhere, as if walked here next."""
    hashes.update(got.hashes)
    found.update(got.found)
    facts.merge(got.facts)
    rep.runs += got.runs
    rep.events += got.events
    rep.helped += got.runs


def _run_ids(store: Store) -> list[str]:
    try:
        return store.all_run_ids()
    except StoreError:
        return []


def _unreadable(run: str, problem: str, hashes: dict[str, dict[int, str]],
                found: dict[str, list[str]], facts: ChainFacts) -> None:
    found.setdefault(run, []).append(f"run {run}: {problem}")
    hashes[run] = {}
    facts.rows.unreadable.add(run)
    facts.rows.damaged.add(run)


def _walk_run(store: Store, run: str, rows: Iterable[ChainRow], rep: VerifyReport,
              facts: ChainFacts, problems: list[str]) -> dict[int, str]:
    chain: dict[int, str] = {}
    ckpts: dict[tuple[int, int], str | None] = {}
    prev, expected, bad = genesis(run), 1, False
    unchecked, at = facts.rows.unchecked, facts.at
    for row in rows:
        rep.events += 1
        seq, eid, h = row[1], row[2], row[11]
        chain[seq] = h
        if bad:  # this and what follows cannot be trusted: their rows are not judged
            unchecked.add(eid)
            continue
        problem, causes, ph = _problem(row, prev, expected)
        if problem:
            problems.append(f"run {run} event #{seq} ({row[5]}, id {eid}): {problem}")
            bad = True
            unchecked.add(eid)
            facts.rows.damaged.add(run)
            continue
        at[eid] = (run, row[3], row[4])
        _note(facts, row, causes, ph, prev, ckpts)
        expected += 1
        prev = h
    if expected > 1:  # some event verified
        facts.runs.add(run)
        facts.folds.runs.setdefault(run, _START)
        facts.folds.heads[run] = (expected - 1, prev)
    if not bad:
        _verify_checkpoints(store, run, _after_erasures(run, ckpts, rep.rewritten), problems)
    return chain


def _problem(row: ChainRow, prev: str, expected: int) -> tuple[str | None, list[Any], str]:
    """What is wrong with ``row`` as the next event of its chain (or None), with its causes
    and payload hash."""
    seq, payload, ph = row[1], row[9], row[10]
    if row[13] is not None:
        return f"{row[13]}; the event was changed outside tether", [], ""
    if seq != expected:
        return f"seq {seq} follows #{expected - 1} (events were removed or inserted)", [], ""
    try:
        causes = loads(row[8])
    except ValueError as exc:
        return (f"its causes cannot be decoded ({exc}); the event was changed outside tether",
                [], "")
    kept = ph is not None
    if ph is None:  # the store keeps no hash apart from the payload: its bytes' hash is it
        ph = hashlib.sha256(b"" if payload is None else payload).hexdigest()
    try:
        h = fields_hash(row[2], row[0], seq, row[3], row[4], row[5], row[6], row[7], causes,
                        ph, prev, row[12])
    except TypeError as exc:  # e.g. bytes that are not UTF-8 any more
        return f"a field is no longer valid text ({exc})", causes, ph
    if h != row[11]:
        return ("hash mismatch (a field or the payload of this event, or its predecessor, "
                "was changed)"), causes, ph
    if kept and payload is not None and hashlib.sha256(payload).hexdigest() != ph \
            and not _same_value(payload, ph):
        return "payload does not match its hash (payload changed)", causes, ph
    return None, causes, ph


def _same_value(payload: bytes, ph: str) -> bool:
    """A payload kept beside its own hash (as release 0.1.0 wrote them) matches it if its
    value, encoded canonically, does, even when its bytes are not canonical."""
    try:
        return payload_digest(loads(payload)) == ph
    except ValueError:
        return False


def _note(facts: ChainFacts, row: ChainRow, causes: list[Any], ph: str, prev: str,
          ckpts: dict[tuple[int, int], str | None]) -> None:
    """Note what a verified event implies: links, rows, statuses, its step's checkpoint."""
    run, kind, seal, payload = row[0], row[5], row[12], row[9]
    folds = facts.folds
    want_rows = kind in ROW_KINDS
    want_fold = kind in STATUS_KINDS or moves(folds.runs.get(run, _START), kind)
    want_link = (causes and kind in LINK_KINDS) or kind in _LINEAGE
    want_ckpt = kind in _CHECKPOINTS
    if not (want_rows or want_fold or want_link or want_ckpt):
        return
    erased = payload is None and ph != _NULL_DIGEST
    value = loads(payload) if payload is not None and (
        kind in PAYLOAD_READ or (not seal and kind in SEALED_KINDS)) else None
    e = make_event(row[2], run, row[1], row[3], row[4], kind, row[6], row[7], tuple(causes),
                   value, ph, prev, row[11], seal)
    if want_rows:
        facts.rows.note(e, erased)
    if want_fold:
        folds.note(e, erased)
    if want_link:
        facts.sources.append(e)
    if want_ckpt:
        expect = expected_seal(e, erased)
        if expect is None:  # erased before seals existed: nothing left to compare against
            ckpts.setdefault((e.epoch, e.step), None)
        elif "checkpoint" in expect:
            ckpts[(e.epoch, e.step)] = expect["checkpoint"]


def _after_erasures(run: str, recorded: dict[tuple[int, int], str | None],
                    rewritten: dict[tuple[str, int, int], list[tuple[str, str]]]
                    ) -> dict[tuple[int, int], str | None]:
    """The hash each checkpoint must have now: the one its step journaled, carried
    through the erasures that rewrote it (each names the hash it found and the one it
    left). An erasure's old hash that is not the journaled one changes nothing, so a
    rewrite the chain does not record is still named."""
    out = dict(recorded)
    for (r, epoch, step), steps in rewritten.items():
        if r != run:
            continue
        h = out.get((epoch, step))
        for was, now in steps:
            if h == was:
                h = now
        if h is not None:
            out[(epoch, step)] = h
    return out


def _verify_checkpoints(store: Store, run: str, recorded: dict[tuple[int, int], str | None],
                        problems: list[str]) -> None:
    """Each stored checkpoint body must match the hash its step's event journaled."""
    for epoch, step, kind, body in store.checkpoint_bodies(run):
        if (epoch, step) in recorded and recorded[(epoch, step)] is None:
            continue
        want = recorded.get((epoch, step))
        if want is None:
            problems.append(f"run {run} checkpoint epoch {epoch} step {step}: no event "
                            "journals it (a checkpoint was added outside tether)")
            return
        if hashlib.sha256(body).hexdigest() != want:
            problems.append(f"run {run} checkpoint epoch {epoch} step {step}: body does not "
                            "match the hash journaled for it (the checkpoint was changed)")
            return
        if kind == "key":
            _verify_chunks(store, run, epoch, step, body, problems)


def _verify_chunks(store: Store, run: str, epoch: int, step: int, body: bytes,
                   problems: list[str]) -> None:
    """A keyframe names its chunks by content hash: each must still hash to its name."""
    try:
        refs = loads(body)
        names = sorted({h for r in refs.values() for h in ([r["c"]] if "c" in r else r.get("l", []))})
        found = store.chunks(names) if names else {}
    except (StoreError, ValueError, KeyError, TypeError, AttributeError) as exc:
        problems.append(f"run {run} checkpoint epoch {epoch} step {step}: its chunks cannot "
                        f"be read ({exc})")
        return
    for name in names:
        if hashlib.sha256(found[name]).hexdigest() != name:
            problems.append(f"run {run} checkpoint epoch {epoch} step {step}: chunk {name[:12]} "
                            "does not match its hash (the chunk was changed)")
            return
