"""`tether report` and `tether audit query` (issue 11, "Questions an operator asks") on
real runs: a real SQLite store, a worker, a pending approval, a monitor that alerts,
blocks and pauses, and an approval decided by a person."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests import sample_agents
from tests.test_monitor_host import (
    Repeats,
    _looping,
    _only_the_toy_monitors,  # noqa: F401  (autouse: loops off)
    look,
)
from tether import Done, StepAgent, Worker, approvals, start_run
from tether.cli.app import app
from tether.core.ids import parse_iso
from tether.reporting.overnight import gather
from tether.reporting.query import Query, run_query
from tether.store.sqlite import SQLiteStore

HOSTILE = "<script>alert(1)</script>_*x*_"


def tether(db: Path, *args: str) -> tuple[int, str]:
    res = CliRunner().invoke(app, ["--store", str(db), *args])
    return res.exit_code, res.output


async def _pay(ctx: Any, state: dict[str, Any]) -> Any:
    return Done(await ctx.call(sample_agents.charge, amount=7))


@pytest.fixture
def night(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict[str, str]]:
    """A swarm `crew`: a looper its monitor alerted, blocked, then paused; a payer whose
    irreversible charge waits for approval; a second payer approved by ada, which ran."""
    monkeypatch.setenv("TETHER_TEST_SIDE", str(tmp_path / "side.txt"))
    db = tmp_path / "t.db"
    store = SQLiteStore(db)
    looper = StepAgent(_looping, name="looper", tools=[look], monitors=[Repeats])
    payer = StepAgent(_pay, name="payer", tools=[sample_agents.charge])
    agents = {"looper": looper, "payer": payer}
    runs = {"looper": start_run(store, looper, goal="look", agent_ref="looper", swarm="crew"),
            "waiting": start_run(store, payer, goal="pay", agent_ref="payer", swarm="crew",
                                 name=HOSTILE),
            "approved": start_run(store, payer, goal="pay", agent_ref="payer", swarm="crew",
                                  name="payer-2")}
    asyncio.run(Worker(store, agents=agents, poll_interval=0.01).run(until_idle=True))
    pending = {a.run: a.id for a in store.approvals(status="pending")}
    assert set(pending) == {runs["waiting"], runs["approved"]}
    approvals.decide(store, pending[runs["approved"]], approve=True, who="human:ada",
                     note="expected charge")
    asyncio.run(Worker(store, agents=agents, poll_interval=0.01).run(until_idle=True))
    assert store.get_run(runs["approved"]).status == "done"  # type: ignore[union-attr]
    store.close()
    return db, runs


def test_the_report_puts_what_waits_for_a_human_first(night: tuple[Path, dict[str, str]]) -> None:
    db, runs = night
    code, out = tether(db, "report")
    assert code == 0, out
    assert "the runs' own clocks" in out
    waiting = out[out.index("Waiting for a human"):out.index("Swarm crew")]
    store = SQLiteStore(db)
    pending = store.approvals(status="pending")[0]
    assert f"tether approve {pending.id}" in waiting and HOSTILE in waiting
    looper = store.get_run(runs["looper"]).name  # type: ignore[union-attr]
    assert f"paused: {looper}" in waiting and f"tether resume {looper}" in waiting
    alerts = [e for e in store.events(runs["looper"]) if e.kind == "alert"]
    assert f"tether alerts ack {alerts[-1].id}" in waiting  # the pause, nobody acked it
    assert out.index("Waiting for a human") < out.index("Swarm crew") < out.index("Approvals")


def test_the_report_says_per_agent_what_ran_who_approved_and_what_alerts_did(
        night: tuple[Path, dict[str, str]]) -> None:
    db, runs = night
    store = SQLiteStore(db)
    rep = gather(store, None, None)
    names = {k: store.get_run(v).name for k, v in runs.items()}  # type: ignore[union-attr]
    by_name = {r.name: r for r in rep.runs}
    assert set(rep.swarms) == {"crew"} and set(rep.swarms["crew"]) == {"looper", "payer"}
    assert by_name["payer-2"].effects == {"irreversible": 1}
    assert by_name["payer-2"].decisions["approve"] == 1
    assert by_name[HOSTILE].effects == {}
    decided = [a for a in rep.approvals if a.decision]
    assert [(a.name, a.decision, a.by, a.note) for a in decided] == [
        ("payer-2", "approved", "human:ada", "expected charge")]
    assert decided[0].waited is not None and decided[0].waited >= 0
    assert [a.decision for a in rep.approvals if a.name == HOSTILE] == [None]
    verdicts = [(a["verdict"], a["done"]) for a in rep.alerts]
    assert verdicts[0] == ("alert", []) and verdicts[-1] == ("pause", ["run.paused"])
    marks = {m.kind for m in by_name[names["looper"]].marks}
    assert {"alert", "paused"} <= marks
    code, out = tether(db, "report", "--format", "md")
    assert code == 0, out
    assert "approved by human:ada after" in out and "## Swarm crew" in out
    assert "<script>" not in out  # agents' text is escaped, not markup


def test_the_html_report_is_one_file_with_a_timeline_and_no_live_markup(
        night: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    db, runs = night
    looper = SQLiteStore(db).get_run(runs["looper"]).name  # type: ignore[union-attr]
    out_file = tmp_path / "night.html"
    code, out = tether(db, "report", "--format", "html", "--out", str(out_file))
    assert code == 0 and "wrote the report" in out, out
    page = out_file.read_text()
    assert page.startswith("<!doctype html>") and "<svg" in page
    assert 'data-kind="alert"' in page and 'data-kind="effect"' in page
    assert "<script" not in page and "&lt;script&gt;" in page
    assert not re.search(r"""(src|href)=["']?https?:""", page)  # nothing fetched from elsewhere
    lanes = re.findall(r'<text x="8" y="\d+" fill="#111827">([^<]*)</text>', page)
    assert {looper, "payer-2"} <= set(lanes)


