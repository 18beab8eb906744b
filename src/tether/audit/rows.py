"""The audit of projection rows: each must say what the (verified) event that made it says.

Message, version and effect rows are written with their events, in the same
transaction; what a row was made with never changes after (its status does:
delivery, retraction, rollback). Each is compared with its event's seal
(:mod:`tether.core.seals`), which survives the erasure of the payload; an
event written before seals existed is compared through its payload while the
payload is there. The rows of a run with a damaged event are not judged
(like its checkpoints): that event is already named, and the events that
last changed them may be among those that could not be verified.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from tether.core.events import Event
from tether.core.seals import (
    effect_digest,
    files_digest,
    message_digest,
    outcome_digest,
    seal_of,
    version_digest,
)
from tether.core.settings import erased_marker
from tether.errors import StoreError
from tether.store.records import EffectRow, MessageRow, VersionRow

_MADE = ("message.sent", "blackboard.write", "effect.intent")
_OUTCOMES = ("effect.done", "effect.failed", "effect.in_doubt", "effect.resolved")
ROW_KINDS = frozenset(_MADE + _OUTCOMES)
"""The kinds :meth:`RowFacts.note` takes anything from."""
_UNSET = outcome_digest(None, None)
"""An effect row's result and undo from its intent until an outcome event sets them."""


def expected_seal(e: Event, erased: bool) -> dict[str, str] | None:
    """What ``e`` says its rows hold: its seal, or for an event written before seals
    existed the same names derived from its payload; None once that payload is erased."""
    if e.seal:
        return dict(e.seal)
    return None if erased else dict(seal_of(e.kind, e.payload))


@dataclass(slots=True)
class RowFacts:
    """What the rows must say, gathered from the verified events in chain order."""

    made: dict[str, tuple[Event, dict[str, str] | None]] = field(default_factory=dict)
    """``message.sent``, ``blackboard.write`` and ``effect.intent`` events by id, with
    their expected seals."""
    outcome: dict[str, str | None] = field(default_factory=dict)
    """Effect id: the outcome digest its row must hold now (None: erased, unknown)."""
    files: dict[str, list[str | None]] = field(default_factory=dict)
    """Effect id: files digests of the events that wrote its file versions."""
    unchecked: set[str] = field(default_factory=set)
    """Ids of events that could not be verified (at or after a damaged one)."""
    damaged: set[str] = field(default_factory=set)
    """Runs with an event that could not be verified (or read at all)."""
    unreadable: set[str] = field(default_factory=set)
    """Runs whose events could not be read at all."""
    erased: set[str] = field(default_factory=set)
    """Events the store chain records as erased: a row may hold their marker instead of
    the value copied from their payload (:func:`tether.core.settings.erased_marker`)."""

    def blanked(self, value: object, event: str) -> bool:
        """``value`` is the marker of an erasure the store chain records."""
        return event in self.erased and value == erased_marker(event)

    def note(self, e: Event, erased: bool) -> None:
        """Take in one verified event."""
        if e.kind in _MADE:
            seal = expected_seal(e, erased)
            self.made[e.id] = (e, seal)
            if e.kind == "effect.intent":
                self.outcome[e.id] = _UNSET
        elif e.kind in _OUTCOMES and e.causes:
            seal = expected_seal(e, erased)
            effect = e.causes[0]
            self.outcome[effect] = None if seal is None else seal.get("outcome")
            if e.kind not in ("effect.done", "effect.resolved"):
                return  # it writes no file versions
            if seal is None:  # erased before seals: what it wrote is unknown
                self.files.setdefault(effect, []).append(None)
            elif "files" in seal:
                self.files.setdefault(effect, []).append(seal["files"])
            elif isinstance(e.payload, dict) and e.payload.get("resolution") == "done":
                # Resolved as done before seals: it wrote versions it did not journal.
                self.files.setdefault(effect, []).append(None)

    def merge(self, later: RowFacts) -> None:
        """Take in the facts of events noted apart, after these (as if noted here next)."""
        self.made.update(later.made)
        self.outcome.update(later.outcome)
        for effect, wrote in later.files.items():
            self.files.setdefault(effect, []).extend(wrote)
        self.unchecked |= later.unchecked
        self.damaged |= later.damaged
        self.unreadable |= later.unreadable
        self.erased |= later.erased

    def skipped(self, event: str, run: str) -> bool:
        """Rows of a run with a damaged event are not judged, like its checkpoints: the
        events that last changed them may be among those that could not be verified."""
        return event in self.unchecked or run in self.damaged


