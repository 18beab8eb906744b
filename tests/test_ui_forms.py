"""The dashboard's forms that settle what only a person can, driven in process against the
app (real SQLite stores): an effect in doubt after a real worker was killed inside it,
resolved from the Needs-a-human page; a monitor's alert acknowledged there; and the run
page's budget form. Each: the page shows the form, a bad submission comes back with the
error and changes nothing, a good one is journaled as the person who sent it."""

from __future__ import annotations

import asyncio
import getpass
import os
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from starlette.testclient import TestClient

from tests.test_control import _kill_worker_inside_tool, _start
from tests.test_monitor_host import (
    Repeats,
    _looping,
    _only_the_toy_monitors,  # noqa: F401  (autouse: the built-in loops monitor off)
    look,
)
from tether import StepAgent, Worker, start_run
from tether.store.sqlite import SQLiteStore
from tether.system_clock import ShiftedClock
from tether.testing import allow_tools
from tether.ui.app import create_app

BASE = "http://127.0.0.1:8765"
ME = f"human:{getpass.getuser()}"


def _client(s: SQLiteStore) -> TestClient:
    return TestClient(create_app(s, port=8765), base_url=BASE)


def _csrf(html: str) -> str:
    m = re.search(r'name="csrf-token" content="([0-9a-f]+)"', html)
    assert m, "the page has no CSRF token"
    return m.group(1)


def _said(location: str) -> dict[str, str]:
    """The notice or error a form's redirect carries to the page."""
    q = parse_qs(urlsplit(location).query)
    return {k: v[0] for k, v in q.items()}


@pytest.fixture
def in_doubt(tmp_path: Path) -> Iterator[tuple[SQLiteStore, str, str, Path]]:
    """A paused run with one effect in doubt: its worker was SIGKILLed inside the tool."""
    path, side, marker = tmp_path / "t.db", tmp_path / "side.txt", tmp_path / "marker"
    s = SQLiteStore(path)
    allow_tools(s, "charge_slowly")  # about the doubt, not an approval
    run = _start(s, "pay_once")
    _kill_worker_inside_tool(path, side, marker)
    later = ShiftedClock()
    later.advance(2.1)  # past the dead worker's lease (2 s), without waiting for it
    os.environ["TETHER_TEST_SIDE"] = str(side)
    try:
        asyncio.run(Worker(s, wall=later).run(until_idle=True))
    finally:
        os.environ.pop("TETHER_TEST_SIDE", None)
    (doubt,) = s.effects(run=run, status="in_doubt")
    yield s, run, doubt.id, side
    s.close()


@pytest.mark.crash
def test_an_effect_in_doubt_is_resolved_from_the_needs_page(
        in_doubt: tuple[SQLiteStore, str, str, Path]) -> None:
    s, run, effect, side = in_doubt
    with _client(s) as c:
        page = c.get("/needs")
        assert f'data-effect="{effect}"' in page.text
        assert f'action="/effects/{effect}/resolve"' in page.text
        token = _csrf(page.text)
        # No choice made, or a result that is not JSON: the page says so, nothing changes.
        none = c.post(f"/effects/{effect}/resolve", follow_redirects=False,
                      data={"csrf": token, "next": "/needs"})
        assert none.status_code == 303
        assert "choose done, not_done or retry" in _said(none.headers["location"])["error"]
        bad = c.post(f"/effects/{effect}/resolve", follow_redirects=False, data={
            "csrf": token, "next": "/needs", "resolution": "done", "result": "charged {"})
        assert "result: not JSON" in _said(bad.headers["location"])["error"]
        assert s.effects(run=run, status="in_doubt")[0].id == effect
        # Without the CSRF token the form is refused outright.
        forged = c.post(f"/effects/{effect}/resolve", follow_redirects=False,
                        data={"resolution": "not_done"})
        assert forged.status_code == 403
        done = c.post(f"/effects/{effect}/resolve", follow_redirects=False, data={
            "csrf": token, "next": "/needs", "resolution": "done",
            "result": '"charged 42 (checked by hand)"'})
        assert done.status_code == 303 and done.headers["location"].startswith("/needs?")
        assert "settled as done" in _said(done.headers["location"])["notice"]
        after = c.get("/needs").text
        assert f'data-effect="{effect}"' not in after and "no effect is in doubt" in after
    assert not s.effects(run=run, status="in_doubt")
    (resolved,) = [e for e in s.events(run) if e.kind == "effect.resolved"]
    assert resolved.actor == ME
    assert side.read_text().count("charge 42") == 1  # settled by hand, never run again
    asyncio.run(Worker(s).run(until_idle=True))
    row = s.get_run(run)
    assert row is not None and row.status == "done"
    assert side.read_text().count("charge 42") == 1


