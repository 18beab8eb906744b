"""`tether audit erase` (issue 11, "Erasure and secrets"): a payload is removed from the
event and from every row it was copied to, the erasure is recorded in the store chain
(who, when, why), and `tether audit verify` still passes and lists it. Real run, real
SQLite file; the file's bytes (and its WAL) are searched afterwards."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tether import Done, StepAgent, Worker, start_run, tool, verify_store
from tether.cli.app import app
from tether.core.settings import erased_marker
from tether.identity import set_allow_as
from tether.store.sqlite import SQLiteStore
from tether.testing import allow_tools

SECRETS = {"message": "patient-0042-diagnosis", "board": "home-address-12-rue-x",
           "argument": "card-4111-2222-3333-4444", "result": "ssn-078-05-1120"}


@tool(effect="irreversible")
def charge(card: str) -> dict[str, str]:
    """Charge a card; the processor echoes a customer record."""
    return {"status": "ok", "customer": SECRETS["result"]}


async def _step(ctx: Any, state: dict[str, Any]) -> Any:
    await ctx.send(ctx.run_id, {"note": SECRETS["message"]})
    await ctx.board.set("address", SECRETS["board"])
    out = await ctx.call(charge, card=SECRETS["argument"])
    state["charged"] = out["status"]  # only what is safe goes into the state
    return Done()


def cli(db: Path, *args: str) -> tuple[int, str]:
    res = CliRunner().invoke(app, ["--store", str(db), *args], env={"TETHER_USER": "dpo"})
    return res.exit_code, res.output


def _bytes(db: Path) -> bytes:
    return b"".join(p.read_bytes() for p in (db, Path(f"{db}-wal")) if p.exists())


@pytest.fixture
def night(tmp_path: Path) -> tuple[Path, str]:
    db = tmp_path / "t.db"
    store = SQLiteStore(db)
    allow_tools(store)
    set_allow_as(store, True, who="human:admin")  # erasures are recorded as $TETHER_USER
    agent = StepAgent(_step, name="clerk", tools=[charge])
    run = start_run(store, agent, agent_ref="clerk", goal="g", swarm="crew")
    asyncio.run(Worker(store, agents={"clerk": agent}, poll_interval=0.01).run(until_idle=True))
    assert store.get_run(run).status == "done"  # type: ignore[union-attr]
    store.close()
    return db, run


def _event(db: Path, run: str, kind: str) -> str:
    return next(e.id for e in SQLiteStore(db).events(run) if e.kind == kind)


def test_erasure_removes_every_copy_and_verify_still_passes(night: tuple[Path, str]) -> None:
    db, run = night
    assert all(s.encode() in _bytes(db) for s in SECRETS.values())
    ids = {k: _event(db, run, k) for k in ("message.sent", "blackboard.write", "effect.intent",
                                           "effect.done")}
    for kind, ev in ids.items():
        code, out = cli(db, "audit", "erase", ev, "--reason", f"GDPR request 17 ({kind})")
        assert code == 0 and f"erased {ev}" in out, out
    store = SQLiteStore(db)
    rep = verify_store(store)
    assert rep.ok, rep.problems
    assert [(x["event"], x["by"]) for x in rep.erasures] == [(i, "human:dpo")
                                                            for i in ids.values()]
    # Every row that copied a value now holds the marker; the events hold no payload.
    assert all(store.event(i).payload is None for i in ids.values())  # type: ignore[union-attr]
    (msg,) = store.messages(sender=run)
    assert msg.body == erased_marker(ids["message.sent"])
    (ver,) = [v for v in store.versions(run=run) if v.ns.startswith("board:")]
    assert ver.value == erased_marker(ids["blackboard.write"])
    (eff,) = store.effects(run=run)
    assert eff.arguments == erased_marker(ids["effect.intent"])
    assert eff.result == erased_marker(ids["effect.done"])
    store.close()
    data = _bytes(db)
    assert [k for k, s in SECRETS.items() if s.encode() in data] == []
    code, out = cli(db, "audit", "verify")
    flat = " ".join(out.split())
    assert code == 0 and "erased: " in flat and "GDPR request 17" in flat, out


def test_a_marker_without_a_recorded_erasure_is_a_forgery(night: tuple[Path, str]) -> None:
    db, run = night
    ev = _event(db, run, "message.sent")
    with sqlite3.connect(db) as c:
        c.execute("UPDATE messages SET body = ? WHERE id = ?",
                  (json.dumps(erased_marker(ev)).encode(), ev))
    rep = verify_store(SQLiteStore(db))
    assert not rep.ok and f"message {ev}" in rep.problems[0]


def test_bad_erasures_are_one_line_and_write_nothing(night: tuple[Path, str]) -> None:
    db, run = night
    ev = _event(db, run, "message.sent")
    for args, says in ((["NOSUCH", "--reason", "x"], "no event 'NOSUCH'"),
                       ([ev, "--reason", " "], "say why"),
                       ([ev], "missing option '--reason'")):
        code, out = cli(db, "audit", "erase", *args)
        assert code == 2 and says in out and "Traceback" not in out, out
    assert SQLiteStore(db).store_events()[-1].kind != "payload.erased"
    assert cli(db, "audit", "erase", ev.lower(), "--reason", "x")[0] == 0  # any case
    code, out = cli(db, "audit", "erase", ev, "--reason", "again")
    assert code == 2 and "erased already" in out
