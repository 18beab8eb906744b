"""Swarm provenance from the CLI: `tether impact`, `tether rollback --cascade`, `tether quarantine`.

A producer writes a report file, sets the blackboard key ``latest`` and sends the consumer
a message, one report a step; the consumer takes one message a step, reads the report and
appends it to ``summary.txt``; a reader looks at ``latest`` once. The runs are driven in
phases, so consumer step k always handles the producer's step-k report.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tether import AwaitMessages, Done, StepAgent, Worker, start_run, verify_store
from tether.cli.app import app
from tether.identity import set_allow_as
from tether.runtime.swarm import board_ns
from tether.store.sqlite import SQLiteStore
from tether.tools.files import fs_append, fs_read, fs_write

SWARM = "reports"


async def _producer(ctx: Any, state: dict[str, Any]) -> Any:
    n = state.get("n", 0)
    if n >= 3:
        return Done(f"{n} reports")
    await ctx.call(fs_write, path=f"report-{n}.txt", content=f"report {n}\n")
    await ctx.board.set("latest", n)
    await ctx.send("consumer", {"file": f"report-{n}.txt"}, topic="report")
    state["n"] = n + 1
    return None


async def _consumer(ctx: Any, state: dict[str, Any]) -> Any:
    for m in await ctx.receive(limit=1):
        text = await ctx.call(fs_read, path=m.body["file"])
        await ctx.call(fs_append, path="summary.txt", content=text)
        state.setdefault("seen", []).append(m.body["file"])
    if len(state.get("seen", [])) >= 3:
        return Done(state["seen"])
    return AwaitMessages()


async def _reader(ctx: Any, state: dict[str, Any]) -> Any:
    e = await ctx.board.get("latest")
    state["saw"] = None if e is None else {"value": e.value, "suspect": e.suspect,
                                           "writer": e.writer}
    return Done(state["saw"])


PRODUCER = StepAgent(_producer, name="producer", tools=[fs_write])
CONSUMER = StepAgent(_consumer, name="consumer", tools=[fs_read, fs_append])
READER = StepAgent(_reader, name="reader")
AGENTS = {"producer": PRODUCER, "consumer": CONSUMER, "reader": READER}

runner = CliRunner()


def tether(db: Path, *args: str) -> tuple[int, str]:
    res = runner.invoke(app, ["--store", str(db), *args])
    return res.exit_code, res.output


def flat(text: str) -> str:
    """The CLI's text with its line wrapping undone (rich wraps at the terminal width)."""
    return " ".join(text.split())


def drive(store: SQLiteStore, *runs: str) -> None:
    w = Worker(store, agents=AGENTS, poll_interval=0.01, only=set(runs) or None)
    asyncio.run(w.run(until_idle=True))


def start(store: SQLiteStore, agent: StepAgent, ws: Path, **kw: Any) -> str:
    return start_run(store, agent, agent_ref=agent.name, goal=agent.name, name=agent.name,
                     swarm=SWARM, workspace=ws, **kw)


class World:
    """A store and workspace with the three runs."""

    def __init__(self, tmp_path: Path, **producer: Any) -> None:
        self.db = tmp_path / "tether.db"
        self.ws = tmp_path / "ws"
        self.store = SQLiteStore(self.db)
        self.consumer = start(self.store, CONSUMER, self.ws)
        self.producer = start(self.store, PRODUCER, self.ws, **producer)
        self.reader = ""

    def run(self, *runs: str) -> None:
        drive(self.store, *runs)

    def row(self, run: str) -> Any:
        r = self.store.get_run(run)
        assert r is not None
        return r

    def messages(self, **kw: Any) -> list[tuple[int, str]]:
        return [(m.step, m.status) for m in self.store.messages(**kw)]

    def latest(self) -> Any:
        v = self.store.current_versions(board_ns(SWARM), ["latest"]).get("latest")
        return None if v is None else v.value


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    """The producer runs to the end (three messages pending), then the consumer handles
    them one a step (its step k took the producer's step-k message), then a reader reads
    ``latest`` (written at the producer's step 3)."""
    w = World(tmp_path)
    set_allow_as(w.store, True, who="human:admin")  # operators act --as alice
    w.run(w.producer)
    assert w.messages(sender=w.producer) == [(1, "pending"), (2, "pending"), (3, "pending")]
    w.run(w.consumer)
    w.reader = start(w.store, READER, w.ws)
    w.run(w.reader)
    assert [w.row(r).status for r in (w.producer, w.consumer, w.reader)] == ["done"] * 3
    assert (w.ws / "summary.txt").read_text() == "report 0\nreport 1\nreport 2\n"
    yield w
    w.store.close()


