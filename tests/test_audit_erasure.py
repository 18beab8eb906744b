"""The audit has no blind spot around erased payloads, file versions and effect rows.

One swarm store is made the way tether makes it (two ``swarmer`` runs driven by
real workers: file writes, a message, a blackboard write and read), closed,
and copied afresh for every case. Payloads are erased with the store's own
``erase_payload``; rows are then changed with a plain sqlite3 connection, as
an intruder would. Every event that makes a row carries a seal (hashes of its
rows, chained, kept by erasure), so a forged row is found even when the payload
that said what it held is gone.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tests import swarm_agents
from tether.audit import VerifyReport, verify_store
from tether.cli.app import app
from tether.core.events import Event
from tether.core.ids import ulid_bytes
from tether.store.sqlite import SQLiteStore

Tamper = Callable[[sqlite3.Connection], Any]

SCHEDULE: swarm_agents.Schedule = [
    ("a", [("write", "f.txt"), ("send", "b"), ("set", "k")]),
    ("b", [("recv", ""), ("get", "k"), ("append", "f.txt")]),
    ("a", [("write", "g.txt")]),
]


@dataclass(frozen=True)
class Base:
    """The untouched store (closed), its runs by name and their events."""

    path: Path
    ids: dict[str, str]
    events: dict[str, list[Event]]

    def event(self, name: str, kind: str, step: int | None = None, nth: int = 0) -> Event:
        found = [e for e in self.events[name] if e.kind == kind and step in (None, e.step)]
        return found[nth]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Base:
    root = tmp_path_factory.mktemp("erasure")
    store = SQLiteStore(root / "tether.db")
    try:
        ids, _ = swarm_agents.drive(store, ["a", "b"], SCHEDULE, root / "ws")
        events = {name: store.events(rid) for name, rid in ids.items()}
        assert verify_store(store).ok
    finally:
        store.close()
    return Base(root / "tether.db", ids, events)


@contextmanager
def copy_of(base: Base, erase: tuple[Event, ...] = (), tamper: Tamper | None = None
            ) -> Iterator[Path]:
    """A copy of the base store with payloads erased (by tether) and rows changed (raw)."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "copy.db"
        shutil.copyfile(base.path, path)
        store = SQLiteStore(path, create=False)
        try:
            for e in erase:
                store.erase_payload(e.id)
        finally:
            store.close()
        if tamper is not None:
            raw = sqlite3.connect(path)
            try:
                with raw:
                    tamper(raw)
            finally:
                raw.close()
        yield path


def verify(path: Path) -> VerifyReport:
    store = SQLiteStore(path, create=False)
    try:
        return verify_store(store)
    finally:
        store.close()


def verify_tampered(base: Base, erase: tuple[Event, ...] = (),
                    tamper: Tamper | None = None) -> VerifyReport:
    with copy_of(base, erase, tamper) as path:
        return verify(path)


def json_column(table: str, column: str, key: str, value: Any, edit: Callable[[Any], Any]
                ) -> Tamper:
    """Decode one JSON cell, edit it, write it back (``key = value`` picks the row)."""
    def tamper(raw: sqlite3.Connection) -> None:
        sql = f"SELECT {column} FROM {table} WHERE {key} = ?"  # noqa: S608 -- ours
        rows = raw.execute(sql, (value,)).fetchall()
        assert len(rows) >= 1, (table, key, value)
        for (cell,) in rows:
            new = orjson.dumps(edit(orjson.loads(cell)), option=orjson.OPT_SORT_KEYS)
            raw.execute(f"UPDATE {table} SET {column} = ? WHERE {key} = ? "  # noqa: S608
                        f"AND {column} = ?", (new, value, cell))
    return tamper


# -- nothing touched ---------------------------------------------------------------

def test_every_payload_erased_still_verifies(base: Base) -> None:
    # Seals say what each row holds: erasing every payload leaves nothing unexplained.
    everything = tuple(e for evs in base.events.values() for e in evs)
    assert verify_tampered(base, everything).problems == []


