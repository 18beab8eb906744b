"""Monitor alerts as operators meet them: `tether alerts`, `tether alerts ack`, `tether show`,
the ops façade, and the webhook outbox (a real loopback receiver)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.test_monitor_host import (
    Broken,
    Repeats,
    _looping,
    _only_the_toy_monitors,  # noqa: F401  (autouse: loops off)
    look,
)
from tests.test_notify import Hook, config, deliver, hook, signed_by_secret  # noqa: F401
from tether import Continue, StepAgent, Tether, Worker, start_run
from tether.cli import common
from tether.cli.app import app
from tether.core.events import Event
from tether.core.monitors import Level, Quiet, Signal, View
from tether.errors import NotFound, UsageError
from tether.identity import set_allow_as
from tether.notify import Notifier
from tether.store.sqlite import SQLiteStore

runner = CliRunner()


def tether(db: Path, *args: str) -> tuple[int, str]:
    res = runner.invoke(app, ["--store", str(db), *args])
    return res.exit_code, res.output


def _drive(store: SQLiteStore, agent: StepAgent, ref: str = "a") -> str:
    run = start_run(store, agent, goal="look", agent_ref=ref)
    asyncio.run(Worker(store, agents={ref: agent}, poll_interval=0.01).run(until_idle=True))
    return run


@pytest.fixture
def looped(tmp_path: Path) -> tuple[Path, str]:
    """A run whose toy loop detector alerted, blocked, then paused it (three alerts)."""
    db = tmp_path / "t.db"
    store = SQLiteStore(db)
    run = _drive(store, StepAgent(_looping, name="looper", tools=[look], monitors=[Repeats]))
    store.close()
    return db, run


def _lines(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


@pytest.fixture(params=[80, 200], ids=lambda c: f"COLUMNS={c}")
def cols(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """A terminal this wide (the console read COLUMNS when it was made: set both)."""
    monkeypatch.setattr(common.console, "_width", int(request.param))
    return int(request.param)


def test_alerts_lists_each_with_its_run_step_monitor_and_evidence(looped: tuple[Path, str],
                                                                  cols: int) -> None:
    db, run = looped
    code, out = tether(db, "alerts", "--json")
    assert code == 0, out
    rows = _lines(out)
    assert [(a["verdict"], a["stage"]) for a in rows] == [("alert", 1), ("block", 2), ("pause", 3)]
    store = SQLiteStore(db)
    called = [e.id for e in store.events(run) if e.kind == "tool.called"]
    for a in rows:
        assert a["run"] == run and a["agent"] == "looper" and a["step"] == 1
        assert (a["monitor"], a["rule"]) == ("repeats", "same_call")
        assert a["evidence"] and set(a["evidence"]) <= set(called)
        assert a["acked_by"] is None
    code, out = tether(db, "alerts")
    assert code == 0 and all(a["id"] in out for a in rows), out  # ids are never cut
    assert "same_call" in out and (cols < 150 or all(e in out for e in called)), out
    assert "tether alerts ack ID" in out
    # Filters: the run's own; since a time after them all there are none.
    code, out = tether(db, "alerts", "--run", run, "--json")
    assert len(_lines(out)) == 3
    assert tether(db, "alerts", "--since", "2h", "--json")[1].count("\n") == 3
    code, out = tether(db, "alerts", "--since", "2999-01-01T00:00", "--json")
    assert code == 0 and out == ""
    code, out = tether(db, "alerts", "--since", "yesterday")
    assert code != 0 and "--since 'yesterday'" in out and "30m" in out
    code, out = tether(db, "alerts", "--run", "nope")
    assert code != 0 and "no run 'nope'" in out


def test_ack_is_journaled_in_the_alerted_run_once(looped: tuple[Path, str]) -> None:
    db, run = looped
    first = _lines(tether(db, "alerts", "--json")[1])[0]["id"]
    ada = ("--note", "a real loop, fixed the prompt", "--as", "ada")
    code, out = tether(db, "alerts", "ack", first, *ada)
    assert code == 2 and "allow-as on" in out, out  # a chosen name: refused by default
    set_allow_as(SQLiteStore(db), True, who="human:admin")
    code, out = tether(db, "alerts", "ack", first, *ada)
    assert code == 0 and f"acked {first}" in out, out
    store = SQLiteStore(db)
    (acked,) = [e for e in store.events(run) if e.kind == "alert.acked"]
    assert acked.payload == {"alert": first, "by": "human:ada",
                             "note": "a real loop, fixed the prompt"}
    assert acked.causes[0] == first and acked.actor == "human:ada"
    (row,) = [a for a in _lines(tether(db, "alerts", "--json")[1]) if a["id"] == first]
    assert row["acked_by"] == "human:ada" and row["note"] == "a real loop, fixed the prompt"
    assert len(_lines(tether(db, "alerts", "--unacked", "--json")[1])) == 2
    # A second ack changes nothing and says who looked first.
    code, out = tether(db, "alerts", "ack", first, "--as", "bob")
    assert code != 0 and "acked already by human:ada" in out and f"run {run}" in out, out
    assert len([e for e in store.events(run) if e.kind == "alert.acked"]) == 1
    # An id that is no alert is named.
    step = next(e for e in store.events(run) if e.kind == "step.started")
    code, out = tether(db, "alerts", "ack", step.id)
    assert code != 0 and "'step.started' event, not an alert" in out
    code, out = tether(db, "audit", "verify")
    assert code == 0, out


def test_show_lists_the_runs_alerts_unacked_first(looped: tuple[Path, str]) -> None:
    db, run = looped
    ids = [a["id"] for a in _lines(tether(db, "alerts", "--json")[1])]
    tether(db, "alerts", "ack", ids[0])
    code, out = tether(db, "show", run, "--json")
    (d,) = _lines(out)
    assert [a["id"] for a in d["alerts"]] == [ids[1], ids[2], ids[0]]
    code, out = tether(db, "show", run)
    assert code == 0 and "alerts (2 not acked)" in out and ids[2] in out, out
    assert out.index(ids[1]) < out.index(ids[0])


def test_the_ops_facade_acks_a_finished_runs_alert(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "t.db")
    run = _drive(store, StepAgent(_looping, name="looper", tools=[look], monitors=[Broken]))
    assert store.get_run(run).status == "done"  # type: ignore[union-attr]
    ops = Tether(store, who="human:ops")
    (a,) = ops.alerts()
    assert a.rule == "monitor_error" and a.acked_by is None
    res = ops.ack_alert(a.id, note="known bug")
    assert res.applied and res.by == "cli" and res.run == run
    assert ops.alerts(unacked=True) == []
    with pytest.raises(UsageError, match="acked already by human:ops"):
        ops.ack_alert(a.id)
    with pytest.raises(NotFound, match="no alert 'nope'"):
        ops.ack_alert("nope")


class EveryCall(Quiet):
    """Alerts at every tool call and never does more (its only stage is ``alert``)."""

    name = "every_call"
    stages = (Level.ALERT,)

    def observe(self, event: Event, view: View) -> Iterable[Signal]:
        if event.kind == "tool.called":
            yield Signal(self.name, "called", "a call", evidence=(event.id,))


async def _forever(ctx: Any, state: dict[str, Any]) -> Any:
    await ctx.call(look, path=f"f{state.get('n', 0)}")
    state["n"] = state.get("n", 0) + 1
    await asyncio.sleep(0.01)
    return Continue()


def test_a_worker_that_owns_the_run_records_the_ack_at_a_safe_point(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "t.db")
    agent = StepAgent(_forever, name="poller", tools=[look], monitors=[EveryCall])
    run = start_run(store, agent, goal="poll", agent_ref="p")
    ops = Tether(store, who="human:ops")

    async def main() -> Any:
        stop = asyncio.Event()
        w = Worker(store, agents={"p": agent}, poll_interval=0.01)
        task = asyncio.create_task(w.run(stop=stop))
        while not await asyncio.to_thread(ops.alerts):  # noqa: ASYNC110 - polling the store is the test
            await asyncio.sleep(0.02)
        first = (await asyncio.to_thread(ops.alerts))[0].id
        res = await asyncio.to_thread(ops.ack_alert, first, wait=60.0)
        await asyncio.to_thread(ops.stop, run)
        stop.set()
        await task
        return res

    res = asyncio.run(main())
    assert res.applied and res.by == "worker", res
    assert [e.payload["by"] for e in store.events(run) if e.kind == "alert.acked"] == [
        "human:ops"]
    assert store.get_run(run).status == "stopped"  # type: ignore[union-attr]


def test_an_alert_reaches_the_webhook_signed(tmp_path: Path, hook: Hook) -> None:  # noqa: F811
    store = SQLiteStore(tmp_path / "t.db")
    run = _drive(store, StepAgent(_looping, name="looper", tools=[look], monitors=[Repeats]))
    alerts = {e.id: e for e in store.events(run) if e.kind == "alert"}
    deliver(Notifier(store, config(hook.url)))
    got = [r for r in hook.requests if r.json["kind"] == "alert"]
    assert {r.json["notification_id"] for r in got} == set(alerts)
    for r in got:
        assert signed_by_secret(r) and r.json["run"] == run
        assert r.json["payload"] == alerts[r.json["id"]].payload
    assert {r.json["payload"]["verdict"] for r in got} == {"alert", "block", "pause"}
