"""Signed checkpoints on a real SQLite store, through the CLI: keygen, seal, verify --key,
prove, check-proof, export; and tampering, naive (the chains catch it) and thorough (the
chains and batches rewritten to match: only the signed checkpoints catch it)."""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
import sqlite3
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tether.cli.app import app
from tether.core.canonical import dumps
from tether.core.clock import FixedClock
from tether.core.events import BATCH_GENESIS, batch_hash, event_hash, payload_digest
from tether.core.ids import UlidSource
from tether.core.merkle import Tree
from tether.core.note import Signer, sign_note
from tether.core.tlog import Checkpoint
from tether.runtime.agent import StepAgent
from tether.runtime.journal import RunJournal
from tether.runtime.runs import start_run
from tether.sealing import load_signer
from tether.store.sqlite import SQLiteStore

pytestmark = pytest.mark.raw_rows  # the intruder writes rows itself
runner = CliRunner()
T0 = 1_700_000_000.0


def tether(*args: str) -> tuple[int, str]:
    res = runner.invoke(app, list(args))
    return res.exit_code, res.output + (res.stderr if res.stderr_bytes else "")


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three runs of four steps, committed alone and grouped; closed."""
    path = tmp_path_factory.mktemp("signed") / "tether.db"
    clock = FixedClock(T0)
    rng = random.Random(11)
    ids = UlidSource(clock.now, lambda: rng.getrandbits(80))
    agent = StepAgent(lambda ctx, state: None, name="sealed")
    store = SQLiteStore(path)
    try:
        journals = []
        for i in range(3):
            rid = start_run(store, agent, agent_ref="tests:sealed", goal=f"goal {i}",
                            clock=clock, ids=ids, state={"n": i})
            row = store.get_run(rid)
            assert row is not None
            journals.append(RunJournal(store, row, store.acquire(rid, "w1", 600, time.time()),
                                       ids, clock.now))
        for step in range(1, 5):
            for i, j in enumerate(journals):
                j.append("step.started", {"step": step}, step=step, actor="system")
                j.append("model.called", {"text": f"run {i} thinks at step {step}",
                                          "tokens": 40 + i}, step=step, actor="agent:sealed")
                clock.advance(0.25)
            if step % 2:
                for j in journals:
                    j.flush_sync()
            else:
                assert store.commit([j.take() for j in journals]) == [None] * len(journals)
    finally:
        store.close()
    return path


@pytest.fixture
def db(base: Path, tmp_path: Path) -> Path:
    path = tmp_path / "copy.db"
    shutil.copyfile(base, path)
    return path


@pytest.fixture
def key(tmp_path: Path) -> str:
    code, out = tether("audit", "keygen", str(tmp_path / "op"), "--name", "ops.example/tether")
    assert code == 0, out
    return str(tmp_path / "op")


def raw(db: Path, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    con = sqlite3.connect(db)
    try:
        with con:
            return con.execute(sql, args).fetchall()
    finally:
        con.close()


def seal(db: Path, key: str) -> dict[str, Any]:
    code, out = tether("--store", str(db), "audit", "seal", "--key", key + ".key", "--json")
    assert code == 0, out
    return dict(json.loads(out))


def verify(db: Path, key: str | None) -> tuple[int, dict[str, Any]]:
    args = ["--store", str(db), "audit", "verify", "--json"]
    if key:
        args += ["--key", key + ".pub"]
    code, out = tether(*args)
    return code, dict(json.loads(out))


def events(db: Path) -> list[tuple[str, int, int]]:
    """(run, seq, rowid) of every event, in rowid order."""
    return [(r[0], r[1], r[2]) for r in raw(
        db, "SELECT k.id, e.seq, e.rowid FROM events e JOIN run_keys k ON k.rk = e.rk "
            "ORDER BY e.rowid")]


def add_events(db: Path, run_index: int = 0, n: int = 3) -> None:
    """More events on one run after a seal (a later commit)."""
    store = SQLiteStore(db, create=False)
    try:
        rid = sorted(store.all_run_ids())[run_index]
        row = store.get_run(rid)
        assert row is not None
        clock = FixedClock(T0 + 100)
        j = RunJournal(store, row, store.acquire(rid, "w2", 600, time.time() + 10_000),
                       UlidSource(clock.now), clock.now)
        for k in range(n):
            j.append("model.called", {"text": f"later {k}", "tokens": 1}, step=row.step,
                     actor="agent:sealed")
        j.flush_sync()
    finally:
        store.close()


# -- keys ------------------------------------------------------------------------------

def test_keygen_writes_a_private_key_only_the_owner_reads(key: str) -> None:
    k, p = Path(key + ".key"), Path(key + ".pub")
    assert stat.S_IMODE(k.stat().st_mode) == 0o600
    assert k.read_text().startswith("PRIVATE+KEY+ops.example/tether+")
    assert p.read_text().startswith("ops.example/tether+")
    assert load_signer(k).verifier.encode() == p.read_text().strip()
    code, out = tether("audit", "keygen", key)  # never overwritten
    assert code == 2 and "exists" in out
    assert k.read_text().startswith("PRIVATE+KEY+ops.example/tether+")


def test_keys_are_never_journaled(db: Path, key: str) -> None:
    seal(db, key)
    # PRIVATE+KEY+NAME+HASH+BASE64: the key's base64 may hold "+" itself, so split from the left.
    secret = Path(key + ".key").read_text().strip().split("+", 4)[4]
    assert len(secret) >= 40
    con = sqlite3.connect(db)
    try:
        dump = "\n".join(con.iterdump())
    finally:
        con.close()
    assert secret not in dump


def test_seal_with_a_public_key_or_a_missing_key_is_a_clear_error(db: Path, key: str) -> None:
    code, out = tether("--store", str(db), "audit", "seal", "--key", key + ".pub")
    assert code == 2 and "sealing needs PREFIX.key" in out and "Traceback" not in out
    code, out = tether("--store", str(db), "audit", "seal", "--key", key + ".nope")
    assert code == 2 and "no such file" in out and "keygen" in out


# -- seal and verify ---------------------------------------------------------------------

def test_seal_then_verify_with_the_key(db: Path, key: str) -> None:
    first = seal(db, key)
    assert first["new"] and first["n"] == 1 and first["size"] == len(events(db))
    assert first["note"].startswith(f"ops.example/tether\n{first['size']}\n")
    assert "\n\n\u2014 ops.example/tether " in first["note"]
    again = seal(db, key)
    assert not again["new"] and again["n"] == 1
    add_events(db)
    second = seal(db, key)
    assert second["n"] == 2 and second["size"] == first["size"] + 3
    code, rep = verify(db, key)
    assert code == 0, rep
    assert rep["checkpoints"] == 2 and rep["sealed"] == second["size"] and rep["unsealed"] == 0
    assert rep["signatures_checked"]


def test_verify_without_a_key_says_signatures_were_not_checked(db: Path, key: str) -> None:
    seal(db, key)
    code, out = tether("--store", str(db), "audit", "verify")
    assert code == 0 and "signatures NOT checked" in " ".join(out.split())


def test_verify_with_another_key_names_the_bad_signature(db: Path, key: str,
                                                         tmp_path: Path) -> None:
    seal(db, key)
    tether("audit", "keygen", str(tmp_path / "other"))
    code, rep = verify(db, str(tmp_path / "other"))
    assert code == 1
    assert "signed checkpoint 1" in rep["problems"][0]
    assert "no signature by key tether-other" in rep["problems"][0]


def test_a_changed_signed_note_is_a_bad_signature(db: Path, key: str) -> None:
    first = seal(db, key)
    # Claim a smaller tree: the root column and the note's root line both changed.
    forged = first["note"].replace(f"\n{first['size']}\n", f"\n{first['size'] - 1}\n")
    raw(db, "UPDATE signed_checkpoints SET note = ?, size = size - 1 WHERE n = 1", (forged,))
    code, rep = verify(db, key)
    assert code == 1 and "bad signature" in rep["problems"][0]


def test_a_deleted_checkpoint_is_named(db: Path, key: str) -> None:
    seal(db, key)
    add_events(db)
    seal(db, key)
    add_events(db, 1)
    seal(db, key)
    raw(db, "DELETE FROM signed_checkpoints WHERE n = 2")
    code, rep = verify(db, key)
    assert code == 1 and "signed checkpoint 3" in rep["problems"][0]
    assert "removed" in rep["problems"][0]


# -- naive tampering: the chains name it, and the seal refuses ------------------------------

def _target(db: Path) -> tuple[str, int]:
    """The fifth event of the second run (a model.called of step 2)."""
    runs = sorted({r for r, _, _ in events(db)})
    return runs[1], 5


def test_changed_payload_is_named_by_the_chain(db: Path, key: str) -> None:
    seal(db, key)
    run, seq = _target(db)
    raw(db, "UPDATE events SET payload = ? WHERE rk = (SELECT rk FROM run_keys WHERE id = ?) "
            "AND seq = ?", (dumps({"text": "forged", "tokens": 41}), run, seq))
    code, rep = verify(db, key)
    assert code == 1
    assert f"run {run}" in rep["problems"][0] and f"#{seq}" in rep["problems"][0]
    assert "payload" in rep["problems"][0]


def test_changed_event_hash_is_named_and_breaks_the_checkpoint(db: Path, key: str) -> None:
    seal(db, key)
    run, seq = _target(db)
    raw(db, "UPDATE events SET hash = randomblob(32) WHERE rk = (SELECT rk FROM run_keys "
            "WHERE id = ?) AND seq = ?", (run, seq))
    code, rep = verify(db, key)
    assert code == 1 and f"#{seq}" in rep["problems"][0]
    assert any("no longer hash to its signed root" in p for p in rep["problems"])
    code, out = tether("--store", str(db), "audit", "seal", "--key", key + ".key", "--full")
    assert code == 2 and "not signing" in out and "Traceback" not in out
    # A seal of the events since (the batches unchanged) hashes only those: it signs a tree
    # built on checkpoint 1's own frontier, so it extends the signed history, not the edit,
    # and verify still names the edit.
    add_events(db)
    sealed = seal(db, key)
    assert sealed["new"] and sealed["n"] == 2
    code, rep = verify(db, key)
    assert code == 1 and not any("does not extend" in p for p in rep["problems"])
    assert any("signed checkpoint 1" in p and "no longer hash to its signed root" in p
               for p in rep["problems"])


def test_deleted_event_is_named_and_breaks_the_checkpoint(db: Path, key: str) -> None:
    seal(db, key)
    run, seq = _target(db)
    raw(db, "DELETE FROM events WHERE rk = (SELECT rk FROM run_keys WHERE id = ?) AND seq = ?",
        (run, seq))
    code, rep = verify(db, key)
    assert code == 1 and "removed or inserted" in rep["problems"][0]
    assert any("signed checkpoint 1" in p for p in rep["problems"])
    for full in ([], ["--full"]):  # fewer events than the cache covers: everything is read
        code, out = tether("--store", str(db), "audit", "seal", "--key", key + ".key", *full)
        assert code == 2 and f"names event {run}#{seq}, which is missing" in out


def test_reordered_events_are_named(db: Path, key: str) -> None:
    seal(db, key)
    run, seq = _target(db)
    rk = "(SELECT rk FROM run_keys WHERE id = ?)"
    raw(db, f"UPDATE events SET seq = -1 WHERE rk = {rk} AND seq = ?", (run, seq))  # noqa: S608
    raw(db, f"UPDATE events SET seq = ? WHERE rk = {rk} AND seq = ?",  # noqa: S608
        (seq, run, seq + 1))
    raw(db, f"UPDATE events SET seq = ? WHERE rk = {rk} AND seq = -1",  # noqa: S608
        (seq + 1, run))
    code, rep = verify(db, key)
    assert code == 1 and f"run {run}" in rep["problems"][0]
    assert any("signed checkpoint 1" in p for p in rep["problems"])


def test_inserted_event_is_named(db: Path, key: str) -> None:
    seal(db, key)
    run, _ = _target(db)
    last = max(s for r, s, _ in events(db) if r == run)
    raw(db, "INSERT INTO events(rk, seq, id, epoch, step, kind, time, actor, causes, payload, "
            "payload_hash, hash, seal) SELECT rk, seq + 1, randomblob(16), epoch, step, kind, "
            "time, actor, causes, payload, payload_hash, randomblob(32), seal FROM events "
            "WHERE rk = (SELECT rk FROM run_keys WHERE id = ?) AND seq = ?", (run, last))
    code, rep = verify(db, key)
    assert code == 1
    assert any(f"run {run}" in p and "inserted outside tether" in p for p in rep["problems"])


def test_physical_row_order_does_not_matter(db: Path, key: str) -> None:
    """Commit order is the batch chain's, not the rowids': a VACUUM or a copy that moves rows
    changes nothing."""
    seal(db, key)
    raw(db, "CREATE TABLE t AS SELECT * FROM events ORDER BY rowid DESC")
    raw(db, "DELETE FROM events")
    raw(db, "INSERT INTO events SELECT * FROM t")
    raw(db, "DROP TABLE t")
    assert events(db)[0][1] != 1  # the rows are now in reverse order
    code, rep = verify(db, key)
    assert code == 0, rep


# -- thorough tampering: chains and batches rewritten; only the checkpoints know ---------------

def rewrite(db: Path, run: str, seq: int, payload: Any) -> None:
    """Change one event's payload and re-hash everything after it as tether would: the run's
    chain, its row's head, every batch. The chains then verify; the signed roots do not."""
    store = SQLiteStore(db, create=False)
    try:
        chain = store.events(run)
        con = store._conn()  # the intruder's own writes, in one transaction
        with store._tx():
            prev = chain[seq - 2].hash if seq > 1 else chain[0].prev
            for e in chain[seq - 1:]:
                p = payload if e.seq == seq else e.payload
                new = dataclasses.replace(e, payload=p, payload_hash=payload_digest(p),
                                          prev=prev, hash="")
                h = event_hash(new)
                con.execute("UPDATE events SET payload = ?, hash = ? WHERE seq = ? AND rk = "
                            "(SELECT rk FROM run_keys WHERE id = ?)",
                            (dumps(p), bytes.fromhex(h), e.seq, run))
                prev = h
            con.execute("UPDATE runs SET head = ? WHERE id = ?", (prev, run))
        hashes = {r: {e.seq: e.hash for e in store.events(r)} for r in store.all_run_ids()}
        with store._tx():
            prev = BATCH_GENESIS
            for b in list(store.batches()):
                listed = [(r, s, hashes[r][s]) for r, a, z in b.entries
                          for s in range(a, z + 1)]
                h = batch_hash(prev, listed)
                con.execute("UPDATE batches SET hash = ? WHERE n = ?", (bytes.fromhex(h), b.n))
                prev = h
    finally:
        store.close()


