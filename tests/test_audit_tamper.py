"""verify_store against a real store that someone has tampered with, byte by byte.

One store is built the way tether builds it (start_run, then fenced RunJournal
commits, some alone and some grouped), closed, and copied afresh for every
tampering, which is done with a plain sqlite3 connection as an intruder would.
"""

from __future__ import annotations

import random
import shutil
import sqlite3
import string
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tether.audit import VerifyReport, verify_store
from tether.core.clock import FixedClock
from tether.core.events import Chain, Event
from tether.core.ids import UlidSource, ulid_bytes
from tether.runtime.agent import StepAgent
from tether.runtime.journal import RunJournal
from tether.runtime.runs import start_run
from tether.store.rows import time_us as _time_us
from tether.store.sqlite import SQLiteStore

Tamper = Callable[[sqlite3.Connection], Any]

T0 = 1_700_000_000.0
# payload_hash is stored only once a payload is erased (see the erasure tests below).
COLUMNS = ("id", "epoch", "step", "kind", "time", "actor", "causes", "payload", "hash")
# id is kept as the 16 bytes of its ULID, time as integer microseconds.
TEXT, INTEGER, JSON = {"kind", "actor"}, {"epoch", "step", "time"}, {"causes", "payload"}
PRINTABLE = string.ascii_letters + string.digits + string.punctuation + " "