def test_the_window_is_on_the_runs_clocks_and_in_the_zone_asked(
        night: tuple[Path, dict[str, str]]) -> None:
    db, runs = night
    store = SQLiteStore(db)
    evs = store.events(runs["approved"])
    decided = next(e for e in evs if e.kind == "approval.decided")
    t = parse_iso(decided.time)
    # Only the window's events count; what waits for a human is as of now, whatever the window.
    rep = gather(store, t, t + 0.000001)
    assert rep.events >= 1 and [r.name for r in rep.runs] == ["payer-2"]
    assert len(rep.waiting) == len(gather(store, None, None).waiting)
    paris = dt.datetime.fromtimestamp(t, dt.UTC).astimezone(
        dt.timezone(dt.timedelta(hours=1))).strftime("%H:%M")
    stamp = dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
    code, out = tether(db, "report", "--since", stamp + "+00:00", "--tz", "Europe/Paris")
    assert code == 0, out
    assert "Europe/Paris" in out
    # December: Paris is UTC+1; the header shows the window's start in that zone.
    assert f"since {dt.datetime.fromtimestamp(t, dt.UTC).date()}" in out or paris in out
    code, out = tether(db, "report", "--since", "2h", "--until", "3h")
    assert code != 0 and "--until is not after --since" in out
    code, out = tether(db, "report", "--format", "pdf")
    assert code != 0 and "text, md, html" in out and "Traceback" not in out


def test_query_narrows_by_kind_tool_actor_agent_and_alert(
        night: tuple[Path, dict[str, str]]) -> None:
    db, runs = night
    store = SQLiteStore(db)
    every = run_query(store, Query())
    assert len(every) == sum(len(store.events(r)) for r in runs.values())
    decided = run_query(store, Query(kinds=("approval.decided",), actor="ada"))
    assert [e.run for e in decided] == [runs["approved"]]
    assert run_query(store, Query(kinds=("approval.decided",), actor="human:bob")) == []
    humans = run_query(store, Query(actor="human:"))
    assert humans and all(e.actor.startswith("human:") for e in humans)
    charges = run_query(store, Query(tool="charge", kinds=("policy.decided",)))
    assert {e.run for e in charges} == {runs["waiting"], runs["approved"]}
    irreversible = run_query(store, Query(effect="irreversible", agent="payer"))
    assert irreversible and {e.run for e in irreversible} <= {runs["waiting"], runs["approved"]}
    assert run_query(store, Query(agent="looper", kinds=("effect.intent",))) == []
    pause = [e for e in store.events(runs["looper"]) if e.kind == "alert"][-1]
    focused = run_query(store, Query(alert=pause.id))
    ids = {e.id for e in focused}
    assert pause.id in ids and set(pause.causes) <= ids
    assert "run.paused" in {e.kind for e in focused}  # what it caused
    by_monitor = run_query(store, Query(alert="repeats"))
    assert [e.payload["verdict"] for e in by_monitor] == ["alert", "block", "pause"]
    assert len(run_query(store, Query(limit=3))) == 3


def test_query_from_the_shell_prints_lines_or_json_and_refuses_bad_input(
        night: tuple[Path, dict[str, str]]) -> None:
    db, runs = night
    called = next(e.id for e in SQLiteStore(db).events(runs["looper"]) if e.kind == "tool.called")
    code, out = tether(db, "audit", "query", "--kind", "approval.decided", "--json")
    assert code == 0, out
    rows = [json.loads(x) for x in out.splitlines()]
    assert [(r["run_name"], r["payload"]["by"]) for r in rows] == [("payer-2", "human:ada")]
    code, out = tether(db, "audit", "query", "--run", runs["looper"], "--kind", "alert")
    assert code == 0, out
    assert out.splitlines()[0].startswith("events ") and out.count("by repeats (same_call") == 3
    for args, says in ((["--kind", "nope"], "unknown event kind"),
                       (["--since", "yesterday"], "ISO-8601"),
                       (["--tz", "Mars/Base"], "not a time zone"),
                       (["--tz", "[" * 300], "not a time zone"),  # too long for a file name
                       (["--run", "nosuchrun"], "nosuchrun"),
                       (["--alert", called], "give an alert's id")):
        code, out = tether(db, "audit", "query", *args)
        assert code != 0 and says in out and "Traceback" not in out, (args, out)


def test_an_empty_store_reports_nothing_waiting(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    SQLiteStore(db).close()
    code, out = tether(db, "report", "--since", "2026-01-01")
    assert code == 0, out
    assert "nothing: no approval" in out and "no run journaled anything" in out
    code, out = tether(db, "report", "--format", "html", "--since", "2026-01-01")
    assert code == 0 and "nothing happened in this window" in out
    code, out = tether(db, "report")  # a span needs an event to count back from
    assert code != 0 and "no events to count back from" in out