# -- impact ---------------------------------------------------------------------------------

def test_impact_text_and_json(world: World) -> None:
    code, out = tether(world.db, "impact", "producer@2")
    assert code == 0, out
    text = flat(out)
    assert f"impact of producer ({world.producer}) step 2, epoch 0" in text
    for name in ("producer", "consumer", "reader"):
        assert f"{name} (" in text
    assert "via message from producer step 2" in text
    assert "via board from producer step 3" in text
    assert "effect step 2 fs_write (reversible) done" in text
    assert "board step 3 'latest' v3 live" in text

    code, out = tether(world.db, "impact", "producer@2", "--json")
    assert code == 0, out
    imp = json.loads(out)
    assert imp["origin"] == {"run": world.producer, "epoch": 0, "step": 2}
    assert imp["runs"] == 3
    by_run = {a["run"]: a for a in imp["affected"]}
    assert set(by_run) == {world.producer, world.consumer, world.reader}
    assert imp["affected"][0]["run"] == world.producer and imp["affected"][0]["via"] is None
    p, c, r = by_run[world.producer], by_run[world.consumer], by_run[world.reader]
    assert (p["first_step"], p["last_step"]) == (2, 4)
    assert [m["step"] for m in p["messages"]] == [2, 3]
    assert [(b["key"], b["version"]) for b in p["board"]] == [("latest", 2), ("latest", 3)]
    assert sorted(f["path"] for f in p["files"]) == ["report-1.txt", "report-2.txt"]
    # The consumer took the step-2 message at its step 2: its steps 2-3 are affected.
    assert (c["first_step"], c["last_step"]) == (2, 3)
    assert c["via"]["kind"] in ("message", "file") and c["via"]["run"] == world.producer
    assert c["via"]["step"] == 2
    assert [e["step"] for e in c["effects"]] == [2, 3]
    assert r["via"]["kind"] == "board" and r["via"]["step"] == 3 and r["first_step"] == 1
    # Impact is downstream only: from the producer's last report, the consumer's step 3 on.
    code, out = tether(world.db, "impact", "producer@3", "--json")
    late = {a["run"]: a["first_step"] for a in json.loads(out)["affected"]}
    assert late == {world.producer: 3, world.consumer: 3, world.reader: 1}


def test_impact_of_an_event_id(world: World) -> None:
    sent = [e for e in world.store.events(world.producer) if e.kind == "message.sent"]
    assert [e.step for e in sent] == [1, 2, 3]
    code, out = tether(world.db, "impact", sent[1].id, "--json")
    assert code == 0, out
    by_id = json.loads(out)
    code, out = tether(world.db, "impact", "producer@2", "--json")
    assert by_id == json.loads(out)  # an event stands for its step
    # Downstream of the reader's read is only the reader itself.
    read = next(e for e in world.store.events(world.reader) if e.kind == "blackboard.read")
    (write,) = [e.id for e in world.store.events(world.producer)
                if e.kind == "blackboard.write" and e.step == 3]
    assert read.causes == (write,)  # the read cites the write it saw
    code, out = tether(world.db, "impact", read.id, "--json")
    imp = json.loads(out)
    assert imp["runs"] == 1 and imp["origin"] == {"run": world.reader, "epoch": 0, "step": 1}
    code, out = tether(world.db, "impact", read.id)
    assert code == 0 and "epoch 0: 1 runs, 1 steps, 0 messages, 0 effects on 0 files" in flat(out)