def check_rows(facts: RowFacts, messages: list[MessageRow] | StoreError,
               versions: list[VersionRow] | StoreError, effects: list[EffectRow] | None,
               problems: list[str]) -> None:
    """Compare message, version and effect rows (``effects``, read once for this and the
    projections' check; None if they could not be read) with their events; one problem
    per table. ``messages`` and ``versions``: as read, or the error reading them."""
    if isinstance(messages, StoreError) or isinstance(versions, StoreError):
        exc = messages if isinstance(messages, StoreError) else versions
        problems.append(f"messages or versions cannot be read ({exc})")
        return
    for found in (_first(_message_problem(facts, m) for m in messages),
                  _first(_version_problem(facts, v) for v in versions),
                  _files_problem(facts, versions),
                  _numbering_problem(versions),
                  _first(effect_problem(facts, f) for f in effects or ())):
        if found:
            problems.append(found)


def _first(found: Iterable[str | None]) -> str | None:
    return next((p for p in found if p), None)


def _made(facts: RowFacts, event: str, kind: str) -> tuple[Event, dict[str, str] | None] | None:
    got = facts.made.get(event)
    return got if got is not None and got[0].kind == kind else None


def _message_problem(facts: RowFacts, m: MessageRow) -> str | None:
    if facts.skipped(m.id, m.sender):
        return None
    made = _made(facts, m.id, "message.sent")
    ok = made is not None and (m.sender, m.epoch, m.step) == (made[0].run, made[0].epoch,
                                                               made[0].step)
    if ok and made is not None and made[1] is not None and "message" in made[1] \
            and not facts.blanked(m.body, m.id):
        ok = message_digest(m.recipient, m.topic, m.body) == made[1]["message"]
    if ok:
        return None
    return (f"message {m.id}: the row does not match its message.sent event (its sender, "
            "recipient, topic or body was changed outside tether)")


def _version_problem(facts: RowFacts, v: VersionRow) -> str | None:
    if facts.skipped(v.event, v.run):
        return None
    board = v.ns.startswith("board:")
    made = _made(facts, v.event, "blackboard.write" if board else "effect.intent")
    ok = made is not None and (v.run, v.epoch, v.step) == (made[0].run, made[0].epoch,
                                                           made[0].step)
    if ok and board and made is not None and made[1] is not None and "version" in made[1] \
            and not facts.blanked(v.value, v.event):
        ok = version_digest(v.key, v.value) == made[1]["version"]
    if ok:
        return None
    return (f"version {v.version} of {v.key!r} ({v.ns}): the row does not match the event that "
            f"wrote it ({v.event}): changed outside tether")


def _files_problem(facts: RowFacts, versions: list[VersionRow]) -> str | None:
    """The file versions of each effect, together, must be the files its events wrote."""
    by_effect: dict[str, dict[str, str | None]] = {}
    for v in versions:
        if v.ns.startswith("file:") and not facts.skipped(v.event, v.run):
            by_effect.setdefault(v.event, {})[v.key] = v.hash
    for effect, files in by_effect.items():
        wrote = facts.files.get(effect, [])
        if None in wrote or files_digest(files) in wrote:
            continue
        return (f"file versions of effect {effect} ({', '.join(sorted(files))}): their paths or "
                "hashes do not match the files its effect.done (or effect.resolved) event "
                "journaled: changed outside tether")
    return None


def _numbering_problem(versions: list[VersionRow]) -> str | None:
    """A key's versions are numbered 1, 2, 3 ... in commit order (readers take the highest
    live one as current): a renumbered, removed or reordered version breaks that."""
    last: dict[tuple[str, str], int] = {}
    for v in versions:  # in commit order
        want = last.get((v.ns, v.key), 0) + 1
        if v.version != want:
            return (f"version {v.version} of {v.key!r} ({v.ns}): expected version {want} in "
                    "commit order (versions of that key were renumbered, removed or reordered "
                    "outside tether)")
        last[(v.ns, v.key)] = v.version
    return None


def effect_problem(facts: RowFacts, f: EffectRow) -> str | None:
    """What is wrong with effect row ``f`` given the events noted in ``facts``, or None
    (rollback checks the rows it is about to act on with this too)."""
    if facts.skipped(f.id, f.run):
        return None
    made = _made(facts, f.id, "effect.intent")
    ok = made is not None and (f.run, f.epoch, f.step, f.key) == (made[0].run, made[0].epoch,
                                                                  made[0].step, made[0].id)
    if ok and made is not None and made[1] is not None and "effect" in made[1] \
            and not facts.blanked(f.arguments, f.id):
        ok = effect_digest(f.idx, f.tool, f.effect, f.idempotent, f.arguments) == made[1]["effect"]
    want = facts.outcome.get(f.id)
    by = f.result.get("erased") if isinstance(f.result, dict) else None
    if ok and want is not None and not (isinstance(by, str) and facts.blanked(f.result, by)):
        ok = outcome_digest(f.result, f.undo) == want
    if ok:
        return None
    return (f"effect {f.id} ({f.tool}, run {f.run} step {f.step}): the row does not match its "
            "events (its tool, arguments, result or undo was changed outside tether); rollbacks "
            "past it are refused until the store is restored from a backup")
