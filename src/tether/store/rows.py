"""How a store lays out records in rows, and reads them back: one layout, and one codec,
for both backends (SQLite and PostgreSQL store the same columns, the same bytes).

Each backend keeps its SQL and its connections; what a record is as a row's values, and
what a row's values are as a record, is said here once."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from tether.core.canonical import dumps, loads
from tether.core.events import Event
from tether.core.ids import ulid_bytes, ulid_str
from tether.core.seals import NAMES, Seal
from tether.errors import StoreCorrupt, UsageError
from tether.store.records import (
    ApprovalRow,
    ChainRow,
    EffectRow,
    MessageRow,
    RunRow,
    VersionRow,
)

EVENT_COLS = ("rk, seq, id, epoch, step, kind, time, actor, causes, payload, payload_hash, hash, "
              "seal")
RUN_COLS = ("id, name, agent, swarm, goal, status, epoch, step, seq, head, spec, budget, usage, "
             "wake_at, created, updated, reason, parent")
EFFECT_COLS = ("id, run, epoch, step, idx, tool, effect, idempotent, key, status, arguments, "
                "result, undo, updated")


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)


def time_us(iso_time: str) -> int:
    """Event times are ISO-8601 UTC with microseconds (tether.core.ids.iso); stored as
    integer microseconds, 8 bytes instead of 27, and formatted back exactly."""
    return (datetime.fromisoformat(iso_time.replace("Z", "+00:00")) - _EPOCH) // _MICRO


_hour: tuple[int, str] = (-1 << 62, "")
"""The last hour formatted (hours since the epoch, ``YYYY-MM-DDTHH:``): reading events
back formats every time, and strftime was a third of decoding an event. One tuple
replaced whole, so threads sharing it always read a consistent pair."""

_second: tuple[int, str] = (-1 << 62, "")
"""The last second formatted (``YYYY-MM-DDTHH:MM:SS.``): a busy run writes many events a
second, and the audit reads them all."""


def stamp_us(t: float) -> int:
    """A time in seconds (a window's bound) as the events' stored integer microseconds."""
    return round(t * 1_000_000)


def window_us(since: float | None, until: float | None) -> tuple[int, int]:
    """The stored times [lo, hi) of a window in seconds; an open end is the whole range."""
    return (-(2**62) if since is None else stamp_us(since),
            2**62 if until is None else stamp_us(until))


def usage_scope(run: str | None, swarm: str | None, since: float) -> tuple[str, Any, int]:
    """The usage rows a ``usage_since`` query sums: (column, its value, first bucket), the
    rows being per minute; UsageError unless exactly one of ``run`` and ``swarm``."""
    if (run is None) == (swarm is None):
        raise UsageError("usage_since takes exactly one of run= or swarm=")
    col, val = ("run", run) if run is not None else ("swarm", swarm)
    return col, val, int(since // 60)


def stamp_seconds(us: Any) -> float | None:
    """A stored time (integer microseconds; None: none) in seconds."""
    return None if us is None else int(us) / 1_000_000


def time_iso(us: int) -> str:
    """The exact text :func:`time_us` was given (UTC, microseconds)."""
    global _hour, _second
    sec, frac = divmod(us, 1_000_000)
    last = _second
    if last[0] == sec:
        return f"{last[1]}{frac:06d}Z"
    hour, rest = divmod(sec, 3600)
    cur = _hour
    if cur[0] != hour:
        cur = _hour = (hour, (_EPOCH + timedelta(hours=hour)).strftime("%Y-%m-%dT%H:"))
    m, s = divmod(rest, 60)
    last = _second = (sec, f"{cur[1]}{m:02d}:{s:02d}.")
    return f"{last[1]}{frac:06d}Z"


def id_key(event_id: str) -> bytes | None:
    try:
        return ulid_bytes(event_id.upper())
    except (ValueError, OverflowError):
        return None  # not an event id at all


def row_event(r: Sequence[Any], run: str, prev: str = "") -> Event:
    try:
        payload = loads(r[9]) if r[9] is not None else None
        causes = tuple(loads(r[8]))
        seal = _seal(r[12])
    except ValueError as exc:
        raise StoreCorrupt(f"run {run} event #{r[1]}: stored payload, causes or seal cannot be "
                           f"decoded ({exc}); the event was changed outside tether") from exc
    ph = bytes(r[10]).hex() if r[10] is not None else hashlib.sha256(bytes(r[9] or b"")).hexdigest()
    try:
        when = time_iso(r[6])
    except (TypeError, OverflowError, ValueError) as exc:
        raise StoreCorrupt(f"run {run} event #{r[1]}: stored time {r[6]!r} is not a time; the "
                           "event was changed outside tether") from exc
    return Event(id=ulid_str(bytes(r[2])), run=run, seq=r[1], epoch=r[3], step=r[4], kind=r[5], time=when,
                 actor=r[7], causes=causes, payload=payload,
                 payload_hash=ph, prev=prev, hash=bytes(r[11]).hex(), seal=seal)


def event_values(rk: int, e: Event) -> tuple[Any, ...]:
    """An event of run key ``rk`` as the values of :data:`EVENT_COLS` (``payload_hash``
    NULL: it is derived from the payload until an erasure stores it)."""
    return (rk, e.seq, ulid_bytes(e.id), e.epoch, e.step, e.kind, time_us(e.time), e.actor,
            dumps(list(e.causes)), dumps(e.payload), None, bytes.fromhex(e.hash),
            seal_value(e.seal))


def chained_events(rows: Iterable[Sequence[Any]], run: str, prev: str) -> list[Event]:
    """Rows of one run's chain, in seq order, as events, each linked to the hash before
    it (``prev``: the hash before the first row, which is not stored but recomputed)."""
    out = []
    for r in rows:
        e = row_event(r, run, prev)
        out.append(e)
        prev = e.hash
    return out


def chain_row(r: tuple[Any, ...], run: str) -> ChainRow:
    """A stored event (selected as each backend's ``CHAIN_COLS``: :data:`EVENT_COLS` with
    kind and actor as their bytes) as the audit reads it: decoded
    but for its causes and payload, whose bytes are what the chain hashed. What cannot be
    decoded is said in the last field, so one damaged row does not stop the read."""
    payload = r[9]
    if isinstance(payload, str):  # written as text by hand: its bytes as they are
        payload = payload.encode("utf-8", "surrogateescape")
    damage = None
    try:
        kind, actor = r[5].decode("utf-8", "surrogateescape"), r[7].decode("utf-8",
                                                                          "surrogateescape")
    except AttributeError as exc:  # NULL
        kind, actor, damage = str(r[5]), str(r[7]), f"stored kind or actor is missing ({exc})"
    try:
        when = time_iso(r[6])
    except (TypeError, OverflowError, ValueError) as exc:
        when, damage = "", f"stored time {r[6]!r} is not a time ({exc})"
    try:
        seal = _seal(r[12])
        ph = None if r[10] is None else bytes(r[10]).hex()
        h = bytes(r[11]).hex()
        eid = ulid_str(bytes(r[2]))
    except (TypeError, ValueError, IndexError) as exc:
        seal, ph, h, eid = (), None, "", str(r[2])
        damage = f"stored id, hashes or seal cannot be decoded ({exc})"
    return (run, r[1], eid, r[3], r[4], kind, when, actor, r[8], payload, ph, h, seal, damage)


def seal_value(seal: Seal) -> bytes | None:
    """How a seal is stored: per name, one byte (its position in ``NAMES``, from 1) and
    the 32 bytes of its hash; NULL when empty. A third of its JSON size: a seal is
    written with most steps."""
    if not seal:
        return None
    return b"".join(bytes([NAMES.index(name) + 1]) + bytes.fromhex(h) for name, h in seal)


def _seal(data: bytes | str | None) -> Seal:
    if data is None:
        return ()
    # Text only if someone wrote it so: read its bytes back as they were.
    data = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else bytes(data)
    if len(data) % 33:
        raise ValueError(f"a stored seal is whole 33-byte entries, not {len(data)} bytes")
    # As stored, even if changed: the event's hash then tells, naming the event.
    if len(data) == 33 and 0 < data[0] <= len(NAMES):  # most seals hold one name
        return ((NAMES[data[0] - 1], data[1:].hex()),)
    return tuple(sorted((NAMES[data[i] - 1] if 0 < data[i] <= len(NAMES) else f"#{data[i]}",
                         data[i + 1:i + 33].hex()) for i in range(0, len(data), 33)))


_JSON_RUN_COLS = ("spec", "budget", "usage")


def run_values(r: RunRow) -> tuple[Any, ...]:
    """A run as the values of :data:`RUN_COLS`."""
    return (r.id, r.name, r.agent, r.swarm, r.goal, r.status, r.epoch, r.step, r.seq, r.head,
            dumps(r.spec), dumps(r.budget), dumps(r.usage), r.wake_at, r.created, r.updated,
            r.reason, r.parent)


def run_changes(r: RunRow, changed: Iterable[str]) -> tuple[list[str], list[Any]]:
    """The columns a write of an existing run rewrites and their values: what changed,
    and the chain's head always. Only those: an UPDATE that leaves indexed columns alone
    does not touch their indexes (SQLite's b-trees; PostgreSQL's HOT updates)."""
    cols = sorted(set(changed) | {"seq", "head", "updated"})
    return cols, [dumps(getattr(r, k)) if k in _JSON_RUN_COLS else getattr(r, k) for k in cols]


def row_run(r: tuple[Any, ...]) -> RunRow:
    return RunRow(id=r[0], name=r[1], agent=r[2], swarm=r[3], goal=r[4], status=r[5],
                  epoch=r[6], step=r[7], seq=r[8], head=r[9], spec=loads(r[10]),
                  budget=loads(r[11]), usage=loads(r[12]), wake_at=r[13], created=r[14],
                  updated=r[15], reason=r[16], parent=r[17])


def effect_values(f: EffectRow) -> tuple[Any, ...]:
    """An effect as the values of :data:`EFFECT_COLS`."""
    return (f.id, f.run, f.epoch, f.step, f.idx, f.tool, f.effect, int(f.idempotent), f.key,
            f.status, dumps(f.arguments), None if f.result is None else dumps(f.result),
            None if f.undo is None else dumps(f.undo), f.updated)


def row_effect(r: tuple[Any, ...]) -> EffectRow:
    return EffectRow(id=r[0], run=r[1], epoch=r[2], step=r[3], idx=r[4], tool=r[5], effect=r[6],
                     idempotent=bool(r[7]), key=r[8], status=r[9], arguments=loads(r[10]),
                     result=loads(r[11]) if r[11] is not None else None,
                     undo=loads(r[12]) if r[12] is not None else None, updated=r[13])


APPROVAL_COLS = ("id, run, epoch, step, idx, tool, effect, arguments, rule, reason, policy_hash, "
                 "approvers, requested_at, expires_at, on_expiry, status, decided_by, decided_at, "
                 "note, edited_arguments, always")


def approval_values(a: ApprovalRow) -> tuple[Any, ...]:
    return (a.id, a.run, a.epoch, a.step, a.idx, a.tool, a.effect, dumps(a.arguments), a.rule,
            a.reason, a.policy_hash, dumps(list(a.approvers)), a.requested_at, a.expires_at,
            a.on_expiry, a.status, a.decided_by, a.decided_at, a.note,
            None if a.edited_arguments is None else dumps(a.edited_arguments), int(a.always))


def row_approval(r: tuple[Any, ...]) -> ApprovalRow:
    return ApprovalRow(id=r[0], run=r[1], epoch=r[2], step=r[3], idx=r[4], tool=r[5], effect=r[6],
                       arguments=loads(r[7]), rule=r[8], reason=r[9], policy_hash=r[10],
                       approvers=tuple(loads(r[11])), requested_at=r[12], expires_at=r[13],
                       on_expiry=r[14], status=r[15], decided_by=r[16], decided_at=r[17],
                       note=r[18], edited_arguments=loads(r[19]) if r[19] is not None else None,
                       always=bool(r[20]))


MESSAGE_COLS = ("id, swarm, sender, epoch, step, recipient, topic, body, status, created, claim, "
                "received, suspect")
VERSION_COLS = "ns, key, version, event, run, epoch, step, value, hash, status, suspect, created"


def message_values(m: MessageRow) -> tuple[Any, ...]:
    """A message as the values of :data:`MESSAGE_COLS`."""
    return (m.id, m.swarm, m.sender, m.epoch, m.step, m.recipient, m.topic, dumps(m.body),
            m.status, m.created, m.claim, m.received, int(m.suspect))


def row_message(r: Sequence[Any]) -> MessageRow:
    return MessageRow(id=r[0], swarm=r[1], sender=r[2], epoch=r[3], step=r[4], recipient=r[5],
                      topic=r[6], body=loads(r[7]), status=r[8], created=r[9], claim=r[10],
                      received=r[11], suspect=bool(r[12]))


def version_values(v: VersionRow) -> tuple[Any, ...]:
    """A version as the values of :data:`VERSION_COLS` but ``version``, which the insert
    numbers from the key's last one. A file's version with no value stores NULL (its
    bytes are in the workspace); any other value, JSON null included, its JSON."""
    value = None if v.value is None and v.ns.startswith("file:") else dumps(v.value)
    return (v.ns, v.key, v.event, v.run, v.epoch, v.step, value, v.hash, v.status,
            int(v.suspect), v.created)


def row_version(r: Sequence[Any]) -> VersionRow:
    return VersionRow(ns=r[0], key=r[1], version=r[2], event=r[3], run=r[4], epoch=r[5],
                      step=r[6], value=loads(r[7]) if r[7] is not None else None, hash=r[8],
                      status=r[9], suspect=bool(r[10]), created=r[11])