def test_rows_carry_seals(base: Base) -> None:
    sealed = {e.kind for evs in base.events.values() for e in evs if e.seal}
    assert {"step.finished", "checkpoint", "message.sent", "blackboard.write",
            "effect.intent", "effect.done"} <= sealed
    assert not base.event("b", "blackboard.read").seal  # it made no row


# -- a forged checkpoint under an erased step ----------------------------------------

def _forge_checkpoint(base: Base, name: str, step: int) -> Tamper:
    rk_sql = "SELECT rk FROM run_keys WHERE id = ?"

    def tamper(raw: sqlite3.Connection) -> None:
        rk = raw.execute(rk_sql, (base.ids[name],)).fetchone()[0]
        body = bytes(raw.execute("SELECT body FROM checkpoints WHERE rk = ? AND epoch = 0 AND "
                                 "step = ?", (rk, step)).fetchone()[0])
        assert b'"from":"a"' in body, body
        raw.execute("UPDATE checkpoints SET body = ? WHERE rk = ? AND epoch = 0 AND step = ?",
                    (body.replace(b'"from":"a"', b'"from":"z"'), rk, step))
    return tamper


def test_a_forged_checkpoint_of_an_erased_step_is_found(base: Base) -> None:
    finished = base.event("b", "step.finished", step=1)
    with copy_of(base, (finished,), _forge_checkpoint(base, "b", 1)) as path:
        # The forgery bites: the state of step 1 now says what the intruder wrote.
        res = CliRunner().invoke(app, ["--store", str(path), "state", base.ids["b"],
                                       "--step", "1"])
        assert res.exit_code == 0, res.output
        assert '"z"' in res.output
        report = verify(path)
    assert not report.ok
    assert report.first_bad is not None
    assert f"run {base.ids['b']} checkpoint epoch 0 step 1" in report.first_bad


def test_a_forged_checkpoint_is_found_with_its_payload_there_too(base: Base) -> None:
    report = verify_tampered(base, (), _forge_checkpoint(base, "b", 1))
    assert report.first_bad is not None and "checkpoint epoch 0 step 1" in report.first_bad


# -- message and blackboard rows under erased payloads -------------------------------

@pytest.mark.parametrize("erased", [True, False], ids=["erased", "kept"])
@pytest.mark.parametrize(("column", "edit"), [
    ("body", lambda body: {**body, "from": "z"}),
    ("topic", lambda topic: "forged"),
    ("recipient", lambda recipient: "01NOSUCHRUN0000000000000000"),
], ids=["body", "topic", "recipient"])
def test_a_forged_message_row_is_found(base: Base, erased: bool, column: str,
                                       edit: Callable[[Any], Any]) -> None:
    sent = base.event("a", "message.sent")
    if column == "body":
        tamper = json_column("messages", "body", "id", sent.id, edit)
    else:
        def tamper(raw: sqlite3.Connection) -> None:
            raw.execute(f"UPDATE messages SET {column} = ? WHERE id = ?",  # noqa: S608
                        (edit(None), sent.id))
    report = verify_tampered(base, (sent,) if erased else (), tamper)
    assert report.first_bad is not None, f"{column} forged, verify says ok"
    assert f"message {sent.id}" in report.first_bad


@pytest.mark.parametrize("erased", [True, False], ids=["erased", "kept"])
def test_a_forged_blackboard_value_is_found(base: Base, erased: bool) -> None:
    wrote = base.event("a", "blackboard.write")
    tamper = json_column("versions", "value", "event", wrote.id, lambda v: "forged\n")
    report = verify_tampered(base, (wrote,) if erased else (), tamper)
    assert report.first_bad is not None
    assert "'k'" in report.first_bad and wrote.id in report.first_bad


# -- file versions -------------------------------------------------------------------

