"""The dashboard's pages and actions, driven in process (an ASGI client on the app, real
SQLite stores): each page and its live part, rollback (plan first, then its undos run in
the server), fork with state edits, the swarm graph's focus. Tokens, sessions and roles:
test_ui_tokens.py."""

from __future__ import annotations

import asyncio
import getpass
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from tests.ui_agents import payer, writer
from tether import Worker, start_run
from tether.store.sqlite import SQLiteStore
from tether.ui.app import create_app

AGENTS = {"tests.ui_agents:payer": payer, "tests.ui_agents:writer": writer}
BASE = "http://127.0.0.1:8765"


def _drive(s: SQLiteStore) -> None:
    asyncio.run(Worker(s, agents=AGENTS, poll_interval=0.01).run(until_idle=True))


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[SQLiteStore, str, str]]:
    """A store with a payer waiting for approval and a writer done after 3 steps, each
    step writing f{n}.txt in its workspace (a reversible effect with an undo)."""
    s = SQLiteStore(tmp_path / "t.db")
    pay = start_run(s, payer, agent_ref="tests.ui_agents:payer", goal="pay bob", name="pay")
    wr = start_run(s, writer, agent_ref="tests.ui_agents:writer", goal="write", name="wr",
                   workspace=tmp_path / "ws")
    _drive(s)
    yield s, pay, wr
    s.close()


def _client(s: SQLiteStore) -> TestClient:
    return TestClient(create_app(s, port=8765, agents=AGENTS), base_url=BASE)


def _token(html: str) -> str:
    m = re.search(r'name="csrf-token" content="([0-9a-f]+)"', html)
    assert m
    return m.group(1)


def test_every_page_renders_with_its_stable_ids_and_its_live_part_alone(
        world: tuple[SQLiteStore, str, str]) -> None:
    s, pay, wr = world
    pages = {"/": 'id="runs"', "/needs": 'id="approvals"', f"/runs/{wr}": 'id="timeline"',
             "/graph": 'id="graph"', "/report": 'id="audit"',
             f"/runs/{wr}/rollback?to=1": 'id="plan"'}
    # A run page's timeline is not in its live part: the part brings the events to add.
    parts = {**pages, f"/runs/{wr}": 'id="timeline-delta"'}
    with _client(s) as c:
        for path, marker in pages.items():
            whole = c.get(path)
            assert whole.status_code == 200 and marker in whole.text, path
            assert 'id="live"' in whole.text and "/static/ui.js" in whole.text
            part = c.get(path, headers={"X-Tether-Part": "live"})
            assert part.status_code == 200 and parts[path] in part.text, path
            assert "<html" not in part.text and 'id="nav"' not in part.text
        assert c.get("/static/ui.js").status_code == 200
        overview = c.get("/").text
        assert 'data-count="1"' in overview  # one approval waits: the payer's
        assert f'id="run-{pay}"' in overview and 'data-status="awaiting_approval"' in overview
        run_page = c.get(f"/runs/{wr}?step=1&from=1&to=3").text
        assert 'data-path="n"' in run_page and 'data-path="written"' in run_page
        assert 'data-kind="effect.intent"' in run_page and "lane-effect" in run_page
        bad = c.get(f"/runs/{wr}?step=9")
        assert bad.status_code == 200 and 'id="inspect-error"' in bad.text
        missing = c.get("/runs/nope")
        assert missing.status_code == 404 and "no run" in missing.text


def test_rollback_shows_its_plan_first_then_runs_the_undos_in_the_server(
        world: tuple[SQLiteStore, str, str], tmp_path: Path) -> None:
    s, _, wr = world
    ws = tmp_path / "ws"
    assert [(ws / f"f{n}.txt").read_text() for n in (1, 2, 3)] == ["v1", "v2", "v3"]
    with _client(s) as c:
        plan = c.get(f"/runs/{wr}/rollback?to=1")
        assert "undo" in plan.text and 'id="confirm"' in plan.text
        api_plan = c.get(f"/api/runs/{wr}/rollback-plan", params={"to": 1}).json()
        assert [u["tool"] for u in api_plan["undo"]] == ["write", "write"]
        assert api_plan["done"] is False
        # Showing the plan changed nothing.
        assert (ws / "f3.txt").read_text() == "v3" and s.get_run(wr).epoch == 0  # type: ignore[union-attr]
        done = c.post(f"/runs/{wr}/rollback", data={"csrf": _token(plan.text), "to": "1"},
                      follow_redirects=False)
        assert done.status_code == 303 and "notice=rolled+back" in done.headers["location"]
    assert [(ws / f"f{n}.txt").read_text() for n in (1, 2, 3)] == ["v1", "", ""]
    row = s.get_run(wr)
    assert row is not None and (row.epoch, row.step, row.status) == (1, 1, "paused")
    undone = [e for e in s.events(wr) if e.kind == "effect.undone"]
    assert len(undone) == 2
    (done_ev,) = [e for e in s.events(wr) if e.kind == "rollback"]
    assert done_ev.actor == f"human:{getpass.getuser()}"  # who asked, as from the CLI


def test_fork_with_state_edits_and_the_graph_draws_it(
        world: tuple[SQLiteStore, str, str]) -> None:
    s, _, wr = world
    with _client(s) as c:
        token = _token(c.get(f"/runs/{wr}").text)
        bad = c.post(f"/runs/{wr}/fork", data={"csrf": token, "at": "2", "edits": "[1]"},
                     follow_redirects=False)
        assert "error=state+edits" in bad.headers["location"]
        resp = c.post(f"/runs/{wr}/fork", data={"csrf": token, "at": "2", "name": "what-if",
                                                 "edits": '{"hint": "check the logs"}'},
                      follow_redirects=False)
        assert resp.status_code == 303 and "notice=forked" in resp.headers["location"]
        child = next(r for r in s.list_runs() if r.name == "what-if")
        assert c.get(f"/api/runs/{child.id}/state").json()["state"]["hint"] == "check the logs"
        g = c.get("/api/graph").json()
        assert {(e["from"], e["to"], e["kind"]) for e in g["edges"]} == {(wr, child.id, "fork")}
        focused = c.get("/graph", params={"focus": f"{wr}@2"}).text
        assert 'id="cascade-plan"' in focused and 'id="impact"' in focused
        assert f'id="node-{wr}"' in focused
        wrong = c.get("/graph", params={"focus": "nope@1"})
        assert wrong.status_code == 200 and 'id="focus-error"' in wrong.text


def test_edited_arguments_that_do_not_fit_the_tool_are_refused_and_decide_nothing(
        world: tuple[SQLiteStore, str, str]) -> None:
    s, _, _ = world
    (req,) = s.approvals(status="pending")
    with _client(s) as c:
        token = _token(c.get("/needs").text)
        resp = c.post(f"/approvals/{req.id}/approve", follow_redirects=False, data={
            "csrf": token, "arguments": '{"to": "carol", "amount": "seven"}'})
        assert resp.status_code == 303 and "error=tool+send" in resp.headers["location"]
        assert c.get(f"/api/approvals/{req.id}/schema").json()["properties"]["amount"][
            "type"] == "integer"
        unchanged = c.post(f"/approvals/{req.id}/approve", follow_redirects=False, data={
            "csrf": token, "arguments": '{"amount": 5, "to": "bob"}',
            "original": '{"to": "bob", "amount": 5}', "always": "1"})
        assert "notice=approved" in unchanged.headers["location"]
    row = s.approval(req.id)
    assert row is not None and row.status == "approved" and row.always
    assert row.edited_arguments is None  # the proposed arguments, untouched, are no edit
