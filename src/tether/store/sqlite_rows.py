"""How the SQLite store lays out records in rows, and reads them back."""

from __future__ import annotations

import hashlib
import sqlite3
from datetime import UTC, datetime, timedelta
from typing import Any

from tether.core.canonical import dumps, loads
from tether.core.events import Event
from tether.core.ids import ulid_bytes, ulid_str
from tether.core.seals import NAMES, Seal
from tether.errors import StoreCorrupt
from tether.store.records import ApprovalRow, ChainRow, EffectRow, RunRow

EVENT_COLS = ("rk, seq, id, epoch, step, kind, time, actor, causes, payload, payload_hash, hash, "
              "seal")
CHAIN_COLS = ("rk, seq, id, epoch, step, CAST(kind AS BLOB), time, CAST(actor AS BLOB), "
              "CAST(causes AS BLOB), payload, payload_hash, hash, seal")
"""The event columns :func:`chain_row` reads, text as its bytes."""
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


def row_event(r: sqlite3.Row | tuple[Any, ...], run: str, prev: str = "") -> Event:
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


def chain_row(r: tuple[Any, ...], run: str) -> ChainRow:
    """A stored event (selected as :data:`CHAIN_COLS`) as the audit reads it: decoded
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


def row_run(r: tuple[Any, ...]) -> RunRow:
    return RunRow(id=r[0], name=r[1], agent=r[2], swarm=r[3], goal=r[4], status=r[5],
                  epoch=r[6], step=r[7], seq=r[8], head=r[9], spec=loads(r[10]),
                  budget=loads(r[11]), usage=loads(r[12]), wake_at=r[13], created=r[14],
                  updated=r[15], reason=r[16], parent=r[17])


def row_effect(r: tuple[Any, ...]) -> EffectRow:
    # Positional (EFFECT_COLS is EffectRow's field order): the audit reads every row.
    return EffectRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], bool(r[7]), r[8], r[9],
                     loads(r[10]), loads(r[11]) if r[11] is not None else None,
                     loads(r[12]) if r[12] is not None else None, r[13])


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