def test_a_rewritten_history_is_caught_by_the_signed_checkpoint(db: Path, key: str) -> None:
    seal(db, key)
    run, seq = _target(db)
    rewrite(db, run, seq, {"text": "nothing to see", "tokens": 41})
    code, rep = verify(db, None)
    assert code == 1
    assert rep["problems"] == [rep["problems"][0]]  # only the checkpoint knows
    assert "signed checkpoint 1" in rep["problems"][0]
    assert "no longer hash to its signed root" in rep["problems"][0]


def test_a_rewrite_between_seals_is_bounded_by_the_checkpoint_that_still_matches(
        db: Path, key: str) -> None:
    first = seal(db, key)
    add_events(db, 1, 4)
    seal(db, key)
    run = sorted({r for r, _, _ in events(db)})[1]
    last_seq = max(s for r, s, _ in events(db) if r == run)
    rewrite(db, run, last_seq, {"text": "edited later", "tokens": 1})
    code, rep = verify(db, key)
    assert code == 1 and len(rep["problems"]) == 1
    assert "signed checkpoint 2" in rep["problems"][0]
    assert f"numbers {first['size'] + 1} to" in rep["problems"][0]


def test_a_seal_after_a_rewrite_does_not_hide_it(db: Path, key: str) -> None:
    """The sealer refuses; and a checkpoint signed over the rewrite anyway (the key's holder
    going around the sealer) does not extend the one before: verify names it."""
    seal(db, key)
    run, seq = _target(db)
    rewrite(db, run, seq, {"text": "nothing to see", "tokens": 41})
    code, out = tether("--store", str(db), "audit", "seal", "--key", key + ".key")
    assert code == 2 and "no longer hash to signed checkpoint 1" in " ".join(out.split())
    signer = load_signer(key + ".key")
    store = SQLiteStore(db, create=False)
    try:
        tree = Tree.from_data(store.leaf_hashes())
        last = store.signed_checkpoints()[-1]
        body = Checkpoint(signer.name, tree.size + 0, tree.root())
        # The honest-looking proof from the old size: it cannot lead to the old root.
        store.add_signed_checkpoint(tree.size, tree.root().hex(),
                                    sign_note(body.text(), signer),
                                    [h.hex() for h in tree.consistency_proof(last.size - 1)]
                                    if last.size > 1 else [], T0, after=last.n)
    finally:
        store.close()
    code, rep = verify(db, key)
    assert code == 1
    assert any("signed checkpoint 2 (size" in p and "does not extend checkpoint 1" in p
               for p in rep["problems"]), rep["problems"]