@pytest.mark.parametrize(("ref", "says"), [
    ("nope@1", "no run 'nope'"),
    ("01NOSUCHEVENT0000000000000", "no event '01NOSUCHEVENT0000000000000'"),
    ("producer@9", "step 9 is in the future"),
    ("producer@x", "'producer@x': the part after @ must be a step number"),
])
def test_impact_bad_input_is_one_clear_line(world: World, ref: str, says: str) -> None:
    code, out = tether(world.db, "impact", ref)
    assert code == 2, out
    lines = out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], out


def test_impact_of_an_epoch_the_run_never_had(world: World) -> None:
    code, out = tether(world.db, "impact", "producer@1", "--epoch", "5")
    assert code == 2 and "no epoch 5" in out and out.strip().count("\n") == 0


# -- rollback --cascade ---------------------------------------------------------------------

def test_rollback_without_cascade_names_what_it_affects(world: World) -> None:
    code, out = tether(world.db, "rollback", "producer", "--to", "1", "--plan")
    assert code == 0, out
    text = flat(out)
    # The consumer took the producer's step-2 message (and then its files); the reader read
    # 'latest' as the producer's step 3 wrote it: both are named, neither is touched.
    assert text.count("AFFECTS") == 2, text
    assert (f"AFFECTS run consumer ({world.consumer}) from step 2 (via message from producer "
            "step 2)") in text
    assert (f"AFFECTS run reader ({world.reader}) from step 1 (via board from producer "
            "step 3)") in text
    assert "roll it back too with --cascade" in text
    assert "revert step 2 blackboard 'latest' version 2" in text
    code, out = tether(world.db, "rollback", "producer", "--to", "1")
    assert code == 0 and "2 other run(s) took in work of the steps undone" in flat(out), out
    assert world.row(world.consumer).epoch == 0 and world.row(world.reader).epoch == 0


def test_cascade_plan_and_json_change_nothing(world: World) -> None:
    before = sorted((p.name, p.read_bytes()) for p in world.ws.iterdir())
    code, out = tether(world.db, "rollback", "producer", "--to", "1", "--cascade", "--plan")
    assert code == 0, out
    text = flat(out)
    assert f"cascade rollback of run producer ({world.producer}) to step 1: 2 other run(s) " \
           "affected" in text
    # Dependents first, the origin last.
    body = text[text.index("affected"):]
    order = [body.index(f"rollback of run {n} (") for n in ("reader", "consumer", "producer")]
    assert order == sorted(order)
    assert f"rollback of run consumer ({world.consumer}) from step 3 to step 1" in text
    assert text.count("requeue message") == 2 and "AFFECTS" not in text

    code, out = tether(world.db, "rollback", "producer", "--to", "1", "--cascade", "--plan",
                       "--json")
    assert code == 0, out
    cp = json.loads(out)
    assert cp["done"] is False and cp["origin"] == world.producer and cp["to_step"] == 1
    assert [p["run"] for p in cp["plans"]] == [world.reader, world.consumer, world.producer]
    plans = {p["run"]: p for p in cp["plans"]}
    assert plans[world.reader]["to_step"] == 0
    c = plans[world.consumer]
    assert c["to_step"] == 1 and len(c["requeue"]) == 2 and len(c["undo"]) == 2
    p = plans[world.producer]
    assert [u["step"] for u in p["undo"]] == [3, 2]
    assert [(v["key"], v["version"]) for v in p["revert"]] == [("latest", 2), ("latest", 3)]
    assert cp["blocked"] == [] and cp["impact"]["runs"] == 3

    assert sorted((p.name, p.read_bytes()) for p in world.ws.iterdir()) == before
    assert {world.row(r).epoch for r in (world.producer, world.consumer, world.reader)} == {0}
    assert world.latest() == 2


