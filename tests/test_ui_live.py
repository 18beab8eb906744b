"""The dashboard as it runs: a real ``tether ui serve`` on a loopback port, a real
``tether worker`` subprocess on the same store file, HTTP from outside."""

from __future__ import annotations

import asyncio
import getpass
import json
import signal
from pathlib import Path

import httpx
import pytest

from tests.ui_agents import payer, ticker, writer
from tests.uikit import csrf, dashboard, error_of, page_csrf, running, wait_for
from tether import Worker, start_run
from tether.store.records import RunRow
from tether.store.sqlite import SQLiteStore

pytestmark = pytest.mark.workers
PAYER = "tests.ui_agents:payer"


def _status(s: SQLiteStore, run: str, status: str) -> RunRow | None:
    row = s.get_run(run)
    return row if row is not None and row.status == status else None


def _awaiting(tmp_path: Path) -> tuple[SQLiteStore, str, str]:
    """A store whose payer run waits for approval of send(bob, 5): driven this far by a
    worker in this process, so a test that needs no worker after it starts none."""
    s = SQLiteStore(tmp_path / "t.db")
    run = start_run(s, payer, agent_ref=PAYER, goal="pay bob")
    asyncio.run(Worker(s, agents={PAYER: payer}, poll_interval=0.01).run(until_idle=True))
    (req,) = s.approvals(status="pending")
    return s, run, req.id


def test_approve_with_edited_arguments_from_the_page_and_the_run_goes_on(
        tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path / "t.db")
    run = start_run(s, payer, agent_ref=PAYER, goal="pay bob")
    with dashboard(s.path, tmp_path) as c, \
            running("--store", str(s.path), "worker", log=tmp_path / "worker.log"):
        req = wait_for(lambda: s.approvals(status="pending"), "the worker asks a person")[0]
        page = c.get("/needs")
        assert page.status_code == 200 and f'data-approval="{req.id}"' in page.text
        resp = c.post(f"/approvals/{req.id}/approve", follow_redirects=False, data={
            "csrf": page_csrf(page.text), "next": "/needs", "note": "less, to carol",
            "original": json.dumps(req.arguments), "arguments": '{"to": "carol", "amount": 7}'})
        assert resp.status_code == 303, resp.text
        assert resp.headers["location"].startswith("/needs?notice=approved")
        wait_for(lambda: _status(s, run, "done"), "the run goes on and finishes")
    done = [e.payload for e in s.events(run) if e.kind == "effect.done"]
    assert [d["result"] for d in done] == ["sent 7 to carol"]
    (decided,) = [e for e in s.events(run) if e.kind == "approval.decided"]
    assert decided.actor == f"human:{getpass.getuser()}"
    assert s.approval(req.id).edited_arguments == {"to": "carol", "amount": 7}  # type: ignore[union-attr]


def test_deny_with_a_reason_over_the_api_and_the_model_is_told(tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path / "t.db")
    run = start_run(s, payer, agent_ref=PAYER, goal="pay bob")
    with dashboard(s.path, tmp_path) as c, \
            running("--store", str(s.path), "worker", log=tmp_path / "worker.log"):
        req = wait_for(lambda: s.approvals(status="pending"), "the worker asks a person")[0]
        token = csrf(c)
        # A deny without a reason is refused, and decides nothing.
        empty = c.post(f"/api/approvals/{req.id}/deny", json={"reason": ""},
                       headers={"X-CSRF-Token": token})
        assert empty.status_code == 422 and "reason" in error_of(empty)["message"]
        resp = c.post(f"/api/approvals/{req.id}/deny", json={"reason": "bob was paid twice"},
                      headers={"X-CSRF-Token": token})
        assert resp.status_code == 200, resp.text
        assert resp.json()["result"]["status"] == "denied"
        wait_for(lambda: _status(s, run, "done"), "the run goes on without the payment")
    (finished,) = [e.payload for e in s.events(run) if e.kind == "run.done"]
    assert "bob was paid twice" in finished["result"]
    assert not [e for e in s.events(run) if e.kind == "effect.done"]


