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
* a changed message, version or effect row: what it was made with (sender,
  recipient, body; writer, key, value, a file's path and hash; an effect's tool,
  arguments, result and undo) no longer matches the event that made it
  (see :mod:`tether.audit.rows`);
* a changed, removed or inserted operator setting in the store chain
  (``audit/store_chain.py``);
* a signed checkpoint that is forged, changed, does not extend the one before,
  or whose events no longer hash to its root (``audit/signed.py``): this holds
  even against someone who rewrote the chains and the batches to match.

An erased payload (NULL, kept hash) is allowed: that is what payload hashing is for.
Its checkpoint and rows are still checked, against the event's seal
(:mod:`tether.core.seals`), which erasure keeps; only events written before seals
existed lose that check with their payload.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable, Sequence
from operator import attrgetter

from tether.audit.chains import ChainFacts, ChainShare, walk_chains
from tether.audit.projections import check_projections
from tether.audit.report import VerifyReport
from tether.audit.rows import RowFacts, check_rows
from tether.audit.share import PARALLEL_MIN, SPLIT, Helper, start_helper
from tether.audit.signed import verify_signed
from tether.audit.store_chain import verify_store_chain
from tether.audit.tables import Tables, read_tables
from tether.audit.witness import WitnessCheckpoint, verify_witness
from tether.core.events import BATCH_GENESIS, Event, batch_hash
from tether.core.links import LINK_KINDS, derive_links
from tether.core.note import Verifier
from tether.core.seals import links_digest
from tether.core.settings import STORE_CHAIN
from tether.errors import StoreCorrupt, StoreError
from tether.store.protocol import Store
from tether.store.records import Batch, Link


def verify_store(store: Store, *, progress: Callable[[int, int], None] | None = None,
                 key: Verifier | None = None,
                 witness: Sequence[WitnessCheckpoint] = (),
                 helper: Sequence[str] = (), parallel_from: int = PARALLEL_MIN) -> VerifyReport:
    """Verify every chain in ``store`` and its signed checkpoints (their signatures too if
    ``key`` is given), and that it extends every checkpoint of a ``witness``'s copy
    (:func:`tether.audit.witness.parse_witness`). ``progress(done, total)`` is called per
    run. ``helper``: the command that starts a second process to walk the later runs of
    a large store (``tether.cli.verify_helper.COMMAND``; see :mod:`tether.audit.share`);
    none: all of it here; only from ``parallel_from`` events, below which starting it
    costs more than it saves."""
    # The audit keeps a few objects per event (ids, hashes, rows), none in a reference
    # cycle: the collector's passes over them cost a sixth of verify and free nothing.
    collecting = gc.isenabled()
    gc.disable()
    try:
        with store.snapshot():
            return _verify(store, progress, key, witness, helper, parallel_from)
    finally:
        if collecting:
            gc.enable()


def _verify(store: Store, progress: Callable[[int, int], None] | None,
            key: Verifier | None, witness: Sequence[WitnessCheckpoint], command: Sequence[str],
            parallel_from: int) -> VerifyReport:
    """verify_store inside one snapshot: on a live store, a run's events read before a
    worker's commit and its checkpoints or the batches read after it would disagree."""
    rep = VerifyReport()
    helper = _helper(store, command, parallel_from)
    try:
        facts, hashes, tables, batches = _walk(store, rep, progress, helper)
        facts.rows.erased = {x["event"] for x in rep.erasures}
        _verify_sealed(store, batches, hashes, key, witness, rep)
        _verify_links(tables.links, facts, rep)
        read = tables.effects
        if isinstance(read, StoreError):
            rep.problems.append(f"effects cannot be read ({read})")
        effects = None if isinstance(read, StoreError) else read
        check_rows(facts.rows, tables.messages, tables.versions, effects, rep.problems)
        check_projections(store, facts.folds, facts.rows.damaged, effects, rep.problems)
        # SQLite's check of the file: the helper runs it while the checks above run here
        # (None: it has not, and it runs here).
        integrity = helper.integrity() if helper else None
    finally:
        if helper:
            helper.close()
    if integrity is None:
        integrity = store.check_integrity()
    # The chains say nothing of pages they never read (an index): SQLite checks the file.
    # Its lines come first, before what the chains and rows say.
    rep.problems[0:0] = [
        f"the store file is damaged: SQLite's check says {line!r}; restore it from a backup "
        "(made with tether store backup), or salvage what SQLite can read into a new file "
        "(sqlite3 FILE .recover) and verify that" for line in integrity[:10]]
    return rep