def test_truncation_with_its_batch_is_caught_by_the_checkpoint(db: Path, key: str) -> None:
    """The last commit removed whole (its events and its batch): the chains still link."""
    seal(db, key)
    add_events(db, 2, 2)
    seal(db, key)
    n, entries = raw(db, "SELECT n, entries FROM batches ORDER BY n DESC LIMIT 1")[0]
    rk, first, last = json.loads(entries)[0]
    raw(db, "DELETE FROM events WHERE rk = ? AND seq BETWEEN ? AND ?", (rk, first, last))
    raw(db, "DELETE FROM batches WHERE n = ?", (n,))
    code, rep = verify(db, key)
    assert code == 1
    assert any("signed checkpoint 2" in p and "removed" in p for p in rep["problems"])


# -- inclusion proofs ---------------------------------------------------------------------------

@pytest.fixture
def bundle(db: Path, key: str, tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    seal(db, key)
    event = raw(db, "SELECT id FROM events ORDER BY rowid LIMIT 1 OFFSET 9")[0][0]
    from tether.core.ids import ulid_str
    eid = ulid_str(bytes(event))
    out = tmp_path / "proof.json"
    code, text = tether("--store", str(db), "audit", "prove", eid, "--out", str(out))
    assert code == 0, text
    b = json.loads(out.read_text())
    assert b["event"]["id"] == eid and b["leaf_index"] == 9
    return out, b


def check(path: Path, key: str) -> tuple[int, str]:
    return tether("audit", "check-proof", str(path), "--key", key)


def test_a_bundle_checks_offline(bundle: tuple[Path, dict[str, Any]], key: str,
                                 tmp_path: Path) -> None:
    path, b = bundle
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(path, elsewhere / "p.json")
    shutil.copy(key + ".pub", elsewhere / "k.pub")
    code, out = check(elsewhere / "p.json", str(elsewhere / "k.pub"))
    assert code == 0, out
    assert f"number 10 of {b['tree_size']}" in " ".join(out.split())


def _flip(h: str) -> str:
    return f"{int(h[0], 16) ^ 1:x}{h[1:]}"


CORRUPTIONS = {
    "index - 1": lambda b: b.update(leaf_index=b["leaf_index"] - 1),
    "index + 1": lambda b: b.update(leaf_index=b["leaf_index"] + 1),
    "tree size + 1": lambda b: b.update(tree_size=b["tree_size"] + 1),
    "tree size * 2": lambda b: b.update(tree_size=b["tree_size"] * 2),
    "flipped proof bit": lambda b: b["proof"].__setitem__(0, _flip(b["proof"][0])),
    "flipped leaf bit": lambda b: b.update(leaf_hash=_flip(b["leaf_hash"])),
    "truncated proof": lambda b: b["proof"].pop(),
    "padded proof": lambda b: b["proof"].append(b["proof"][0]),
    "swapped proof": lambda b: b.update(proof=b["proof"][::-1]),
    "changed payload": lambda b: b["event"]["payload"].update(tokens=999),
    "changed step": lambda b: b["event"].update(step=b["event"]["step"] + 1),
    "changed checkpoint size": lambda b: b.update(checkpoint=b["checkpoint"].replace(
        f"\n{b['tree_size']}\n", f"\n{b['tree_size'] + 1}\n", 1)),
    "changed signature": lambda b: b.update(checkpoint=b["checkpoint"][:-6] + "AAAA=\n"),
    "no format": lambda b: b.pop("format"),
}


@pytest.mark.parametrize("what", sorted(CORRUPTIONS))
def test_a_corrupted_bundle_fails(bundle: tuple[Path, dict[str, Any]], key: str,
                                  tmp_path: Path, what: str) -> None:
    _, b = bundle
    CORRUPTIONS[what](b)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(b))
    code, out = check(bad, key + ".pub")
    assert code == 1, (what, out)
    assert "FAILED" in out and "Traceback" not in out