@dataclass(frozen=True)
class Base:
    """The untouched store (closed) and what was committed to it."""

    path: Path
    events: dict[str, list[Event]]
    batches: int

    @property
    def runs(self) -> list[str]:
        return sorted(self.events)

    def pick(self, where: str) -> Event:
        """The first, a middle or the last event of the second run."""
        events = self.events[self.runs[1]]
        return {"first": events[0], "middle": events[len(events) // 2], "last": events[-1]}[where]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Base:
    path = tmp_path_factory.mktemp("audit") / "tether.db"
    clock = FixedClock(T0)
    rng = random.Random(7)
    ids = UlidSource(clock.now, lambda: rng.getrandbits(80))
    agent = StepAgent(lambda ctx, state: None, name="auditee")
    store = SQLiteStore(path)
    try:
        journals = []
        for i in range(3):
            rid = start_run(store, agent, agent_ref="tests:auditee", goal=f"goal {i}", clock=clock,
                            ids=ids, state={"notes": [f"start {i}"]})
            row = store.get_run(rid)
            assert row is not None
            journals.append(RunJournal(store, row, store.acquire(rid, "w1", 600, time.time()),
                                       ids, clock.now))
            clock.advance(1)
        last: dict[int, str] = {}
        batches = 3
        for step in range(1, 5):
            for i, j in enumerate(journals):
                started = j.append("step.started", {"step": step}, step=step, actor="system")
                cited = (started.id, last[i - 1]) if i and i - 1 in last else (started.id,)
                j.append("model.called", {"text": f"run {i} thinks at step {step}", "tokens": 40 + i,
                                          "nested": {"score": step / 4, "tags": ["a", "b"]}},
                         step=step, actor="agent:auditee", causes=cited)
                done = j.append("step.finished", {"ok": True}, step=step, causes=(started.id,))
                last[i] = done.id  # its fold moves the row's step on
                clock.advance(0.25)
            if step % 2:  # each run commits alone
                for j in journals:
                    j.flush_sync()
                batches += len(journals)
            else:  # group commit: one batch names every run
                assert store.commit([j.take() for j in journals]) == [None] * len(journals)
                batches += 1
        events = {rid: store.events(rid) for rid in store.all_run_ids()}
    finally:
        store.close()
    assert not path.with_name(path.name + "-wal").exists()  # everything is in the main file
    return Base(path, events, batches)


def verify_tampered(base: Base, tamper: Tamper) -> VerifyReport:
    """Copy the base store, let ``tamper`` change it with a raw connection, verify the copy."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "tampered.db"
        shutil.copyfile(base.path, path)
        raw = sqlite3.connect(path)
        try:
            with raw:
                tamper(raw)
        finally:
            raw.close()
        store = SQLiteStore(path, create=False)
        try:
            return verify_store(store)
        finally:
            store.close()


def set_column(e: Event, column: str, value: object, *, cast: str = "") -> Tamper:
    """Overwrite one column of one stored event (``cast`` keeps raw bytes as TEXT or BLOB)."""
    assert column in COLUMNS
    target = f"CAST(? AS {cast})" if cast else "?"
    sql = (f"UPDATE events SET {column} = {target} "  # noqa: S608 -- our columns
           "WHERE rk = (SELECT rk FROM run_keys WHERE id = ?) AND seq = ?")
    return lambda raw: raw.execute(sql, (value, e.run, e.seq))


def stored(base: Base, e: Event, column: str) -> Any:
    assert column in COLUMNS
    raw = sqlite3.connect(base.path)
    try:
        return raw.execute(f"SELECT {column} FROM events "  # noqa: S608 -- ours
                           "WHERE rk = (SELECT rk FROM run_keys WHERE id = ?) AND seq = ?",
                           (e.run, e.seq)).fetchone()[0]
    finally:
        raw.close()


def is_json(data: bytes) -> bool:
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return True


def names(report: VerifyReport, e: Event) -> bool:
    return report.first_bad is not None and f"run {e.run} event #{e.seq}" in report.first_bad


# -- the untouched store -------------------------------------------------------

def test_an_untouched_store_verifies(base: Base) -> None:
    seen: list[tuple[int, int]] = []
    store = SQLiteStore(base.path, create=False)
    try:
        report = verify_store(store, progress=lambda done, total: seen.append((done, total)))
    finally:
        store.close()
    assert report.ok, report.problems
    assert report.first_bad is None
    assert report.runs == 3
    assert report.events == sum(len(v) for v in base.events.values()) > 3 * 13
    assert report.batches == base.batches
    assert seen == [(1, 3), (2, 3), (3, 3)]


def test_a_backup_verifies(base: Base, tmp_path: Path) -> None:
    store = SQLiteStore(base.path, create=False)
    try:
        store.backup(str(tmp_path / "copy.db"))
    finally:
        store.close()
    copy = SQLiteStore(tmp_path / "copy.db", create=False)
    try:
        assert verify_store(copy).ok
    finally:
        copy.close()


# -- a changed byte in an event ------------------------------------------------

def changed_byte(value: Any, column: str) -> Any:
    """``value`` with one byte changed, still decodable (valid UTF-8 text, valid JSON)."""
    if column in INTEGER:
        return value ^ 1
    data = value.encode() if column in TEXT else bytes(value)
    for pos in reversed(range(len(data))):
        if not chr(data[pos]).isalnum():
            continue
        new = data[:pos] + (b"x" if data[pos:pos + 1] != b"x" else b"y") + data[pos + 1:]
        if column not in JSON or is_json(new):
            return new.decode() if column in TEXT else new
    raise AssertionError(f"no byte of {column} can change and stay decodable: {value!r}")


@pytest.mark.parametrize("where", ["first", "middle", "last"])
@pytest.mark.parametrize("column", COLUMNS)
def test_a_changed_byte_in_any_column_is_found_and_named(base: Base, column: str, where: str) -> None:
    e = base.pick(where)
    if column == "causes" and not e.causes:
        e = base.pick("middle")  # an empty list has no byte to change that stays JSON
    report = verify_tampered(base, set_column(e, column, changed_byte(stored(base, e, column), column)))
    assert not report.ok
    assert names(report, e), report.problems


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_any_changed_byte_of_any_event_is_found_and_named(base: Base, data: st.DataObject) -> None:
    run = data.draw(st.sampled_from(base.runs), label="run")
    e = data.draw(st.sampled_from(base.events[run]), label="event")
    column = data.draw(st.sampled_from(COLUMNS), label="column")
    old = stored(base, e, column)
    if column in INTEGER:
        new: Any = old ^ (1 << data.draw(st.integers(0, 7), label="bit"))
    else:
        raw = old.encode() if column in TEXT else bytes(old)
        pos = data.draw(st.integers(0, len(raw) - 1), label="position")
        if column in TEXT or column in JSON:  # stays decodable: see the undecodable tests below
            byte = ord(data.draw(st.sampled_from(PRINTABLE), label="char"))
        else:
            byte = data.draw(st.integers(0, 255), label="byte")
        assume(byte != raw[pos])
        changed = raw[:pos] + bytes([byte]) + raw[pos + 1:]
        assume(column not in JSON or is_json(changed))
        new = changed.decode() if column in TEXT else changed
    report = verify_tampered(base, set_column(e, column, new))
    assert not report.ok
    assert names(report, e), report.problems


@pytest.mark.parametrize(("column", "position", "byte"), [
    ("payload", 0, b"("),  # {"nested":... -> ("nested":...
    ("causes", -1, b")"),  # ["01H..."] -> ["01H...")
    ("actor", -1, b"\xff"),  # agent:auditee -> agent:audite\xff, not UTF-8
], ids=["payload-not-json", "causes-not-json", "actor-not-utf8"])
def test_a_changed_byte_that_breaks_decoding_is_reported_not_raised(
        base: Base, column: str, position: int, byte: bytes) -> None:
    e = next(e for e in base.events[base.runs[1]] if e.kind == "model.called")
    old = stored(base, e, column)
    data = bytearray(old.encode() if column in TEXT else old)
    data[position:position + 1 or None] = byte
    # CAST keeps the bytes as they are, as a hex editor would leave them.
    report = verify_tampered(base, set_column(e, column, bytes(data),
                                              cast="TEXT" if column in TEXT else "BLOB"))
    assert not report.ok
    assert names(report, e), report.problems


# -- removed, inserted and reordered events ------------------------------------

@pytest.mark.parametrize("count", [1, 3, 7])
def test_deleting_the_last_events_of_a_run_is_found_as_truncation(base: Base, count: int) -> None:
    run = base.runs[0]
    keep = len(base.events[run]) - count
    report = verify_tampered(base, lambda raw: raw.execute(
        "DELETE FROM events WHERE rk = (SELECT rk FROM run_keys WHERE id = ?) AND seq > ?",
        (run, keep)))
    assert not report.ok
    assert report.first_bad is not None
    assert f"{run}#{keep + 1}" in report.first_bad
    assert "truncated" in report.first_bad


@pytest.mark.parametrize("which", [0, 1, 2])
def test_deleting_a_whole_run_is_found(base: Base, which: int) -> None:
    run = base.runs[which]
    report = verify_tampered(base, lambda raw: raw.execute(
        "DELETE FROM events WHERE rk = (SELECT rk FROM run_keys WHERE id = ?)", (run,)))
    assert not report.ok
    assert report.first_bad is not None
    assert f"run {run}" in report.first_bad
    assert "deleted" in report.first_bad


def test_deleting_an_event_inside_a_run_is_found(base: Base) -> None:
    e = base.pick("middle")
    report = verify_tampered(base, lambda raw: raw.execute(
        "DELETE FROM events WHERE rk = (SELECT rk FROM run_keys WHERE id = ?) AND seq = ?",
        (e.run, e.seq)))
    assert not report.ok
    assert report.first_bad is not None
    assert f"run {e.run} event #{e.seq + 1}" in report.first_bad


def test_swapping_two_events_is_found(base: Base) -> None:
    e = base.pick("middle")

    def swap(raw: sqlite3.Connection) -> None:
        for a, b in ((e.seq, -1), (e.seq + 1, e.seq), (-1, e.seq + 1)):
            raw.execute("UPDATE events SET seq = ? WHERE rk = (SELECT rk FROM run_keys WHERE id = ?) "
                        "AND seq = ?", (b, e.run, a))

    report = verify_tampered(base, swap)
    assert not report.ok
    assert names(report, e), report.problems


def test_an_event_forged_with_a_valid_chain_is_found_by_the_batch_chain(base: Base) -> None:
    # The intruder knows the hashing and extends the run's chain correctly.
    head = base.events[base.runs[2]][-1]
    forged = Chain(head.run, head.seq, head.hash).make(
        id="01ZZZZZZZZZZZZZZZZZZZZZZZZ", kind="tool.called", time=head.time, epoch=0,
        step=head.step, actor="agent:auditee", payload={"text": "transfer everything"})
    row = (forged.run, forged.seq, ulid_bytes(forged.id), forged.epoch, forged.step, forged.kind,
           _time_us(forged.time),
           forged.actor, b"[]", orjson.dumps(forged.payload, option=orjson.OPT_SORT_KEYS),
           bytes.fromhex(forged.payload_hash), bytes.fromhex(forged.hash))
    report = verify_tampered(base, lambda raw: raw.execute(
        "INSERT INTO events(rk, seq, id, epoch, step, kind, time, actor, causes, payload, "
        "payload_hash, hash) "
        "VALUES((SELECT rk FROM run_keys WHERE id = ?),?,?,?,?,?,?,?,?,?,?,?)",
        row))
    assert not report.ok
    assert report.first_bad is not None
    assert f"run {forged.run}" in report.first_bad
    assert "no commit batch" in report.first_bad
    assert str(forged.seq) in report.first_bad


# -- the batch chain -----------------------------------------------------------

def _edit_entries(raw: sqlite3.Connection, n: int, edit: Callable[[list[list[Any]]], None]) -> None:
    entries = orjson.loads(raw.execute("SELECT entries FROM batches WHERE n = ?", (n,)).fetchone()[0])
    edit(entries)
    raw.execute("UPDATE batches SET entries = ? WHERE n = ?", (orjson.dumps(entries), n))


def _flip_last_byte(column: str, n: int) -> Tamper:
    select, update = {
        "hash": ("SELECT hash FROM batches WHERE n = ?", "UPDATE batches SET hash = ? WHERE n = ?"),
    }[column]

    def tamper(raw: sqlite3.Connection) -> None:
        value = bytes(raw.execute(select, (n,)).fetchone()[0])
        raw.execute(update, (value[:-1] + bytes([value[-1] ^ 1]), n))
    return tamper


BATCH_TAMPERING: dict[str, Callable[[Base], Tamper]] = {
    "delete-first": lambda b: lambda raw: raw.execute("DELETE FROM batches WHERE n = 1"),
    "delete-middle": lambda b: lambda raw: raw.execute("DELETE FROM batches WHERE n = ?",
                                                       (b.batches // 2,)),
    "delete-last": lambda b: lambda raw: raw.execute("DELETE FROM batches WHERE n = ?", (b.batches,)),
    "change-hash": lambda b: _flip_last_byte("hash", b.batches // 2),
    "renumber": lambda b: lambda raw: raw.execute("UPDATE batches SET n = n + 1000 WHERE n = ?",
                                                  (b.batches // 2,)),
    "change-last-hash": lambda b: _flip_last_byte("hash", b.batches),
    "shorten-a-range": lambda b: lambda raw: _edit_entries(
        raw, b.batches, lambda es: es[0].__setitem__(2, es[0][2] - 1)),
    "drop-an-entry": lambda b: lambda raw: _edit_entries(raw, b.batches, lambda es: es.pop()),
    "swap-two": lambda b: lambda raw: raw.executescript(
        "UPDATE batches SET n = -1 WHERE n = 4; UPDATE batches SET n = 4 WHERE n = 5; "
        "UPDATE batches SET n = 5 WHERE n = -1;"),
}


@pytest.mark.parametrize("tampering", list(BATCH_TAMPERING))
def test_a_deleted_or_altered_batch_is_found(base: Base, tampering: str) -> None:
    report = verify_tampered(base, BATCH_TAMPERING[tampering](base))
    assert not report.ok
    assert report.first_bad is not None
    assert "batch" in report.first_bad


# -- erasure -------------------------------------------------------------------

def _erase(raw: sqlite3.Connection, e: Event) -> None:
    """What SQLiteStore.erase_payload does: keep the payload's hash, drop the payload."""
    raw.execute("UPDATE events SET payload_hash = ?, payload = NULL WHERE id = ?",
                (bytes.fromhex(e.payload_hash), ulid_bytes(e.id)))


def test_erase_payload_keeps_the_chain(base: Base, tmp_path: Path) -> None:
    path = tmp_path / "erase.db"
    shutil.copyfile(base.path, path)
    store = SQLiteStore(path, create=False)
    try:
        e = base.pick("middle")
        store.erase_payload(e.id)
        store.erase_payload(e.id)  # twice is once
        got = store.event(e.id)
        assert got is not None and got.payload is None and got.payload_hash == e.payload_hash
        assert verify_store(store).ok
    finally:
        store.close()


def test_an_erased_payload_still_verifies(base: Base) -> None:
    e = base.pick("middle")
    report = verify_tampered(base, lambda raw: _erase(raw, e))
    assert report.ok, report.problems


def test_erasing_every_payload_of_a_run_still_verifies(base: Base, tmp_path: Path) -> None:
    run = base.runs[1]
    path = tmp_path / "erased.db"
    shutil.copyfile(base.path, path)
    raw = sqlite3.connect(path)
    with raw:
        for e in base.events[run]:
            _erase(raw, e)
    raw.close()
    store = SQLiteStore(path, create=False)
    try:
        assert verify_store(store).ok
        erased = store.events(run)
        assert [e.payload for e in erased] == [None] * len(erased)
        assert [(e.payload_hash, e.hash) for e in erased] == \
            [(e.payload_hash, e.hash) for e in base.events[run]]
    finally:
        store.close()


def test_an_erased_payload_with_a_changed_hash_is_found(base: Base) -> None:
    e = base.pick("middle")
    report = verify_tampered(base, lambda raw: (
        _erase(raw, e),
        raw.execute("UPDATE events SET payload_hash = ? WHERE id = ?",
                    (bytes(32), ulid_bytes(e.id)))))
    assert not report.ok
    assert names(report, e), report.problems


def test_a_changed_checkpoint_chunk_is_found(tmp_path: Path) -> None:
    from tether import StepAgent, Worker, start_run

    async def grow(ctx: Any, state: dict[str, Any]) -> Any:
        state.setdefault("log", []).append(f"entry {len(state['log'])}" * 4)
        return None if len(state["log"]) < 140 else Done()

    import asyncio

    from tether import Done
    store = SQLiteStore(tmp_path / "chunks.db")
    agent = StepAgent(grow, name="grow")
    start_run(store, agent, agent_ref="grow", goal="g", state={})
    asyncio.run(Worker(store, agents={"grow": agent}).run(until_idle=True))
    assert verify_store(store).ok
    store.close()
    raw = sqlite3.connect(tmp_path / "chunks.db")
    with raw:
        assert raw.execute("UPDATE chunks SET body = CAST(replace(CAST(body AS TEXT), 'entry 7', "
                           "'entry 8') AS BLOB) WHERE rowid = 1").rowcount == 1
    raw.close()
    store = SQLiteStore(tmp_path / "chunks.db")
    try:
        report = verify_store(store)
    finally:
        store.close()
    assert not report.ok
    assert "does not match its hash" in (report.first_bad or "")


def _swarm_store(tmp_path: Path) -> Path:
    """Two runs linked by a message, a blackboard read and a file read."""
    import asyncio

    from tether import AwaitMessages, Done, Worker, step_agent
    from tether.tools.files import fs_read, fs_write

    @step_agent(name="writer", tools=[fs_write])
    async def writer(ctx: Any, state: dict[str, Any]) -> Any:
        await ctx.call("fs_write", path="a.txt", content="hello\n")
        await ctx.board.set("k", 1)
        await ctx.send("reader", "go")
        return Done()

    @step_agent(name="reader", tools=[fs_read])
    async def reader(ctx: Any, state: dict[str, Any]) -> Any:
        if not await ctx.receive():
            return AwaitMessages()
        await ctx.call("fs_read", path="a.txt")
        await ctx.board.get("k")
        return Done()

    path = tmp_path / "swarm.db"
    s = SQLiteStore(path)
    ws = tmp_path / "ws"
    start_run(s, reader, agent_ref="reader", goal="r", name="reader", workspace=ws)
    start_run(s, writer, agent_ref="writer", goal="w", name="writer", workspace=ws)
    asyncio.run(Worker(s, agents={"reader": reader, "writer": writer}).run(until_idle=True))
    assert {x.kind for x in s.links()} == {"message", "board", "file"}
    s.close()
    return path


def test_a_deleted_or_forged_provenance_link_is_found(tmp_path: Path) -> None:
    path = _swarm_store(tmp_path)
    s = SQLiteStore(path)
    assert verify_store(s).ok
    s.close()
    with sqlite3.connect(path) as c:
        c.execute("DELETE FROM links WHERE kind = 'board'")
    s = SQLiteStore(path)
    rep = verify_store(s)
    assert not rep.ok and "1 link(s) missing" in rep.problems[0] and "board" in rep.problems[0]
    s.close()
    with sqlite3.connect(path) as c:
        # Forge two: a board link copied from the file link, and the message link moved to a
        # later step of the sender.
        c.execute("INSERT INTO links SELECT src_rk, src_epoch, src_step, src_event, dst_rk, "
                  "dst_epoch, dst_step, dst_event, 'board' FROM links WHERE kind = 'file'")
        c.execute("UPDATE links SET src_step = src_step + 5 WHERE kind = 'message'")
    s = SQLiteStore(path)
    rep = verify_store(s)
    assert any("2 link(s) not implied by any event" in p for p in rep.problems)
    assert any("2 link(s) missing" in p for p in rep.problems)
    s.close()


@pytest.mark.parametrize(("sql", "says"), [
    ("UPDATE messages SET body = '\"forged\"'", "does not match its message.sent event"),
    ("UPDATE messages SET recipient = 'someone-else'", "does not match its message.sent event"),
    ("UPDATE versions SET value = '2' WHERE ns LIKE 'board:%'", "does not match the event"),
    ("UPDATE versions SET run = 'someone-else' WHERE ns LIKE 'file:%'",
     "does not match the event"),
])
def test_a_changed_message_or_version_row_is_found(tmp_path: Path, sql: str, says: str) -> None:
    path = _swarm_store(tmp_path)
    with sqlite3.connect(path) as c:
        c.execute(sql)
    s = SQLiteStore(path)
    rep = verify_store(s)
    assert not rep.ok and any(says in p for p in rep.problems), rep.problems
    s.close()


@pytest.mark.parametrize("entries", [b"\x00", b"[[1, 2]]", b'{"a": 1}', b"[[1, 2, null]]"])
def test_a_batch_row_that_is_not_one_is_named_not_raised(base: Base, entries: bytes) -> None:
    """A forged batch appended after the last: verify names it and reports, and the rest of
    the report stands (found by an adversarial review: a JSONDecodeError traceback)."""
    rep = verify_tampered(base, lambda c: c.execute(
        "INSERT INTO batches(n, hash, entries) SELECT max(n) + 1, x'00', ? FROM batches",
        (entries,)))
    assert not rep.ok
    assert any(f"batch {base.batches + 1}" in p and "cannot be" in p for p in rep.problems), \
        rep.problems