def _walk(store: Store, rep: VerifyReport, progress: Callable[[int, int], None] | None,
          helper: Helper | None
          ) -> tuple[ChainFacts, dict[str, dict[int, str]], Tables,
                     list[Batch] | StoreError | None]:
    """Every chain (a large store's later runs in the ``helper`` process), and the rows the
    later checks compare (read meanwhile): the facts, the chains' hashes, the rows; and
    with a helper, the batch chain, read while it works (None: read it when checked)."""
    tables: list[Tables] = []
    batches: list[list[Batch] | StoreError] = []

    def later() -> ChainShare | None:
        tables.append(read_tables(store))  # while the helper still works
        # The batches too: otherwise read after it, while nothing else runs (a sixth of
        # the checks after the walk), and the helper's part took longer than this one's.
        batches.append(_read_batches(store))
        return helper.share() if helper else None

    facts = ChainFacts()
    # The store chain first: its erasures say which checkpoints were rewritten on purpose.
    chain = verify_store_chain(store, rep)
    hashes = walk_chains(store, rep, facts, progress, split=SPLIT if helper else 1.0,
                         later=later if helper else None)
    hashes[STORE_CHAIN] = chain
    return (facts, hashes, tables[0] if tables else read_tables(store),
            batches[0] if batches else None)


def _helper(store: Store, command: Sequence[str], parallel_from: int) -> Helper | None:
    """A second process for a large store's later runs (:mod:`tether.audit.share`)."""
    if not command:
        return None
    try:
        return start_helper(command, store.reader_url(), store.snapshot_mark(),
                            store.chain_size(), parallel_from)
    except StoreError:
        return None  # the walk here names what cannot be read


def _verify_sealed(store: Store, batches: list[Batch] | StoreError | None,
                   hashes: dict[str, dict[int, str]], key: Verifier | None,
                   witness: Sequence[WitnessCheckpoint], rep: VerifyReport) -> None:
    """The batch chain (``batches``: read already, or None to read it now), then the signed
    checkpoints and a witness's copy against the events it lists."""
    try:
        if isinstance(batches, StoreError):
            raise batches  # where reading them unread would have raised it
        leaves = _verify_batches(store.batches() if batches is None else batches, hashes, rep)
    except StoreCorrupt as exc:  # a batch row that is not one: named, and go on
        rep.problems.append(f"the commit batches cannot be read whole: {exc}; the signed "
                            "checkpoints were not checked against the events")
        return
    tree = verify_signed(store, leaves, key, rep)
    if witness:  # on the tree the signed checkpoints were checked against, if built
        verify_witness(store, leaves, witness, key, rep, tree=tree)


def _read_batches(store: Store) -> list[Batch] | StoreError:
    """The batch chain read whole, or the error reading it (raised when it is checked)."""
    try:
        return list(store.batches())
    except StoreError as exc:
        return exc


def _verify_batches(batches: Iterable[Batch], hashes: dict[str, dict[int, str]],
                    rep: VerifyReport) -> list[bytes]:
    """The batch chain must link up and name every event of every chain exactly. Returns
    the events' hashes in the order it names them: the leaves of the signed checkpoints."""
    covered: dict[str, set[int]] = {}
    leaves: list[bytes] = []
    prev = BATCH_GENESIS
    for b in batches:
        rep.batches += 1
        if b.n != rep.batches:
            rep.problems.append(f"batch {b.n}: expected batch number {rep.batches} "
                                "(batches were removed or renumbered)")
        if b.prev != prev:
            rep.problems.append(f"batch {b.n}: links to {b.prev[:12]}, expected {prev[:12]} "
                                "(a batch was removed, reordered or changed)")
        listed = _listed(b.n, b.entries, hashes, covered, rep)
        leaves += [bytes.fromhex(x[2]) for x in listed]
        if b.hash != batch_hash(b.prev, listed):
            rep.problems.append(f"batch {b.n}: hash does not match its events "
                                "(an event or the batch was changed)")
        prev = b.hash
    for run, chain in hashes.items():
        missing = set(chain) - covered.get(run, set())
        if missing:
            rep.problems.append(f"run {run}: events {sorted(missing)[:5]} are in no commit batch "
                                "(inserted outside tether)")
    return leaves