def test_cascade_rolls_back_every_run_then_they_go_on(world: World) -> None:
    code, out = tether(world.db, "rollback", "producer", "--to", "1", "--cascade", "--as",
                       "alice")
    assert code == 0, out
    text = flat(out)
    assert ("cascade rollback done: 3 run(s) rolled back, 4 effects undone, 2 messages "
            "retracted, 2 blackboard writes reverted, 0 effects left.") in text
    # The world is back to the producer's step 1 and what it fed.
    assert sorted(p.name for p in world.ws.iterdir()) == ["report-0.txt", "summary.txt"]
    assert (world.ws / "summary.txt").read_text() == "report 0\n"
    assert world.latest() == 0
    assert world.messages(sender=world.producer) == [(1, "delivered"), (2, "retracted"),
                                                     (3, "retracted")]
    rows = {r: world.row(r) for r in (world.producer, world.consumer, world.reader)}
    assert {r: (x.epoch, x.step, x.status) for r, x in rows.items()} == {
        world.producer: (1, 1, "paused"), world.consumer: (1, 1, "paused"),
        world.reader: (1, 0, "paused")}
    for r in rows:
        rb = [e for e in world.store.events(r) if e.kind == "rollback"]
        assert len(rb) == 1 and rb[0].payload["cascade"] == {
            "run": world.producer, "epoch": 0, "to": 1} and rb[0].actor == "human:alice"
    kinds = [e.kind for e in world.store.events(world.consumer)]
    assert "message.requeued" in kinds
    kinds = [e.kind for e in world.store.events(world.producer)]
    assert "message.retracted" in kinds and "blackboard.reverted" in kinds
    code, out = tether(world.db, "audit", "verify")
    assert code == 0 and "ok" in out, out

    # Again: nothing is left to do, and nothing is done.
    seqs = {r: world.row(r).seq for r in rows}
    code, out = tether(world.db, "rollback", "producer", "--to", "1", "--cascade", "--plan")
    assert code == 0 and "nothing downstream is left to roll back" in flat(out), out
    code, out = tether(world.db, "rollback", "producer", "--to", "1", "--cascade")
    assert code == 0 and "nothing downstream is left to roll back" in flat(out), out
    assert {r: world.row(r).seq for r in rows} == seqs
    code, out = tether(world.db, "rollback", "producer", "--to", "1", "--cascade", "--json")
    assert code == 0 and json.loads(out)["idle"] is True

    # Resumed, the runs redo the work: the same summary, in the new epochs.
    for r in rows:
        code, out = tether(world.db, "resume", rows[r].name)
        assert code == 0, out
    world.run()
    assert (world.ws / "summary.txt").read_text() == "report 0\nreport 1\nreport 2\n"
    assert [world.row(r).status for r in rows] == ["done"] * 3
    assert world.row(world.reader).epoch == 1
    assert verify_store(world.store).ok


def test_cascade_bad_input(world: World) -> None:
    code, out = tether(world.db, "rollback", "producer", "--to", "9", "--cascade", "--plan")
    assert code == 2 and "step 9 is in the future" in out and out.strip().count("\n") == 0
    code, out = tether(world.db, "rollback", "nope", "--to", "1", "--cascade")
    assert code == 2 and "no run 'nope'" in out


# -- quarantine -----------------------------------------------------------------------------