@pytest.mark.parametrize("erased", [True, False], ids=["erased", "kept"])
@pytest.mark.parametrize("column", ["hash", "key"])
def test_a_forged_file_version_is_found(base: Base, erased: bool, column: str) -> None:
    intent = base.event("b", "effect.intent")  # b appended to f.txt
    done = base.event("b", "effect.done")
    assert done.causes[0] == intent.id

    def tamper(raw: sqlite3.Connection) -> None:
        value = "0" * 64 if column == "hash" else "elsewhere.txt"
        raw.execute(f"UPDATE versions SET {column} = ? WHERE event = ?",  # noqa: S608
                    (value, intent.id))
    report = verify_tampered(base, (intent, done) if erased else (), tamper)
    assert report.first_bad is not None, f"file version {column} forged, verify says ok"
    assert f"effect {intent.id}" in report.first_bad


@pytest.mark.parametrize("how", ["renumber", "remove-the-first"])
def test_renumbered_or_removed_versions_are_found(base: Base, how: str) -> None:
    # f.txt: version 1 by a, version 2 by b. Readers take the highest live version.
    first = base.event("a", "effect.intent")

    def tamper(raw: sqlite3.Connection) -> None:
        if how == "renumber":
            raw.execute("UPDATE versions SET version = 7 WHERE event = ?", (first.id,))
        else:
            raw.execute("DELETE FROM versions WHERE event = ?", (first.id,))
    report = verify_tampered(base, (), tamper)
    assert report.first_bad is not None
    assert any("'f.txt'" in p and "commit order" in p for p in report.problems), report.problems


# -- effect rows (rollback runs the undo a row says) ----------------------------------

@pytest.mark.parametrize("erased", [True, False], ids=["erased", "kept"])
@pytest.mark.parametrize(("column", "edit"), [
    ("undo", lambda undo: {**undo, "arguments": {**undo["arguments"], "path": "../outside"}}),
    ("arguments", lambda args: {**args, "content": "forged\n"}),
    ("result", lambda result: "forged"),
], ids=["undo", "arguments", "result"])
def test_a_forged_effect_row_is_found(base: Base, erased: bool, column: str,
                                      edit: Callable[[Any], Any]) -> None:
    intent = base.event("a", "effect.intent")
    done = base.event("a", "effect.done")
    report = verify_tampered(base, (intent, done) if erased else (),
                             json_column("effects", column, "id", intent.id, edit))
    assert report.first_bad is not None, f"effect {column} forged, verify says ok"
    assert f"effect {intent.id}" in report.first_bad


# -- any erasure, any forged cell ---------------------------------------------------

def _erase_raw(raw: sqlite3.Connection, events: list[Event]) -> None:
    """What SQLiteStore.erase_payload does, for many events in one transaction."""
    raw.executemany("UPDATE events SET payload_hash = ?, payload = NULL WHERE id = ?",
                    [(bytes.fromhex(e.payload_hash), ulid_bytes(e.id)) for e in events])


def _forged(value: Any) -> Any:
    """A different value of the same storage class (JSON stays JSON)."""
    if isinstance(value, int):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if value is None:
        return orjson.dumps("forged")
    decoded = orjson.loads(value) if value[:1] in b'{["' else None
    if decoded is None:
        return bytes(value) + b" "  # a checkpoint body that is not JSON: still changed
    return orjson.dumps({"forged": decoded}, option=orjson.OPT_SORT_KEYS)