def _listed(n: int, entries: Iterable[tuple[str, int, int]], hashes: dict[str, dict[int, str]],
            covered: dict[str, set[int]], rep: VerifyReport) -> list[tuple[str, int, str]]:
    """The (run, seq, hash) of each event batch ``n`` names, as the chains hold them."""
    listed: list[tuple[str, int, str]] = []
    for run, first, last in entries:
        chain = hashes.get(run)
        if chain is None:
            rep.problems.append(f"batch {n}: names run {run}, which has no events "
                                "(the run was deleted)")
            continue
        seen = covered.setdefault(run, set())
        for seq in range(first, last + 1):
            h = chain.get(seq)
            if h is None:
                rep.problems.append(f"batch {n}: names event {run}#{seq}, which is missing "
                                    "(the run was truncated)")
                break
            listed.append((run, seq, h))
            seen.add(seq)
    return listed


def _verify_links(links: list[Link] | StoreError, facts: ChainFacts, rep: VerifyReport
                  ) -> None:
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
    if isinstance(links, StoreError):
        rep.problems.append(f"provenance links cannot be read ({links})")
        return
    have = set(map(_LINK_FIELDS, links))
    if erased:
        for e in facts.sources:
            if e.id in erased:
                problem = _lineage_problem(e, [x for x in have if x[8] == e.id])
                if problem:
                    rep.problems.append(problem)
    if erased or facts.rows.unchecked or facts.rows.unreadable:  # (else none is left out)
        have = {x for x in have if x[8] not in erased and not _unverified(facts.rows, x)}
    for what, diff in (("missing", want - have), ("not implied by any event", have - want)):
        if diff:
            x = sorted(diff)[0]
            rep.problems.append(f"provenance index: {len(diff)} link(s) {what}, e.g. {x[0]} from "
                                f"run {x[1]} step {x[3]} to run {x[5]} step {x[7]} (event {x[8]}); "
                                "the links table was changed outside tether, so `tether impact` "
                                "cannot be trusted until it is restored from a backup")


_LINK_FIELDS = attrgetter("kind", "src_run", "src_epoch", "src_step", "src_event", "dst_run",
                          "dst_epoch", "dst_step", "dst_event")
"""A link as the tuple :func:`_verify_links` compares (in C: it reads every link)."""


def _lineage_problem(e: Event, links: list[tuple[str, str, int, int, str, str, int, int, str]]
                     ) -> str | None:
    """An erased ``rollback`` or fork ``run.started`` cannot derive its link again; its seal
    still says what the link must be (an event written before seals says nothing)."""
    want = dict(e.seal).get("links")
    if want is None or (e.kind == "run.started" and not links):
        return None  # (a fork of a run this store does not hold has no link)
    got = [(x[0], None if x[0] == "epoch" else x[1], x[2], x[3]) for x in links]
    if links_digest(got) == want and all(
            x[4] == e.id and (x[5], x[6], x[7]) == (e.run, e.epoch, e.step)
            and (x[0] != "epoch" or x[1] == e.run) for x in links):
        return None
    return (f"provenance index: the {e.kind} link of run {e.run} (event {e.id}, its payload "
            "erased) does not match the event's seal; the links table was changed outside "
            "tether, so `tether impact` cannot be trusted until it is restored from a backup")


def _unverified(rows: RowFacts, link: tuple[str, str, int, int, str, str, int, int, str]) -> bool:
    """A link from or to an event the audit could not verify (already named as damaged):
    whether it is implied cannot be told, and saying the index changed would mislead."""
    return (link[4] in rows.unchecked or link[8] in rows.unchecked
            or link[1] in rows.unreadable or link[5] in rows.unreadable)