@pytest.fixture
def alerted(tmp_path: Path) -> Iterator[tuple[SQLiteStore, str]]:
    """A run whose toy loop detector alerted, blocked, then paused it (three alerts)."""
    s = SQLiteStore(tmp_path / "t.db")
    agent = StepAgent(_looping, name="looper", tools=[look], monitors=[Repeats])
    run = start_run(s, agent, goal="look", agent_ref="a")
    asyncio.run(Worker(s, agents={"a": agent}, poll_interval=0.01).run(until_idle=True))
    yield s, run
    s.close()


def test_an_alert_is_acknowledged_from_the_needs_page(alerted: tuple[SQLiteStore, str]) -> None:
    s, run = alerted
    with _client(s) as c:
        before = c.get("/api/needs").json()["alerts"]
        assert len(before) == 3
        first = before[0]["id"]
        page = c.get("/needs")
        assert f'data-alert="{first}"' in page.text
        assert f'action="/alerts/{first}/ack"' in page.text
        token = _csrf(page.text)
        step = next(e for e in s.events(run) if e.kind == "step.started")
        wrong = c.post(f"/alerts/{step.id}/ack", follow_redirects=False,
                       data={"csrf": token, "next": "/needs"})
        assert "not an alert" in _said(wrong.headers["location"])["error"]
        resp = c.post(f"/alerts/{first}/ack", follow_redirects=False,
                      data={"csrf": token, "next": "/needs", "note": "known: a flaky read"})
        assert resp.status_code == 303
        assert _said(resp.headers["location"])["notice"] == f"alert {first} acknowledged"
        after = c.get("/needs").text
        assert f'data-alert="{first}"' not in after
        assert [a["id"] for a in c.get("/api/needs").json()["alerts"]] == \
            [a["id"] for a in before[1:]]
    (acked,) = [e for e in s.events(run) if e.kind == "alert.acked"]
    assert acked.actor == ME
    assert acked.payload["alert"] == first and acked.payload["note"] == "known: a flaky read"


def test_the_run_pages_budget_form_sets_and_removes_caps(tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path / "t.db")
    agent = StepAgent(_looping, name="looper", tools=[look])
    run = start_run(s, agent, goal="look", agent_ref="a", name="looper", budget={"steps": 50})
    with _client(s) as c:
        page = c.get(f"/runs/{run}")
        assert f'action="/runs/{run}/budget"' in page.text and 'data-testid="caps"' in page.text
        token = _csrf(page.text)

        def send(caps: str) -> dict[str, str]:
            resp = c.post(f"/runs/{run}/budget", follow_redirects=False,
                          data={"csrf": token, "caps": caps, "next": f"/runs/{run}"})
            assert resp.status_code == 303
            assert resp.headers["location"].startswith(f"/runs/{run}?")
            return _said(resp.headers["location"])

        for caps, why in (("steps", "expected KEY=NUMBER"), ("steps=many", "is not a number"),
                          ("cost_usd=nan", "not a finite number")):
            assert why in send(caps)["error"], caps
        assert s.get_run(run).budget == {"steps": 50}  # type: ignore[union-attr]
        said = send("cost_usd=5, tokens=20000")
        assert said["notice"] == "budget of run looper: cost_usd=5, steps=50, tokens=20000"
        assert send("steps=")["notice"] == "budget of run looper: cost_usd=5, tokens=20000"
        shown = c.get(f"/runs/{run}").text
        assert "budget: cost_usd=5.0 tokens=20000.0" in shown
    assert s.get_run(run).budget == {"cost_usd": 5.0, "tokens": 20000.0}  # type: ignore[union-attr]
    changes = [e for e in s.events(run) if e.kind == "budget.changed"]
    assert [(e.payload["by"], e.payload["new"]) for e in changes] == [
        (ME, {"cost_usd": 5.0, "steps": 50, "tokens": 20000.0}),
        (ME, {"cost_usd": 5.0, "tokens": 20000.0})]
    s.close()
