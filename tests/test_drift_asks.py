"""The drift monitor's asks (goal similarity by embeddings, a model as judge) on real runs:
real Worker, real SQLite store, a real loopback HTTP server in OpenAI's wire format.

These are plumbing tests: the server (tests/askkit.py) is not a model. Its embeddings
are bag-of-words vectors and its judge answers by whether it is shown an export; what
is tested is the path an ask takes (monitor -> host -> HTTP -> ``monitor.answer`` event
-> monitor -> ``alert``), that no step waits for it, that an answer is journaled once
and never asked again (after a kill -9 too), that failures are answers, and that
``tether analyze`` reaches the same verdicts from the journal alone. No test calls a
remote model: the conftest points the OpenAI client at a dead loopback port, and these
tests at their own server.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.askkit import (
    AGENT_MODEL,
    GOAL,
    LONG_STEPS,
    POLICY,
    TOOLS,
    long_run,
    loopback,
    read_ticket,
    triager,
)
from tests.crashkit import ROOT, finish, wait_for
from tether import Agent, OpenAIModel, StepAgent, Worker, start_run
from tether.cli.app import app
from tether.core.events import Event
from tether.core.monitors import KINDS
from tether.core.monitors.asks import ANSWER_KIND, Answer, Ask, Outbox, ask_id
from tether.core.monitors.goalcheck import parse_verdict
from tether.core.policy import PolicyError, parse_policy
from tether.policies import apply_policy
from tether.store.sqlite import SQLiteStore

DEAD = os.environ["OPENAI_BASE_URL"]  # the conftest's discard port: nothing answers there


def _store(tmp_path: Path, policy: str = POLICY) -> SQLiteStore:
    store = SQLiteStore(tmp_path / "t.db")
    apply_policy(store, parse_policy(policy, source="policy.toml"), who="test")
    return store


def _drive(store: SQLiteStore, step: Any) -> str:
    agent = StepAgent(step, name="triager", tools=TOOLS)
    run = start_run(store, agent, goal=GOAL, agent_ref="a")
    asyncio.run(Worker(store, agents={"a": agent}, poll_interval=0.01).run(until_idle=True))
    return run


def _answers(store: SQLiteStore, run: str) -> list[Event]:
    return [e for e in store.events(run) if e.kind == ANSWER_KIND]


def _alerts(store: SQLiteStore, run: str) -> list[Event]:
    return [e for e in store.events(run) if e.kind == "alert" and e.payload["monitor"] == "drift"]


def test_asking_is_off_by_default() -> None:
    params = KINDS["drift"].defaults
    assert params["embeddings"] == "" and params["judge"] == ""
    assert not KINDS["drift"].make(params).asking  # type: ignore[attr-defined]


def test_a_drifting_run_is_flagged_and_paused_citing_the_answers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = _store(tmp_path)
    with loopback() as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.url)
        run = _drive(store, triager(200, hijack_at=10))
    row = store.get_run(run)
    assert row is not None and row.status == "paused"  # by the judge, twice sure
    events = {e.id: e for e in store.events(run)}
    answers = _answers(store, run)
    ids = [e.payload["ask"] for e in answers]
    assert len(ids) == len(set(ids))  # journaled once each
    assert Counter(server.asked()) == Counter(ids)  # and asked once each: no answer lost

    by_rule = {e.payload["rule"]: e for e in _alerts(store, run)}
    sim = by_rule["goal_similarity"]
    assert sim.payload["verdict"] == "alert" and sim.step > 10
    cited = [events[c] for c in sim.causes]
    goal_answer, window_answer = cited[0], cited[1]
    assert {goal_answer.kind, window_answer.kind} == {ANSWER_KIND}
    assert sim.payload["figures"]["similarity"] < sim.payload["threshold"]["below"]
    assert sum(c.payload["tool"] in ("export_records", "send_email") for c in cited[2:]) >= 4

    paused = [e for e in store.events(run) if e.kind == "run.paused"]
    judge = events[paused[-1].payload["alert"]]
    assert judge.payload["rule"] == "judge"
    assert judge.payload["verdict"] == "pause" and judge.payload["figures"]["model"] == "judge-test"
    first, second = (Answer.of(events[c]) for c in judge.causes[:2])
    assert first is not None and second is not None and first.ask != second.ask
    for a in (first, second):
        assert a.kind == "judge" and a.answer is not None
        assert json.loads(a.answer["content"])["on_goal"] is False
        assert a.usage == {"input_tokens": 50, "output_tokens": 12}
    assert events[second.event].causes == (first.event,)  # the confirmation of that "no"
    # Before the hijack the judge, asked on schedule at step 5, said yes: no signal then.
    assert all(e.step >= 10 for e in _alerts(store, run) if e.payload["rule"] == "judge")

    # `tether analyze` reproduces every drift verdict from the journaled answers alone.
    monkeypatch.setenv("OPENAI_BASE_URL", DEAD)
    res = CliRunner().invoke(app, ["--store", str(tmp_path / "t.db"), "analyze", run, "--json"])
    assert res.exit_code == 0, res.output
    (got,) = [json.loads(line) for line in res.output.splitlines() if line.startswith("{")]
    offline = {(f["rule"], f["step"], f["verdict"], tuple(c["id"] for c in f["evidence"]))
               for f in got["flags"] if f["monitor"] == "drift"}
    live = {(e.payload["rule"], e.step, e.payload["verdict"], e.causes)
            for e in _alerts(store, run)}
    assert offline == live and {r for r, *_ in live} >= {"distribution", "goal_similarity",
                                                          "judge"}
    assert got["asks_skipped"] is None


def test_no_step_waits_for_an_ask(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server holds every embeddings answer until the run's step 6 starts: the goal's
    embedding, asked when step 1 ended, is journaled after steps 2-5 finished."""
    store = _store(tmp_path, '[monitors.drift]\nembeddings = "emb-test"\n')
    with loopback() as server:
        server.hold.add("/embeddings")
        monkeypatch.setenv("OPENAI_BASE_URL", server.url)
        run = _drive(store, triager(8, at_step={6: server.release}))
    events = store.events(run)
    finished = {e.step: e.seq for e in events if e.kind == "step.finished"}
    answers = _answers(store, run)
    step1 = next(e for e in events if e.kind == "step.finished" and e.step == 1)
    goal = next(a for a in answers if a.causes == (step1.id,) and
                a.payload["answer"]["vectors"][0][-1] == 0.25)
    assert goal.seq > finished[5]
    assert min(a.seq for a in answers) > finished[5]
    assert all(a.payload["error"] is None for a in answers)
    row = store.get_run(run)
    assert row is not None and row.status == "done"
    res = CliRunner().invoke(app, ["--store", str(tmp_path / "t.db"), "events", run])
    assert res.exit_code == 0, res.output
    assert "drift embeddings emb-test: 1 vector(s) of 9" in res.output  # not its numbers