CELLS = {  # what the audit holds to the events, per table (statuses change legitimately)
    "messages": ("id", ("recipient", "topic", "body", "sender", "epoch", "step")),
    "effects": ("id", ("tool", "idx", "effect", "idempotent", "arguments", "result", "undo",
                       "key", "run", "epoch", "step")),
    "versions": ("n", ("key", "event", "run", "epoch", "step", "version")),
    "board": ("n", ("value",)),
    "files": ("n", ("hash",)),
    "checkpoints": ("rowid", ("body",)),
}


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_any_forged_cell_is_found_whatever_was_erased(base: Base, data: st.DataObject) -> None:
    everything = [e for evs in base.events.values() for e in evs]
    erased = data.draw(st.lists(st.sampled_from(everything), unique_by=lambda e: e.id),
                       label="erased")
    which = data.draw(st.sampled_from(sorted(CELLS)), label="table")
    key, columns = CELLS[which]
    column = data.draw(st.sampled_from(columns), label="column")
    table, where = {"board": ("versions", "ns LIKE 'board:%'"),
                    "files": ("versions", "ns LIKE 'file:%'")}.get(which, (which, "1=1"))
    raw = sqlite3.connect(base.path)
    try:
        rows = raw.execute(f"SELECT {key}, {column} FROM {table} WHERE {where} "  # noqa: S608
                           f"ORDER BY {key}").fetchall()
    finally:
        raw.close()
    row_key, old = data.draw(st.sampled_from(rows), label="row")

    def tamper(raw: sqlite3.Connection) -> None:
        _erase_raw(raw, erased)
        # A version number far off: next to it could clash with the key's unique index.
        new = old + 1000 if column == "version" else _forged(old)
        raw.execute(f"UPDATE {table} SET {column} = ? WHERE {key} = ?",  # noqa: S608
                    (new, row_key))
    report = verify_tampered(base, (), tamper)
    assert not report.ok, f"{table}.{column} of {row_key} forged, verify says ok"


# -- a payload changed alone ---------------------------------------------------------

@pytest.mark.parametrize(("name", "kind"), [
    ("a", "step.started"), ("a", "message.sent"), ("b", "message.received"),
    ("a", "effect.done"), ("b", "effect.done"), ("a", "blackboard.write")])
def test_a_changed_payload_is_named_and_nothing_else_is_blamed(base: Base, name: str,
                                                               kind: str) -> None:
    # The payload changes, its stored hash does not: the event is named, and the links
    # and rows that follow from it are not reported as changed too.
    e = base.event(name, kind)
    tamper = json_column("events", "payload", "id", _id_bytes(e), lambda p: {**p, "x": 1})
    report = verify_tampered(base, (), tamper)
    assert report.problems == [
        f"run {e.run} event #{e.seq} ({e.kind}, id {e.id}): hash mismatch (a field or the "
        "payload of this event, or its predecessor, was changed)"]


def _id_bytes(e: Event) -> bytes:
    return ulid_bytes(e.id)


# -- the seal itself -----------------------------------------------------------------

def _set_seal(e: Event, value: bytes | None) -> Tamper:
    return lambda raw: raw.execute("UPDATE events SET seal = ? WHERE id = ?",
                                   (value, ulid_bytes(e.id)))


def _flip_last_byte(raw: sqlite3.Connection, e: Event) -> None:
    seal = bytes(raw.execute("SELECT seal FROM events WHERE id = ?",
                             (ulid_bytes(e.id),)).fetchone()[0])
    _set_seal(e, seal[:-1] + bytes([seal[-1] ^ 1]))(raw)


@pytest.mark.parametrize("how", ["flip-a-byte", "remove", "add-to-an-unsealed-event",
                                 "not-a-seal"])
@pytest.mark.parametrize("erased", [True, False], ids=["erased", "kept"])
def test_a_changed_seal_is_found_and_names_its_event(base: Base, how: str, erased: bool) -> None:
    e = (base.event("b", "blackboard.read") if how == "add-to-an-unsealed-event"
         else base.event("a", "message.sent"))
    tamper: Tamper = {
        "flip-a-byte": lambda raw: _flip_last_byte(raw, e),
        "remove": _set_seal(e, None),
        "add-to-an-unsealed-event": _set_seal(e, bytes([2]) + bytes(32)),
        "not-a-seal": _set_seal(e, b"\x02short"),
    }[how]
    report = verify_tampered(base, (e,) if erased else (), tamper)
    assert report.first_bad is not None
    assert f"run {e.run} event #{e.seq}" in report.first_bad, report.problems