def test_quarantine_holds_marks_and_release_delivers(tmp_path: Path) -> None:
    w = World(tmp_path, pause_points={"every_steps": 3})
    set_allow_as(w.store, True, who="human:admin")  # the operator acts --as alice
    try:
        # The producer stops for review after its third report; the consumer has not run.
        w.run(w.producer)
        assert w.messages(sender=w.producer) == [(1, "pending"), (2, "pending"),
                                                 (3, "pending")]
        code, out = tether(w.db, "quarantine", "producer", "--reason", "reports look wrong",
                           "--as", "alice")
        assert code == 0, out
        assert (f"quarantined run {w.producer} (paused): 3 message(s) held, 6 write(s) marked "
                "suspect") in flat(out)
        assert w.messages(sender=w.producer) == [(1, "held"), (2, "held"), (3, "held")]
        ev = [e for e in w.store.events(w.producer) if e.kind == "run.quarantined"]
        assert len(ev) == 1 and ev[0].actor == "human:alice"
        assert ev[0].payload["reason"] == "reports look wrong"
        assert len(ev[0].payload["messages"]) == 3 and len(ev[0].payload["writes"]) == 6

        # A reader in another run is told; the consumer gets none of the held mail.
        reader = start(w.store, READER, w.ws)
        w.run(reader, w.consumer)
        assert w.row(reader).status == "done"
        code, out = tether(w.db, "events", reader, "--kind", "blackboard.read", "--json")
        (read,) = [json.loads(line) for line in out.splitlines()]
        assert read["payload"]["suspect"] is True and read["payload"]["value"] == 2
        assert read["payload"]["writer"] == w.producer
        assert w.row(w.consumer).status == "waiting" and not (w.ws / "summary.txt").exists()

        code, out = tether(w.db, "quarantine", w.producer)
        assert code == 2, out
        lines = out.strip().splitlines()
        assert len(lines) == 1 and f"run {w.producer} is quarantined already" in lines[0]
        assert "--release" in lines[0]

        code, out = tether(w.db, "quarantine", "producer", "--release", "--json")
        assert code == 0, out
        res = json.loads(out)
        assert res["released"] is True and res["run"] == w.producer
        assert len(res["messages"]) == 3 and len(res["writes"]) == 6
        assert w.messages(sender=w.producer) == [(1, "pending"), (2, "pending"),
                                                 (3, "pending")]
        w.run(w.consumer)
        assert w.row(w.consumer).status == "done"
        assert (w.ws / "summary.txt").read_text() == "report 0\nreport 1\nreport 2\n"
        assert w.messages(sender=w.producer) == [(1, "delivered"), (2, "delivered"),
                                                 (3, "delivered")]
        later = start_run(w.store, READER, agent_ref="reader", goal="look", name="reader-2",
                          swarm=SWARM)
        w.run(later)
        assert w.row(later).status == "done"
        code, out = tether(w.db, "state", later)
        assert json.loads(out)["saw"]["suspect"] is False

        code, out = tether(w.db, "quarantine", "producer", "--release")
        assert code == 2 and f"run {w.producer} is not quarantined" in out
        assert out.strip().count("\n") == 0
        code, out = tether(w.db, "quarantine", "nope")
        assert code == 2 and "no run 'nope'" in out
        assert verify_store(w.store).ok
    finally:
        w.store.close()


# -- what the swarm said and wrote ----------------------------------------------------------

def test_messages_and_board_listings(world: World) -> None:
    code, out = tether(world.db, "messages", "--json")
    assert code == 0, out
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(m["step"], m["status"], m["topic"]) for m in rows] == [
        (1, "delivered", "report"), (2, "delivered", "report"), (3, "delivered", "report")]
    assert {m["sender"] for m in rows} == {world.producer}
    assert {m["recipient"] for m in rows} == {world.consumer}
    code, out = tether(world.db, "messages", "reader", "--json")
    assert code == 0 and out.strip() == ""
    code, out = tether(world.db, "messages", "--status", "bogus")
    assert code == 2 and "unknown message status 'bogus'" in out

    code, out = tether(world.db, "board", "--swarm", SWARM, "--json")
    (cur,) = [json.loads(line) for line in out.splitlines()]
    assert (cur["key"], cur["version"], cur["value"], cur["run"]) == ("latest", 3, 2,
                                                                       world.producer)
    code, out = tether(world.db, "board", "latest", "--swarm", SWARM, "--json")
    assert [json.loads(line)["version"] for line in out.splitlines()] == [1, 2, 3]
    code, out = tether(world.db, "board")  # every swarm's board
    assert code == 0 and f"{SWARM} │ latest │ 3" in flat(out), out
    code, out = tether(world.db, "board", "--swarm", "-")  # runs without a swarm share one
    assert code == 0 and "nothing on the board of swarm -" in flat(out)
    assert f"(swarms in this store: {SWARM})" in flat(out)