def test_a_bundle_fails_with_the_wrong_key(bundle: tuple[Path, dict[str, Any]],
                                           tmp_path: Path) -> None:
    path, _ = bundle
    other = Signer.generate("ops.example/tether", bytes(range(32)))  # same name, other key
    (tmp_path / "other.pub").write_text(other.verifier.encode())
    code, out = check(path, str(tmp_path / "other.pub"))
    assert code == 1 and "no signature by key" in out


def test_prove_an_unsealed_or_unknown_event_is_a_clear_error(db: Path, key: str,
                                                             tmp_path: Path) -> None:
    code, out = tether("--store", str(db), "audit", "prove", "01ARZ3NDEKTSV4RRFFQ69G5FAV",
                       "--out", str(tmp_path / "x.json"))
    assert code == 2 and "no event" in out
    eid = raw(db, "SELECT id FROM events LIMIT 1")[0][0]
    from tether.core.ids import ulid_str
    code, out = tether("--store", str(db), "audit", "prove", ulid_str(bytes(eid)),
                       "--out", str(tmp_path / "x.json"))
    assert code == 2 and "not sealed yet" in out


# -- export for a witness --------------------------------------------------------------------

def test_export_writes_checkpoints_a_witness_can_check(db: Path, key: str,
                                                       tmp_path: Path) -> None:
    seal(db, key)
    add_events(db)
    seal(db, key)
    out = tmp_path / "witness.jsonl"
    code, text = tether("--store", str(db), "audit", "export", "--out", str(out))
    assert code == 0, text
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["n"] for x in lines] == [1, 2]
    from tether.core.merkle import verify_consistency
    from tether.core.note import open_note
    from tether.core.tlog import parse_checkpoint
    from tether.sealing import load_verifier
    v = load_verifier(key + ".pub")
    a, b = (parse_checkpoint(open_note(x["note"], v)) for x in lines)
    verify_consistency(a.size, b.size, [bytes.fromhex(h) for h in lines[1]["proof"]],
                       a.root, b.root)
    code, text = tether("--store", str(db), "audit", "export", "--since", "1")
    assert code == 0 and [json.loads(x)["n"] for x in text.splitlines()] == [2]


