"""The CLI as people read it: listings at 80 and 200 columns, `show`, help texts."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest
import typer
import typer.main
from typer.core import TyperArgument, TyperOption
from typer.testing import CliRunner

from tests import readable_agents, sample_agents
from tether import SQLiteStore, Worker, start_run
from tether.cli import common
from tether.cli.app import app
from tether.core.ids import parse_iso

runner = CliRunner()


def tether(*args: str) -> tuple[int, str]:
    res = runner.invoke(app, list(args))
    return res.exit_code, res.output


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The demo's first night: a page waits for approval; the store's path."""
    d = tmp_path_factory.mktemp("readable") / "night"
    code, out = tether("demo", "--dir", str(d))
    assert code == 0, out
    return str(d / "tether.db")


@pytest.fixture(params=[80, 200], ids=lambda c: f"COLUMNS={c}")
def columns(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """A terminal this wide (the console read COLUMNS when it was made: set both)."""
    width = int(request.param)
    monkeypatch.setenv("COLUMNS", str(width))
    monkeypatch.setattr(common.console, "_width", width)
    return width


def _json(store: str, *args: str) -> list[dict[str, object]]:
    code, out = tether("--store", store, *args, "--json")
    assert code == 0, out
    return [json.loads(line) for line in out.splitlines()]


def test_events_one_line_each_fits_the_terminal(night: str, columns: int) -> None:
    evs = _json(night, "events", "triage")
    code, out = tether("--store", night, "events", "triage")
    assert code == 0, out
    lines = out.splitlines()
    assert all(len(line) <= columns for line in lines), max(lines, key=len)
    body = [line for line in lines if re.match(r"\s*\d+ ", line)]
    assert len(body) == len(evs)  # one line per event, never folded
    for line, e in zip(body, evs, strict=True):
        assert line.split()[0] == str(e["seq"]) and f" {e['kind']} " in line
        assert str(e["time"])[11:19] in line
    # The summary says what happened, not 11 characters of JSON.
    assert any("fs_list(path=inbox)" in line for line in body)
    assert any(re.search(r"model\.called +scripted: '(urgent|routine)'", line) for line in body)
    run_id = str(evs[0]["run"])
    assert run_id in out  # the id whole, in the title
    wide = columns >= 120
    assert ("agent:triage" in out) == wide  # the actor goes first in a narrow terminal


def test_events_full_prints_every_payload_whole(night: str, columns: int) -> None:
    evs = _json(night, "events", "triage", "--kind", "effect.intent")
    code, out = tether("--store", night, "events", "triage", "--kind", "effect.intent",
                       "--full")
    assert code == 0, out
    for e in evs:
        payload = e["payload"]
        assert isinstance(payload, dict)
        for key, value in payload["arguments"].items():
            assert json.dumps(key) in out and json.dumps(value) in out  # nothing cut


def test_events_of_an_erased_payload_and_an_empty_run(tmp_path: Path, night: str) -> None:
    from tether.store.sqlite import SQLiteStore
    copy = tmp_path / "copy.db"
    assert tether("--store", night, "store", "backup", str(copy))[0] == 0
    (first,) = _json(str(copy), "events", "triage", "--kind", "run.started")
    s = SQLiteStore(copy)
    try:
        s.erase_payload(str(first["id"]))
    finally:
        s.close()
    code, out = tether("--store", str(copy), "events", "triage", "--limit", "2")
    assert code == 0 and "(payload erased)" in out
    code, out = tether("--store", str(copy), "events", "triage", "--after", "100000")
    assert code == 0 and "(no events)" in out


def test_approvals_readable_ids_whole(night: str, columns: int) -> None:
    (req,) = _json(night, "approvals")
    for args in (["approvals"], ["approvals", "--all"]):
        code, out = tether("--store", night, *args)
        assert code == 0, out
        lines = out.splitlines()
        assert all(len(line) <= columns for line in lines), out
        (row,) = [line for line in lines if str(req["id"]) in line]  # one line, id whole
        assert "page_oncall" in row and "triage" in row
        assert "message=Secur" in row  # arguments as key=value, cut to the room left
        assert ("page-at-night" in row) == (columns >= 150)
        assert ("pending" in row) == (columns >= 150 or "--all" in args)


def test_approvals_say_when_asked_on_the_runs_clock(night: str, columns: int) -> None:
    """As the dashboard and the night report: the demo's night runs on a fixed clock (in
    December 2026), so its request's wall time (``requested_at``) is another."""
    (req,) = _json(night, "approvals")
    (asked,) = _json(night, "events", "triage", "--kind", "approval.requested")
    assert asked["id"] == req["id"] and req["requested_run_time"] == asked["time"]
    run_clock = common.at(parse_iso(str(asked["time"])))[5:]
    wall_clock = common.when(float(req["requested_at"]))[5:]  # type: ignore[arg-type]
    assert run_clock != wall_clock
    code, out = tether("--store", night, "approvals")
    assert code == 0, out
    (row,) = [line for line in out.splitlines() if str(req["id"]) in line]
    if columns >= 150:
        assert "requested (run clock)" in out and "expires (wall clock)" in out
        assert run_clock in row and wall_clock not in row
    else:  # narrow: no time but the expiry
        assert run_clock not in row and wall_clock not in row


def _commands() -> list[tuple[list[str], Any]]:
    """Every command and group of the app, with the words that name it."""
    out: list[tuple[list[str], Any]] = []

    def walk(path: list[str], cmd: Any) -> None:
        out.append((path, cmd))
        for name, sub in getattr(cmd, "commands", {}).items():
            walk([*path, name], sub)
    walk([], typer.main.get_command(app))
    return out


@pytest.mark.parametrize("path", [p for p, _ in _commands()], ids=lambda p: " ".join(p) or "-")
def test_help_names_values_not_python_types(path: list[str], monkeypatch: pytest.MonkeyPatch
                                            ) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    code, out = tether(*path, "--help")
    assert code == 0, out
    assert not re.findall(r"<[a-z][\w\[\], ]*>", out), out  # <str>, <bool>, <list[str]>
    assert re.search(r"^ Usage: tether", out, re.M) and len(out.split("Usage:")[1]) > 80
    (cmd,) = [c for p, c in _commands() if p == path]
    assert cmd.help and cmd.help.strip(), f"tether {' '.join(path)} has no description"
    for param in cmd.params:
        what = f"tether {' '.join(path)} {param.name}"
        assert getattr(param, "help", None), f"{what} has no help text"
        if isinstance(param, TyperArgument):
            assert param.metavar and param.metavar.isupper(), f"{what}: a metavar like RUN"
        elif isinstance(param, TyperOption) and not param.is_flag:
            assert param.metavar and param.metavar == param.metavar.upper(), \
                f"{what}: a metavar like SECONDS, KEY=NUMBER"


# -- show: the result, the last error, what the run waits for; RUN by agent name -------------

AGENTS = ("finisher", "crasher", "napper", "listener")


@pytest.fixture
def runs(tmp_path: Path) -> tuple[str, dict[str, str]]:
    """One run of each agent (two of ``napper``), driven until each rests."""
    db = tmp_path / "t.db"
    store = SQLiteStore(db)
    ids = {name: start_run(store, getattr(readable_agents, name),
                           agent_ref=f"tests.readable_agents:{name}", goal="g",
                           name=f"{name}-1") for name in AGENTS}
    ids["napper-2"] = start_run(store, readable_agents.napper, goal="g", name="napper-2",
                                agent_ref="tests.readable_agents:napper")
    ids["ticker"] = start_run(store, sample_agents.ticker, goal="g", name="ticker",
                              agent_ref="tests.sample_agents:ticker", budget={"steps": 1})
    asyncio.run(Worker(store, poll_interval=0.01).run(until_idle=True))
    store.close()
    return str(db), ids


def _show(db: str, run: str) -> tuple[str, dict[str, Any]]:
    code, out = tether("--store", db, "show", run)
    assert code == 0, out
    code, js = tether("--store", db, "show", run, "--json")
    assert code == 0, js
    return " ".join(out.split()), json.loads(js)


def test_show_gives_result_error_and_what_it_waits_for(runs: tuple[str, dict[str, str]]
                                                       ) -> None:
    db, ids = runs
    text, js = _show(db, ids["finisher"])
    assert 'result: {"note":"all filed","tickets":3}' in text
    assert js["result"] == {"tickets": 3, "note": "all filed"} and js["last_error"] is None
    text, js = _show(db, ids["crasher"])
    # The reason already says it; --json has it apart.
    assert js["status"] == "failed" and "last error" not in text
    assert "reason: run " in text and "RuntimeError: the inbox folder vanished" in text
    assert js["last_error"]["kind"] == "run.failed" and js["last_error"]["step"] == 1
    assert js["waiting_for"]["operator"].startswith(f"run {ids['crasher']} step 1")
    text, js = _show(db, ids["ticker"])  # paused by its budget: the error is its own line
    assert js["status"] == "paused" and js["last_error"]["kind"] == "run.paused"
    assert "last error (step 2, event" in text and "run budget steps=1 reached" in text
    text, js = _show(db, ids["napper"])
    wake = js["waiting_for"]["wake_at"]
    assert js["status"] == "sleeping" and isinstance(wake, float)
    assert f"sleeping until {common.when(wake)} (run clock)" in text
    text, js = _show(db, ids["listener"])
    assert js["waiting_for"] == {"messages": True, "deadline": None}
    assert "waiting for messages (no deadline)" in text


def test_show_of_a_run_awaiting_approval(night: str) -> None:
    (req,) = _json(night, "approvals")
    text, js = _show(night, "triage")
    (a,) = js["waiting_for"]["approvals"]
    assert (a["id"], a["tool"]) == (req["id"], "page_oncall")
    assert f"waiting for approval {req['id']}: page_oncall at step" in text
    assert f"`tether approve {req['id']}`" in text


def test_run_by_agent_name_and_ambiguous_names(runs: tuple[str, dict[str, str]]) -> None:
    db, ids = runs
    for ref in ("finisher", "tests.readable_agents:finisher"):  # the agent of one run
        code, out = tether("--store", db, "show", ref, "--json")
        assert code == 0 and json.loads(out)["id"] == ids["finisher"], out
    code, out = tether("--store", db, "events", "crasher", "--kind", "run.failed", "--json")
    assert code == 0 and json.loads(out)["run"] == ids["crasher"]
    code, out = tether("--store", db, "show", "napper")  # the agent of two runs
    assert code == 2 and out.startswith("error: 'napper' is the agent of 2 runs"), out
    flat = " ".join(out.split())
    for name in ("napper-1", "napper-2"):
        assert f"{name} ({ids[name if name == 'napper-2' else 'napper']}, sleeping)" in flat
    code, out = tether("--store", db, "stop", "napper")
    assert code == 2 and "is the agent of 2 runs" in out  # nothing was stopped
    code, out = tether("--store", db, "runs", "--status", "stopped", "--json")
    assert out.strip() == ""
    code, out = tether("--store", db, "show", "napper-1", "--json")  # its own name wins
    assert code == 0 and json.loads(out)["id"] == ids["napper"]


# -- tether worker: one line per change of a run's state, a summary at exit -----------------

def _start_every_ending(tmp_path: Path) -> tuple[str, dict[str, str]]:
    """Runs that end every way: done with effects, failed, sleeping, waiting, awaiting
    approval, paused by a budget. Not driven yet."""
    db = tmp_path / "w.db"
    store = SQLiteStore(db)
    # A pause point asks before the irreversible effect, whatever the policy in force.
    ids = {name: start_run(store, getattr(readable_agents, name), goal="g", name=name,
                           agent_ref=f"tests.readable_agents:{name}",
                           pause_points={"before_irreversible": True})
           for name in ("crasher", "napper", "listener", "asker")}
    ids["putter"] = start_run(store, sample_agents.putter, agent_ref="tests.sample_agents:putter",
                              goal="g", name="putter", workspace=tmp_path / "ws")
    ids["ticker"] = start_run(store, sample_agents.ticker, agent_ref="tests.sample_agents:ticker",
                              goal="g", name="ticker", budget={"steps": 2})
    store.close()
    return str(db), ids


def test_worker_logs_each_change_and_a_summary(tmp_path: Path) -> None:
    db, ids = _start_every_ending(tmp_path)
    code, out = tether("--store", db, "worker", "--until-idle")
    assert code == 0, out
    lines = [" ".join(line.split()) for line in out.splitlines()]
    for name, rid in ids.items():
        mine = [line for line in lines if f"run {name} ({rid}):" in line]
        assert len(mine) == 2 and "took it at step 0 (running)" in mine[0], (name, out)
    said = {name: next(line for line in lines if f"run {name} (" in line and "took" not in line)
            for name in ids}
    assert said["putter"].endswith(": done [3 steps, 3 effects]")
    assert f"failed: run {ids['crasher']} step 1: RuntimeError: the inbox folder vanished" \
        in said["crasher"] and said["crasher"].endswith("[0 steps, 0 effects]")
    assert re.search(r": sleeping until \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \[1 step, 0 effects\]$",
                     said["napper"])
    assert said["listener"].endswith(": waiting for messages [1 step, 0 effects]")
    assert ": awaiting approval: run" in said["asker"] and "charge" in said["asker"]
    assert ": paused: run" in said["ticker"] and "budget steps=2 reached" in said["ticker"]
    assert lines[-1] == ("worker done: drove 6 runs, 7 steps, 3 effects; left 1 "
                         "awaiting_approval, 1 done, 1 failed, 1 paused, 1 sleeping, 1 waiting")


def test_worker_quiet_and_json(tmp_path: Path) -> None:
    db, ids = _start_every_ending(tmp_path)
    code, out = tether("--store", db, "worker", "--until-idle", "--quiet")
    assert code == 0, out
    lines = out.splitlines()
    # The policy it runs under (said even when quiet), the failure, the summary.
    assert len(lines) == 3 and lines[0].startswith("runs under the built-in defaults"), out
    assert f"run crasher ({ids['crasher']}): failed" in lines[1]
    assert lines[2].startswith("worker done: drove 6 runs")
    (tmp_path / "again").mkdir()
    db, ids = _start_every_ending(tmp_path / "again")
    code, out = tether("--store", db, "worker", "--until-idle", "--json")
    assert code == 0, out
    objs = [json.loads(line) for line in out.splitlines()]
    assert objs[0]["event"] == "start" and objs[0]["store"].endswith("w.db")
    assert [p.split(" (hash ")[0] for p in objs[0]["policies"]] == ["built-in defaults"]
    left = {o["name"]: o for o in objs if o["event"] == "left"}
    assert {n: o["status"] for n, o in left.items()} == {
        "crasher": "failed", "napper": "sleeping", "listener": "waiting",
        "asker": "awaiting_approval", "putter": "done", "ticker": "paused"}
    assert (left["putter"]["steps"], left["putter"]["effects"]) == (3, 3)
    assert isinstance(left["napper"]["wake_at"], float)
    assert objs[-1] == {"event": "summary", "time": objs[-1]["time"], "runs": 6, "takes": 6,
                        "steps": 7, "effects": 3, "by_status": {
                            "awaiting_approval": 1, "done": 1, "failed": 1, "paused": 1,
                            "sleeping": 1, "waiting": 1}, "failed": False}
    code, out = tether("--store", db, "worker", "--until-idle", "--json", "--quiet")
    assert code == 2 and "--quiet and --json" in out


def _event(kind: str, payload: Any) -> Any:
    from tether.core.events import Chain
    return Chain("R").make(id="E", kind=kind, time="2026-12-01T06:00:00.000000Z", epoch=0,
                           step=2, actor="agent:a", payload=payload)


@pytest.mark.parametrize(("kind", "payload", "says"), [
    ("model.called", {"i": 0, "fp": "x", "model": "gpt", "cost_usd": 0.0012, "response": {
        "content": None, "usage": {"input_tokens": 90, "output_tokens": 10},
        "tool_calls": [{"id": "c", "name": "send", "arguments": '{"to": "ops", "n": 2}'}]}},
     "gpt: send(to=ops, n=2)  [100 tok $0.00120]"),
    ("model.called", {"model": "gpt", "response": {"content": "All\n  done.", "usage": {}}},
     "gpt: 'All done.'  [0 tok]"),
    ("tool.called", {"i": 1, "fp": "x", "tool": "fs_read", "raw_arguments": "{oops",
                     "error": "error: tool fs_read: arguments are not valid JSON",
                     "rejected": True},
     "fs_read({oops) failed: error: tool fs_read: arguments are not valid JSON"),
    ("effect.failed", {"i": 2, "error": "tool x failed: OSError: disk", "traceback": "T" * 900},
     "tool x failed: OSError: disk"),
    ("run.sleeping", {"until": 1796104800.0, "deferred": True, "reason": "quiet hours"},
     "until 2026-12-01 06:00:00 deferred=true reason=quiet hours"),
    ("policy.decided", {"verdict": "approve", "tool": "page", "effect": "irreversible",
                        "rule": "night", "reason": "asks a human", "policy_hash": "h" * 64},
     "approve page (irreversible) by rule night: asks a human"),
    ("run.done", None, "(payload erased)"),
])
def test_event_summaries_say_what_matters(kind: str, payload: Any, says: str) -> None:
    from tether.reporting import lines as render
    e = _event(kind, payload)
    assert render.summary(e) == says
    line = render.event_line(e, 60, wide=False)
    assert len(line) <= 60 and line.startswith("   1 06:00:00 ") and kind in line


def test_worker_stopped_by_sigterm_says_where_it_left_each_run(tmp_path: Path) -> None:
    """A real worker process: each line reaches the pipe as it happens (log collectors read
    it live), and a drained run is reported as left running, with its counts."""
    import signal
    import subprocess
    import sys
    store = SQLiteStore(tmp_path / "t.db")
    rid = start_run(store, sample_agents.ticker, agent_ref="tests.sample_agents:ticker",
                    goal="g", name="ticker")  # steps until stopped
    store.close()
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([str(Path(sys.executable).with_name("tether")), "--store",
                             str(tmp_path / "t.db"), "worker", "--json"], cwd=root,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        first = [json.loads(proc.stdout.readline()) for _ in range(2)]  # the barrier
        assert [o["event"] for o in first] == ["start", "took"] and first[1]["run"] == rid
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    left, summary = [json.loads(line) for line in out.splitlines()]
    assert (left["event"], left["status"]) == ("left", "running") and left["steps"] >= 0
    assert summary["by_status"] == {"running": 1} and summary["steps"] == left["steps"]


def test_worker_log_lines_for_runs_left_running_or_abandoned(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from tether.cli.worker_log import WorkerLog
    from tether.runtime.changes import RunChange
    monkeypatch.setattr(common.console, "_width", 200)
    for quiet in (False, True):
        log = WorkerLog(quiet=quiet)
        log.change(RunChange("left", "R1", "drained", "running", 4, 2, 1))
        log.change(RunChange("left", "R2", "lost", "abandoned", 7, 0, 0))
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3, out  # --quiet keeps the abandoned one only
    assert out[0].endswith("run drained (R1): left running (this worker stops; any worker "
                           "goes on with it) [2 steps, 1 effect]")
    assert out[1].endswith("run lost (R2): abandoned (lease lost or store failing; the next "
                           "owner re-runs the step) [0 steps, 0 effects]")
    assert out[2][8:] == out[1][8:]  # the same line, but for its HH:MM:SS


def test_board_and_messages_one_line_each(tmp_path: Path, columns: int) -> None:
    store = SQLiteStore(tmp_path / "t.db")
    rid = start_run(store, readable_agents.poster, agent_ref="tests.readable_agents:poster",
                    goal="g", name="poster", swarm="night")
    asyncio.run(Worker(store, poll_interval=0.01).run(until_idle=True))
    store.close()
    db = str(tmp_path / "t.db")
    for args, first in ((["board"], "night"), (["board", "--swarm", "night"],
                                               "night" if columns >= 120 else
                                               "nightly-import-status"),
                        (["messages"], None)):
        code, out = tether("--store", db, *args)
        assert code == 0, out
        lines = out.splitlines()
        assert all(len(line) <= columns for line in lines), out
        (row,) = [line for line in lines if "poster" in line]  # one line each
        cells = [c.strip() for c in row.strip("│ ").split("│")]
        if first is None:
            (msg,) = _json(db, "messages")
            assert cells[0] == msg["id"] and cells.count("poster") == 2  # the id whole
        else:
            assert cells[0] == first and "nightly-import-status" in cells  # the key whole
        body = next(c for c in cells if c.startswith("{"))
        assert body.startswith('{"rows":1234,"su')  # stored with sorted keys
        assert body.endswith("…") and len(body) <= 60
    code, out = tether("--store", db, "show", rid, "--json")
    assert json.loads(out)["status"] == "done"