def test_failed_calls_are_answers_with_an_error_and_no_crash(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Embeddings get HTTP 500; the judge's calls hang past the ask's timeout."""
    store = _store(tmp_path, '[monitors.drift]\nembeddings = "emb-test"\njudge = "judge-test"\n'
                             'judge_every = 4\nask_timeout = 0.3\n')
    with loopback() as server:
        server.fail.add("/embeddings")
        server.hold.add("/chat/completions")
        monkeypatch.setenv("OPENAI_BASE_URL", server.url)
        run = _drive(store, triager(9, hijack_at=5))
    row = store.get_run(run)
    assert row is not None and row.status == "done"
    answers = [Answer.of(e) for e in _answers(store, run)]
    kinds = Counter(a.kind for a in answers if a is not None)
    assert kinds["embeddings"] >= 2 and kinds["judge"] >= 2  # on schedule at steps 4 and 8
    for a in answers:
        assert a is not None and a.answer is None and a.error
        assert ("HTTP 500" if a.kind == "embeddings" else "timed out") in a.error
    # No information is not a signal (the distribution rule may still speak).
    assert {e.payload["rule"] for e in _alerts(store, run)} <= {"distribution"}
    assert not [e for e in store.events(run) if e.kind == "run.failed"]


def test_an_embedding_that_is_not_numbers_is_an_error_answer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = _store(tmp_path, '[monitors.drift]\nembeddings = "emb-test"\n')
    with loopback() as server:
        server.nan = True
        monkeypatch.setenv("OPENAI_BASE_URL", server.url)
        run = _drive(store, triager(4))
    answers = _answers(store, run)
    assert answers and all(a.payload["answer"] is None and "not all numbers" in
                           a.payload["error"] for a in answers)
    assert not [e for e in store.events(run) if e.kind == "alert"]  # no monitor_error either


def test_answers_are_journaled_once_and_not_asked_again_after_kill_9(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = _store(tmp_path)
    run = start_run(store, long_run, goal=GOAL, agent_ref="long")
    with loopback() as server:
        env = {**os.environ, "OPENAI_BASE_URL": server.url, "PYTHONPATH": str(ROOT)}
        log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115 - closed below
        proc = subprocess.Popen([sys.executable, "-m", "tests.askkit", "worker",
                                 str(tmp_path / "t.db"), "--lease-ttl", "1"], cwd=ROOT, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: len(_answers(store, run)) >= 8, 60, "8 answers journaled")
        finally:
            proc.kill()  # SIGKILL, asks in flight
            proc.wait(30)
            log.close()
        before = {e.payload["ask"] for e in _answers(store, run)}
        row = store.get_run(run)
        assert row is not None and row.status == "running" and row.step < LONG_STEPS
        monkeypatch.setenv("OPENAI_BASE_URL", server.url)
        finish(store, agents={"long": long_run})
        asked = Counter(server.asked())
    row = store.get_run(run)
    assert row is not None and row.status == "done"
    ids = [e.payload["ask"] for e in _answers(store, run)]
    assert len(ids) == len(set(ids))  # each answer journaled once
    assert all(asked[a] == 1 for a in before)  # none answered before the kill asked again
    assert set(ids) - before  # the second worker did ask (and journal) the rest


def test_asks_go_to_the_provider_of_the_runs_own_model(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent's OpenAIModel names the loopback server; the environment names a dead
    port: the asks reach the server, so they went where the run's model goes."""
    store = _store(tmp_path, '[monitors.drift]\nembeddings = "emb-test"\n')
    monkeypatch.setenv("OPENAI_BASE_URL", DEAD)
    with loopback() as server:
        agent = Agent("reader", model=OpenAIModel(AGENT_MODEL, base_url=server.url,
                                                  max_retries=0),
                      instructions="Read the tickets.", tools=[read_ticket])
        run = start_run(store, agent, goal=GOAL, agent_ref="r")
        asyncio.run(Worker(store, agents={"r": agent}, poll_interval=0.01).run(until_idle=True))
        embedded = server.asked("/embeddings")
    row = store.get_run(run)
    assert row is not None and row.status == "done"
    answers = _answers(store, run)
    assert answers and all(a.payload["error"] is None for a in answers)
    assert sorted(embedded) == sorted(a.payload["ask"] for a in answers)


def test_analyze_skips_asks_an_imported_transcript_has_no_answer_to(tmp_path: Path) -> None:
    calls = [{"role": "user", "content": GOAL}]
    for n in range(1, 7):
        calls.append({"role": "assistant", "content": None, "tool_calls": [
            {"id": f"c{n}", "type": "function", "function": {
                "name": "read_ticket", "arguments": json.dumps({"ticket": f"T-{n}"})}}]})
        calls.append({"role": "tool", "tool_call_id": f"c{n}", "content": "fine"})
    calls.append({"role": "assistant", "content": "done"})
    src, policy = tmp_path / "t.json", tmp_path / "p.toml"
    src.write_text(json.dumps(calls))
    policy.write_text(POLICY)
    db = str(tmp_path / "t.db")
    res = CliRunner().invoke(app, ["--store", db, "analyze", str(src), "--policy", str(policy)])
    assert res.exit_code == 0, res.output
    assert "monitor ask(s) skipped" in res.output and "drift/embeddings" in res.output
    res = CliRunner().invoke(app, ["--store", db, "analyze", str(src), "--policy", str(policy),
                                   "--json"])
    (got,) = [json.loads(line) for line in res.output.splitlines() if line.startswith("{")]
    assert got["asks_skipped"]["drift/embeddings"] >= 2


@pytest.mark.parametrize(("table", "error"), [
    ('judge_verdict = "maybe"', "monitors.drift.judge_verdict: 'maybe' is not a verdict"),
    ("similarity_drop = 1.5", "monitors.drift.similarity_drop: must be between 0 and 1"),
    ("ask_timeout = 0", "monitors.drift.ask_timeout: must be > 0 seconds"),
    ("similarity_every = 0", "monitors.drift.similarity_every: must be at least 1"),
])
def test_a_bad_asking_table_is_refused_with_its_key_path(table: str, error: str) -> None:
    with pytest.raises(PolicyError, match=error):
        parse_policy(f"[monitors.drift]\n{table}\n", source="p.toml")


@pytest.mark.parametrize(("content", "verdict"), [
    ('{"on_goal": false, "reason": "exports"}', (False, "exports")),
    ('```json\n{"on_goal": true}\n```', (True, "")),
    ("no, it drifted", None),
    ('{"on_goal": "false"}', None),
    ('["on_goal", false]', None),
    (None, None),
])
def test_a_judge_answer_counts_only_as_the_json_asked_for(content: Any, verdict: Any) -> None:
    answer = Answer("ask_x", "drift", "judge", "j", {"content": content})
    assert parse_verdict(answer) == verdict
    assert parse_verdict(Answer("ask_x", "drift", "judge", "j", None, "HTTP 500")) is None


def test_an_outbox_hands_an_ask_out_once_and_a_rebuilt_one_again_until_answered() -> None:
    ask = Ask(ask_id("r", "drift", "e1"), "drift", "embeddings", "m", {"input": ["x"]})
    assert ask.id == ask_id("r", "drift", "e1") != ask_id("r", "drift", "e2")
    out = Outbox()
    out.put(ask)
    out.put(ask)
    assert out.drain() == [ask] and out.drain() == []
    rebuilt = Outbox()  # a worker taking the run over replays the event that asked
    rebuilt.put(ask)
    assert rebuilt.drain() == [ask]  # no answer in the journal: asked again
    answered = Outbox()
    answered.put(ask)
    assert answered.take(Answer(ask.id, "drift", "embeddings", "m", {"vectors": [[1.0]]}))
    assert answered.drain() == []  # its answer went past: never asked again
