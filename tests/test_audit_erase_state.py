"""`tether audit erase` reaches a run's state (issue 11): every checkpoint and keyframe
chunk holding an erased value is rewritten with the marker, the audit still verifies
(it follows each rewrite the store chain records), a run resumes from the rewritten
state, a step in flight whose replay needs the payload is refused with the way out,
and a worker driving the run loses its lease. Real runs, real SQLite files; the
file's bytes (and its WAL) are searched afterwards."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tether import Continue, Done, StepAgent, Tether, Worker, start_run, tool, verify_store
from tether.cli.app import app
from tether.core.canonical import dumps
from tether.core.settings import erased_marker
from tether.errors import UsageError
from tether.store.sqlite import SQLiteStore
from tether.testing import allow_tools
from tether.tools import register_undo
from tether.tools.files import fs_write

SECRETS = {"message": "patient-0042-diagnosis", "board": "home-address-12-rue-x",
           "argument": "card-4111-2222-3333-4444", "result": "ssn-078-05-1120",
           "iban": "FR76-3000-6000-0112-3456-7890-189"}
FAIL: dict[str, bool] = {"after_charge": False, "step2": False, "declined": False}
"""Set by a test to make the agent fail at a point (then cleared, and the run resumed)."""


@tool(effect="reversible")
def refund(card: str) -> str:
    """Undo of ``charge``."""
    return "refunded"


@tool(effect="reversible")
def charge(card: str, iban: str) -> dict[str, str]:
    """Charge a card (its undo, a refund, names the card); the processor echoes a customer
    record."""
    register_undo(refund, card=card)
    return {"status": "ok", "customer": SECRETS["result"]}


async def _step(ctx: Any, state: dict[str, Any]) -> Any:
    n = state.get("n", 0) + 1
    state["n"] = n
    if n == 1:
        await ctx.send(ctx.run_id, {"note": SECRETS["message"]})
        await ctx.board.set("address", SECRETS["board"])
        out = await ctx.call(charge, card=SECRETS["argument"], iban=SECRETS["iban"])
        if FAIL["after_charge"]:
            raise RuntimeError("processor timeout")
        if FAIL["declined"]:
            raise RuntimeError(f"card {SECRETS['argument']} declined")
        # The secrets land in the state, in every form a checkpoint stores:
        state["card"] = SECRETS["argument"]  # a value, inline in the keyframe or a delta
        state["memo"] = f"sent {SECRETS['message']} for review"  # inside a string
        # JSON text kept in a conversation, in the first 64 items: a keyframe's list chunk
        state["conversation"] = [f"tool result: {json.dumps(out)}"] + [f"turn {i}"
                                                                      for i in range(70)]
        # a large value: a keyframe's chunk of its own
        state["profile"] = {"address": SECRETS["board"], "notes": "n" * 600,
                            "accounts": [SECRETS["iban"]]}
        return Continue()
    if n == 2 and FAIL["step2"]:
        raise RuntimeError("downstream unavailable")
    state["conversation"].append(f"turn at step {n}")
    state["seen"] = state["card"]
    return Done() if n >= 4 else Continue()


AGENT = StepAgent(_step, name="clerk", tools=[charge, refund])


def cli(db: Path, *args: str) -> tuple[int, str]:
    res = CliRunner().invoke(app, ["--store", str(db), *args])
    return res.exit_code, res.output


def _bytes(db: Path) -> bytes:
    return b"".join(p.read_bytes() for p in (db, Path(f"{db}-wal")) if p.exists())


def _drive(db: Path) -> None:
    store = SQLiteStore(db)
    try:
        asyncio.run(Worker(store, agents={"clerk": AGENT}, poll_interval=0.01,
                           keyframe_every=2).run(until_idle=True))
    finally:
        store.close()


def _start(tmp_path: Path) -> tuple[Path, str]:
    db = tmp_path / "t.db"
    store = SQLiteStore(db)
    allow_tools(store)
    run = start_run(store, AGENT, agent_ref="clerk", goal="g", swarm="crew")
    store.close()
    _drive(db)
    return db, run


@pytest.fixture(autouse=True)
def _no_failures() -> Any:
    yield
    FAIL.update(after_charge=False, step2=False, declined=False)


def _ids(db: Path, run: str, *kinds: str) -> dict[str, str]:
    store = SQLiteStore(db)
    try:
        return {k: next(e.id for e in store.events(run) if e.kind == k) for k in kinds}
    finally:
        store.close()


def _erase(db: Path, ids: dict[str, str]) -> list[str]:
    outs = []
    for kind, ev in ids.items():
        code, out = cli(db, "audit", "erase", ev, "--reason", f"GDPR request 17 ({kind})")
        assert code == 0 and f"erased {ev}" in out, out
        outs.append(" ".join(out.split()))
    return outs


STEP1 = ("message.sent", "blackboard.write", "effect.intent", "effect.done")


def test_no_secret_is_left_in_the_file_and_the_checkpoints_hold_markers(tmp_path: Path) -> None:
    db, run = _start(tmp_path)
    store = SQLiteStore(db)
    assert store.get_run(run).status == "done"  # type: ignore[union-attr]
    kinds = {k for _, _, k, _ in store.checkpoint_bodies(run)}
    assert kinds == {"key", "delta"}  # both kinds hold a secret before the erasure
    store.close()
    data = _bytes(db)
    assert all(s.encode() in data for s in SECRETS.values())
    ids = _ids(db, run, *STEP1)
    outs = _erase(db, ids)
    said = " ".join(outs)
    assert "checkpoints.body" in said and "chunks.body" in said, said
    data = _bytes(db)
    assert [k for k, s in SECRETS.items() if s.encode() in data] == []
    store = SQLiteStore(db)
    try:
        rep = verify_store(store)
        assert rep.ok, rep.problems
        assert rep.rewritten and all(k[0] == run for k in rep.rewritten)
        (eff,) = store.effects(run=run)  # the undo was in the erased result's payload
        assert eff.undo is not None and eff.undo["arguments"] == {
            "card": erased_marker(ids["effect.done"])}, eff.undo
        ops = Tether(store)
        for step in (1, 2, 4):  # a delta, a keyframe, the last state
            st = ops.state(run, step).state
            assert st["card"] == erased_marker(ids["effect.intent"])
            assert st["memo"] == f"sent {dumps(erased_marker(ids['message.sent'])).decode()} " \
                                 "for review"
            assert st["profile"]["address"] == erased_marker(ids["blackboard.write"])
            assert st["profile"]["accounts"] == [erased_marker(ids["effect.intent"])]
            assert SECRETS["result"] not in st["conversation"][0]
            assert dumps(erased_marker(ids["effect.done"])).decode() in st["conversation"][0]
            assert len(st["conversation"]) == 71 + max(0, step - 1)
    finally:
        store.close()
    code, out = cli(db, "audit", "verify")
    flat = " ".join(out.split())
    assert code == 0 and "GDPR request 17" in flat and "checkpoints rewritten" in flat, out
    # A rollback past the charge refuses the undo (its card is the marker) before it runs.
    store = SQLiteStore(db)
    try:
        with pytest.raises(UsageError, match=f"undo of effect {ids['effect.intent']}"):
            Tether(store, agents={"clerk": AGENT}).rollback(run, 0)
        (eff,) = store.effects(run=run)
        assert eff.status == "done"
        assert [e.kind for e in store.events(run)][-1] != "effect.undoing"
    finally:
        store.close()


def test_a_run_resumes_from_a_rewritten_checkpoint_with_the_marker_in_place(
        tmp_path: Path) -> None:
    FAIL["step2"] = True
    db, run = _start(tmp_path)
    assert SQLiteStore(db).get_run(run).status == "failed"  # type: ignore[union-attr]
    ids = _ids(db, run, *STEP1)
    outs = _erase(db, ids)
    assert not any("will not resume" in o for o in outs), outs
    FAIL["step2"] = False
    assert cli(db, "resume", run)[0] == 0
    _drive(db)
    store = SQLiteStore(db)
    try:
        assert store.get_run(run).status == "done"  # type: ignore[union-attr]
        st = Tether(store).state(run).state
        assert st["seen"] == erased_marker(ids["effect.intent"])
        assert verify_store(store).ok
    finally:
        store.close()
    assert [k for k, s in SECRETS.items() if s.encode() in _bytes(db)] == []


def test_a_step_in_flight_that_needs_the_payload_is_refused_with_the_way_out(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    FAIL["after_charge"] = True
    db, run = _start(tmp_path)
    ev = _ids(db, run, "effect.done")["effect.done"]
    (out,) = _erase(db, {"effect.done": ev})
    assert f"run {run} step 1 is not complete" in out and f"tether fork {run} --at 0" in out
    FAIL["after_charge"] = False
    assert cli(db, "resume", run)[0] == 0
    with caplog.at_level(logging.WARNING):
        _drive(db)
    said = " ".join(caplog.text.split())
    assert f"run {run} step 1: the payload of event {ev} (effect.done) was erased" in said
    assert f"tether fork {run} --at 0" in said and "Traceback" not in said
    store = SQLiteStore(db)
    try:
        assert store.get_run(run).status == "running"  # type: ignore[union-attr]
        assert len(store.effects(run=run)) == 1  # the charge was not made again
    finally:
        store.close()


def test_the_worker_driving_the_run_loses_its_lease(tmp_path: Path) -> None:
    FAIL["step2"] = True
    db, run = _start(tmp_path)
    store = SQLiteStore(db)
    try:
        now = time.time()  # leases use the wall clock
        token = store.acquire(run, "worker:1", 600.0, now)
        assert token is not None
        rec = Tether(store).erase(_ids(db, run, "effect.done")["effect.done"], reason="leak")
        assert rec.payload["fenced"] == [run]
        assert store.renew({run: token}, "worker:1", 600.0, now) == [run]  # lost
        assert store.acquire(run, "worker:2", 600.0, now) == token + 2  # free, fenced token
    finally:
        store.close()


def test_a_rewritten_checkpoint_changed_again_outside_tether_is_named(tmp_path: Path) -> None:
    db, run = _start(tmp_path)
    _erase(db, _ids(db, run, "effect.intent"))
    with sqlite3.connect(db) as c:
        rk = c.execute("SELECT rk FROM run_keys WHERE id = ?", (run,)).fetchone()[0]
        body = c.execute("SELECT body FROM checkpoints WHERE rk = ? AND step = 1",
                         (rk,)).fetchone()[0]
        c.execute("UPDATE checkpoints SET body = ? WHERE rk = ? AND step = 1",
                  (bytes(body).replace(b"review", b"REVIEW"), rk))
    rep = verify_store(SQLiteStore(db))
    assert not rep.ok and f"run {run} checkpoint epoch 0 step 1" in rep.problems[0]


def test_other_events_holding_the_value_are_named_and_their_erasure_clears_the_rest(
        tmp_path: Path) -> None:
    FAIL["declined"] = True  # the failure's message quotes the card: run.failed, runs.reason
    db, run = _start(tmp_path)
    ids = _ids(db, run, "effect.intent", "effect.done", "run.failed")
    (out,) = _erase(db, {"effect.intent": ids["effect.intent"]})
    # The undo's arguments (in effect.done) and the failure's message still say it.
    assert "still in the payloads of events " \
        f"{ids['effect.done']}, {ids['run.failed']}: erase them too" in out, out
    assert SECRETS["argument"].encode() in _bytes(db)
    (out,) = _erase(db, {"effect.done": ids["effect.done"]})
    assert "1 effects.undo" in out, out
    (out,) = _erase(db, {"run.failed": ids["run.failed"]})
    assert "1 runs.reason" in out and "still in" not in out, out
    assert SECRETS["argument"].encode() not in _bytes(db)
    store = SQLiteStore(db)
    try:
        row = store.get_run(run)
        assert row is not None and SECRETS["argument"] not in row.reason
        assert dumps(erased_marker(ids["run.failed"])).decode() in row.reason
        assert "tether resume" in row.reason  # the rest of the reason is kept
        assert verify_store(store).ok
    finally:
        store.close()


async def _writer(ctx: Any, state: dict[str, Any]) -> Any:
    n = state.get("n", 0) + 1
    state["n"] = n
    # A large file holding the secret, overwritten next step: its before-image (raw bytes an
    # undo restores, named by their hash) is a chunk an erasure must leave as it is.
    text = f"record for {SECRETS['result']}\n" + "x" * 17000 if n == 1 else "cleared\n"
    await ctx.call(fs_write, path="notes.txt", content=text)
    state["last"] = text
    return Done() if n >= 2 else Continue()


def test_file_images_an_undo_needs_are_left_and_said(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    store = SQLiteStore(db)
    allow_tools(store)
    agent = StepAgent(_writer, name="scribe", tools=[fs_write])
    run = start_run(store, agent, agent_ref="scribe", goal="g", workspace=tmp_path / "ws")
    asyncio.run(Worker(store, agents={"scribe": agent}, poll_interval=0.01).run(until_idle=True))
    assert store.get_run(run).status == "done"  # type: ignore[union-attr]
    first = next(e.id for e in store.events(run) if e.kind == "effect.intent")
    store.close()
    (out,) = _erase(db, {"effect.intent": first})
    assert "checkpoints.body" in out and "chunks of file contents" in out, out
    store = SQLiteStore(db)
    try:
        assert verify_store(store).ok
        st = Tether(store).state(run, 1).state
        assert st["last"] == erased_marker(first)
        # The rollback can still restore the file: its before-image is intact.
        Tether(store, agents={"scribe": agent}).rollback(run, 1)
        assert (tmp_path / "ws" / "notes.txt").read_text().startswith("record for ")
    finally:
        store.close()