def test_live_events_reach_an_open_page_without_reload(tmp_path: Path) -> None:
    s, _, _ = _awaiting(tmp_path)
    with dashboard(s.path, tmp_path) as c, c.stream("GET", "/api/live") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.iter_lines()
        events: list[tuple[str, dict[str, int]]] = []
        name = ""
        for line in lines:
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((name, json.loads(line.removeprefix("data: "))))
                if name == "hello":
                    # Now a commit, from another process's point of view: a new run.
                    start_run(s, writer, agent_ref="tests.ui_agents:writer", goal="write",
                              name="newcomer", workspace=tmp_path / "ws")
                elif name == "change":
                    break
        (hello, first), (change, then) = events
        assert (hello, change) == ("hello", "change")
        assert then["batch"] > first["batch"] == hello_batch(first)
        # What the page's script then fetches: its live region, with the new run in it.
        part = c.get("/", headers={"X-Tether-Part": "live"})
        assert part.status_code == 200 and "newcomer" in part.text
        assert "<html" not in part.text and 'id="runs"' in part.text


def hello_batch(first: dict[str, int]) -> int:
    return first["batch"]


def test_a_foreign_host_header_is_refused(tmp_path: Path) -> None:
    s, _, req = _awaiting(tmp_path)
    with dashboard(s.path, tmp_path) as c:
        port = c.base_url.port
        for host in (f"evil.example:{port}", f"127.0.0.1:{port + 1}", "127.0.0.1",
                     f"localhost.evil.example:{port}"):
            resp = c.get("/api/overview", headers={"Host": host})
            assert resp.status_code == 400, host
            assert "DNS rebinding" in error_of(resp)["message"]
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"LOCALHOST:{port}"):
            assert c.get("/api/overview", headers={"Host": host}).status_code == 200, host
        # A change asked by another site's page is refused even with the right token.
        resp = c.post(f"/api/approvals/{req}/approve", json={},
                      headers={"X-CSRF-Token": csrf(c), "Origin": "http://evil.example"})
        assert resp.status_code == 403 and "another site" in error_of(resp)["message"]
    assert s.approval(req).status == "pending"  # type: ignore[union-attr]


def test_a_change_without_the_csrf_token_is_refused_and_changes_nothing(
        tmp_path: Path) -> None:
    s, run, req = _awaiting(tmp_path)
    before = len(s.events(run))
    with dashboard(s.path, tmp_path) as c:
        token = page_csrf(c.get("/needs").text)
        form = {"next": "/needs", "reason": "no"}
        for extra in ({}, {"csrf": "0" * 64}, {"csrf": token[:-1]}):
            resp = c.post(f"/approvals/{req}/deny", data={**form, **extra},
                          follow_redirects=False)
            assert resp.status_code == 403 and "CSRF" in resp.text
        api = c.post(f"/api/approvals/{req}/approve", json={})
        assert api.status_code == 403 and "CSRF" in error_of(api)["message"]
        # Another browser's token does not fit this browser's cookie.
        other = httpx.Client(base_url=str(c.base_url))
        theirs = csrf(other)
        other.close()
        resp = c.post(f"/api/approvals/{req}/approve", json={},
                      headers={"X-CSRF-Token": theirs})
        assert resp.status_code == 403
        # The page's own token works.
        ok = c.post(f"/approvals/{req}/deny", data={**form, "csrf": token},
                    follow_redirects=False)
        assert ok.status_code == 303 and "notice=denied" in ok.headers["location"]
    kinds = [e.kind for e in s.events(run)[before:]]
    assert kinds.count("approval.decided") == 1