# -- a worker seals on its schedule ---------------------------------------------------------

def test_a_worker_seals_as_it_stops(tmp_path: Path, key: str) -> None:
    db = tmp_path / "w.db"
    code, out = tether("--store", str(db), "run", "tests.sample_agents:pay_fast", "--goal",
                       "g", "--detach")
    assert code == 0, out
    code, out = tether("--store", str(db), "worker", "--until-idle", "--quiet", "--seal-key",
                       key + ".key", "--seal-every", "1000", "--seal-seconds", "3600")
    assert code == 0, out
    code, rep = verify(db, key)
    assert code == 0, rep
    assert rep["checkpoints"] == 1 and rep["unsealed"] == 0 and rep["sealed"] > 3


def test_a_worker_refuses_a_bad_seal_key_before_any_run(tmp_path: Path, key: str) -> None:
    code, out = tether("--store", str(tmp_path / "w.db"), "worker", "--until-idle",
                       "--seal-key", key + ".pub")
    assert code == 2 and "sealing needs PREFIX.key" in out
    code, out = tether("--store", str(tmp_path / "w.db"), "worker", "--until-idle",
                       "--seal-key", key + ".key", "--seal-every", "0")
    assert code == 2 and "seal every 0 events" in out


def test_a_worker_sealer_seals_every_n_events_and_backs_off_when_refused(
        db: Path, key: str, caplog: pytest.LogCaptureFixture) -> None:
    import asyncio

    from tether.runtime.sealer import Sealer
    from tether.sealing import SealSchedule

    store = SQLiteStore(db, create=False)
    wall = FixedClock(T0)
    sealer = Sealer(store, SealSchedule(load_signer(key + ".key"), events=5, seconds=0.05),
                    wall)

    async def until_sealed() -> None:
        task = asyncio.create_task(sealer.run())
        try:
            for _ in range(400):  # polled, not timed: the loop's tick is 0.05 s
                if sealer.made:
                    return
                await asyncio.sleep(0.05)
        finally:
            task.cancel()

    try:
        asyncio.run(until_sealed())  # the base store's events are more than 5 new ones
        assert sealer.made == 1 and store.signed_checkpoints()[-1].size == len(events(db))
        run, seq = _target(db)
    finally:
        store.close()
    rewrite(db, run, seq, {"text": "nothing to see", "tokens": 41})
    add_events(db)
    store = SQLiteStore(db, create=False)
    try:
        sealer.store = store
        sealer.seal_now()
        assert sealer.made == 1 and "sealing refused" in caplog.text
        assert sealer.retry_at == sealer.at + 0.05  # not again before the next period
    finally:
        store.close()
