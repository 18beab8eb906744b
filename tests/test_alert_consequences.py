"""What an alert does beyond its own event: the `on_alert` pause point (off by default),
`Worker.alert` from outside the worker, and a verdict applied upstream to the run a
signal names as its `origin` (real runs, a real SQLite store)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tests.test_alerts import EveryCall
from tether import AwaitMessages, Continue, Done, StepAgent, Worker, start_run, tool
from tether.core.events import Event
from tether.core.monitors import Level, Quiet, Signal, View
from tether.core.pausepoints import PausePoints
from tether.store.sqlite import SQLiteStore


@tool(effect="read")
def peek(n: int) -> str:
    """Look at something."""
    return f"item {n}"


async def _three(ctx: Any, state: dict[str, Any]) -> Any:
    n = state["n"] = state.get("n", 0) + 1
    await ctx.call(peek, n=n)
    return Done(n) if n >= 3 else Continue()


AGENT = StepAgent(_three, name="peeker", tools=[peek], monitors=[EveryCall])


def _drive(store: SQLiteStore, agents: dict[str, StepAgent]) -> None:
    asyncio.run(Worker(store, agents=agents, poll_interval=0.01).run(until_idle=True))


def test_alerts_do_not_pause_a_run_by_default(tmp_path: Path) -> None:
    assert PausePoints().on_alert is False and PausePoints.parse({}).on_alert is False
    store = SQLiteStore(tmp_path / "t.db")
    run = start_run(store, AGENT, agent_ref="p", goal="peek")
    _drive(store, {"p": AGENT})
    assert store.get_run(run).status == "done"  # type: ignore[union-attr]
    assert len([e for e in store.events(run) if e.kind == "alert"]) == 3


def test_the_on_alert_pause_point_pauses_at_the_first_alert(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "t.db")
    run = start_run(store, AGENT, agent_ref="p", goal="peek", pause_points={"on_alert": True})
    _drive(store, {"p": AGENT})
    row = store.get_run(run)
    assert row is not None and row.status == "paused" and row.step == 1
    events = store.events(run)
    (alert,) = [e for e in events if e.kind == "alert"]
    assert alert.payload["verdict"] == "alert"  # journaled as the monitor judged it
    paused = next(e for e in events if e.kind == "run.paused")
    assert paused.payload["alert"] == alert.id and "every_call" in row.reason


def test_worker_alert_journals_a_pause_verdict_and_pauses(tmp_path: Path) -> None:
    async def slow(ctx: Any, state: dict[str, Any]) -> Any:
        await asyncio.sleep(0.02)
        await ctx.now()
        return None

    store = SQLiteStore(tmp_path / "t.db")
    agent = StepAgent(slow, name="slow")
    run = start_run(store, agent, agent_ref="slow", goal="loop")

    async def main() -> None:
        w = Worker(store, agents={"slow": agent}, poll_interval=0.01)
        task = asyncio.create_task(w.run(until_idle=True))
        while run not in w.active:  # noqa: ASYNC110 - polling the worker's state is the test
            await asyncio.sleep(0.01)
        assert w.alert(run, "drift", {"score": 0.9})
        await task

    asyncio.run(main())
    row = store.get_run(run)
    assert row is not None and row.status == "paused" and "drift" in row.reason
    events = store.events(run)
    (alert,) = [e for e in events if e.kind == "alert"]
    assert (alert.payload["monitor"], alert.payload["rule"], alert.payload["verdict"]) == (
        "drift", "external", "pause")
    assert alert.payload["figures"] == {"score": 0.9}
    assert next(e for e in events if e.kind == "run.paused").payload["alert"] == alert.id


class Tainted(Quiet):
    """Traces a bad message back to the run that sent it: the verdict names that origin."""

    name = "tainted"
    level = Level.PAUSE

    def observe(self, event: Event, view: View) -> Iterable[Signal]:
        if event.kind == "message.received":
            for m in event.payload["messages"]:
                if m["body"] == "bad":
                    yield Signal(self.name, "bad_input", f"{m['sender']} sent a bad message",
                                 evidence=(m["id"], event.id), origin=m["sender"],
                                 level=self.level)


async def _router(ctx: Any, state: dict[str, Any]) -> Any:
    n = state["n"] = state.get("n", 0) + 1
    if n == 1:
        await ctx.send("dispatcher", "bad")
    await asyncio.sleep(0.01)
    return Done("never paused") if n >= 300 else Continue()


async def _dispatcher(ctx: Any, state: dict[str, Any]) -> Any:
    got = await ctx.receive()
    state["got"] = state.get("got", 0) + len(got)
    return Done(state["got"]) if state["got"] else AwaitMessages()


def test_a_verdict_naming_an_origin_pauses_the_origin_not_the_observer(tmp_path: Path
                                                                        ) -> None:
    store = SQLiteStore(tmp_path / "t.db")
    router = StepAgent(_router, name="router")
    dispatcher = StepAgent(_dispatcher, name="dispatcher", monitors=[Tainted])
    r = start_run(store, router, agent_ref="router", goal="route", swarm="s", name="router")
    d = start_run(store, dispatcher, agent_ref="dispatcher", goal="dispatch", swarm="s",
                  name="dispatcher")
    _drive(store, {"router": router, "dispatcher": dispatcher})
    (alert,) = [e for e in store.events(d) if e.kind == "alert"]
    assert alert.payload["origin"] == r and alert.payload["verdict"] == "pause"
    sent = next(e for e in store.events(r) if e.kind == "message.sent")
    assert sent.id in alert.causes  # the evidence reaches into the origin's chain
    # The dispatcher, which only received the bad message, goes on; the router is paused
    # by a command citing the alert, journaled in its own chain.
    assert store.get_run(d).status == "done"  # type: ignore[union-attr]
    row = store.get_run(r)
    assert row is not None and row.status == "paused" and row.step < 300
    cmd = next(e for e in store.events(r) if e.kind == "command")
    assert cmd.actor == "system:monitor" and cmd.payload["kind"] == "pause"
    assert cmd.payload["args"]["alert"] == alert.id and cmd.payload["args"]["run"] == d


def test_the_pause_point_is_set_from_the_shell(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from tether.cli.app import app
    db = tmp_path / "t.db"
    store = SQLiteStore(db)
    start_run(store, AGENT, agent_ref="p", goal="peek", swarm="crew")
    runner = CliRunner()
    res = runner.invoke(app, ["--store", str(db), "swarm", "crew", "--pause-on-alert", "--json"])
    assert res.exit_code == 0 and '"on_alert":true' in res.output, res.output
    assert store.swarm_pause_points("crew")["on_alert"] is True
    res = runner.invoke(app, ["--store", str(db), "swarm", "crew", "--no-pause-on-alert"])
    assert res.exit_code == 0 and "pause points: none" in res.output, res.output