def test_api_errors_are_well_formed_json(tmp_path: Path) -> None:
    s, run, req = _awaiting(tmp_path)
    with dashboard(s.path, tmp_path) as c:
        h = {"X-CSRF-Token": csrf(c)}
        cases = [
            (c.get("/api/runs/no-such-run"), 404, "NotFound"),
            (c.get(f"/api/runs/{run}/events", params={"kind": "no.such"}), 400, "UsageError"),
            (c.get(f"/api/runs/{run}/state", params={"step": -1}), 422, "InvalidRequest"),
            (c.get(f"/api/runs/{run}/state", params={"step": 99}), 400, "UsageError"),
            (c.get("/api/runs", params={"status": "sideways"}), 400, "UsageError"),
            (c.get("/api/no/such/route"), 404, "NotFound"),
            (c.delete(f"/api/runs/{run}"), 405, "MethodNotAllowed"),
            (c.post(f"/api/approvals/{req}/approve", json={"colour": "red"}, headers=h), 422,
             "InvalidRequest"),
            (c.post(f"/api/approvals/{req}/approve", content=b"{not json", headers={
                **h, "Content-Type": "application/json"}), 422, "InvalidRequest"),
            (c.post(f"/api/approvals/{req}/approve", json={"arguments": {"amount": "lots"}},
                    headers=h), 400, "UsageError"),
            (c.post("/api/approvals/NOPE/approve", json={}, headers=h), 404, "NotFound"),
            (c.get("/api/impact", params={"ref": f"{run}@0"}), 400, "UsageError"),
        ]
        for resp, status, kind in cases:
            assert resp.status_code == status, (resp.request.url, resp.text)
            assert error_of(resp)["kind"] == kind, (resp.request.url, resp.text)
        # The schema is served, and names the API's routes.
        schema = c.get("/api/openapi.json").json()
        assert "/api/approvals/{approval}/approve" in schema["paths"]
    assert s.approval(req).status == "pending"  # type: ignore[union-attr]


def test_stopping_the_server_ends_open_pages_streams_and_exits_cleanly(tmp_path: Path) -> None:
    s, _, _ = _awaiting(tmp_path)
    with dashboard(s.path, tmp_path) as c, c.stream("GET", "/api/live") as stream:
        lines = stream.iter_lines()
        assert next(lines).startswith("retry:")
        c.proc.send_signal(signal.SIGINT)  # type: ignore[attr-defined]  # Ctrl-C
        rest = list(lines)  # the stream ends (the server closed it), no error
        assert not any(x.startswith("event: change") for x in rest)
        # uvicorn re-raises the signal once it has shut down, as a shell expects.
        assert c.proc.wait(30) in (0, -signal.SIGINT, 128 + signal.SIGINT)  # type: ignore[attr-defined]
    log = next(tmp_path.glob("ui-*.log")).read_text()
    assert "Traceback" not in log and "CancelledError" not in log, log


def test_stop_a_running_run_from_its_page_the_worker_applies_it(tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path / "t.db")
    run = start_run(s, ticker, agent_ref="tests.ui_agents:ticker", goal="tick")
    with dashboard(s.path, tmp_path) as c, \
            running("--store", str(s.path), "worker", log=tmp_path / "worker.log"):
        wait_for(lambda: (r := s.get_run(run)) is not None and r.step >= 3, "the run steps")
        page = c.get(f"/runs/{run}")
        assert 'data-testid="stop"' in page.text
        resp = c.post(f"/runs/{run}/stop", data={"csrf": page_csrf(page.text),
                                                 "next": f"/runs/{run}"},
                      follow_redirects=False)
        assert resp.status_code == 303 and "notice=stop" in resp.headers["location"]
        row = wait_for(lambda: _status(s, run, "stopped"), "the worker stops the run")
        assert "error" not in resp.headers["location"]
        me = f"human:{getpass.getuser()}"
        (stopped,) = [e for e in s.events(run) if e.kind == "run.stopped"]
        assert row.step >= 3 and stopped.payload["reason"] == f"stopped by {me}"
        (cmd,) = [e for e in s.events(run) if e.kind == "command"]
        assert (cmd.actor, cmd.payload["kind"], cmd.payload["outcome"]) == (me, "stop", "applied")
