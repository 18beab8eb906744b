"""The dashboard in a real browser: headless Chromium (Playwright) on a real ``tether ui
serve`` over a real store file, with a real ``tether worker`` subprocess where a run must
go on. Every wait is event-driven (Playwright's expectations, which end as soon as the
page shows what they wait for), never a sleep.

The pages' script swaps in their live region when the store changes; a marker set on
``window`` before an action and still there after it shows no navigation happened."""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.browserkit import browse
from tests.swarm_agents import drive
from tests.ui_agents import payer, ticker, writer
from tests.uikit import ROOT, TETHER, dashboard, running, wait_for
from tether import Tether, Worker, start_run
from tether.store.sqlite import SQLiteStore

try:
    from playwright.sync_api import Page, expect
except ImportError:  # the dev extra installs it; required under CI as the browser is
    if os.environ.get("CI"):
        raise
    pytest.skip("Playwright is not installed (pip install -e '.[dev]')", allow_module_level=True)

pytestmark = [pytest.mark.browser, pytest.mark.workers]
PAYER = "tests.ui_agents:payer"
MARK = "window.__tetherNoReload = 'still here'"
MARKED = "window.__tetherNoReload"


def _open_live(page: Page, url: str) -> None:
    """Open ``url`` and wait until its live stream is connected (the badge says so), so
    what commits next reaches it; then mark the window."""
    page.goto(url)
    expect(page.locator("#live-status")).to_have_attribute("data-state", "live")
    page.evaluate(MARK)


def _not_reloaded(page: Page) -> None:
    assert page.evaluate(MARKED) == "still here", "the page was reloaded"


def test_approve_with_edited_arguments_in_the_page_and_the_open_run_page_goes_on(
        tmp_path: Path, chromium: str) -> None:
    s = SQLiteStore(tmp_path / "t.db")
    run = start_run(s, payer, agent_ref=PAYER, goal="pay bob", name="payroll")
    with dashboard(s.path, tmp_path) as c, \
            running("--store", str(s.path), "worker", log=tmp_path / "worker.log"), \
            browse(chromium) as watcher:
        req = wait_for(lambda: s.approvals(status="pending"), "the worker asks a person")[0]
        base = str(c.base_url)
        # One tab follows the run; another decides.
        _open_live(watcher, f"{base}/runs/{run}")
        title = watcher.locator("#run-title")
        expect(title).to_have_attribute("data-status", "awaiting_approval")
        decider = watcher.context.new_page()
        decider.goto(f"{base}/needs")
        card = decider.locator(f'[data-approval="{req.id}"]')
        expect(card).to_contain_text("payroll wants send")
        args = card.get_by_test_id("arguments")
        assert json.loads(args.input_value()) == {"to": "bob", "amount": 5}
        args.fill('{"to": "carol", "amount": 7}')
        card.get_by_test_id("note").fill("less, to carol")
        card.get_by_test_id("approve").click()
        expect(decider.get_by_test_id("notice")).to_contain_text("approved")
        expect(decider.locator(f'[data-approval="{req.id}"]')).to_have_count(0)
        # The run's page, left open, shows the run going on and finishing, by itself.
        expect(title).to_have_attribute("data-status", "done")
        done = watcher.locator('#timeline [data-kind="effect.done"]')
        expect(done).to_contain_text("sent 7 to carol")
        _not_reloaded(watcher)
    (decided,) = [e for e in s.events(run) if e.kind == "approval.decided"]
    assert decided.actor == f"human:{getpass.getuser()}"
    assert s.approval(req.id).edited_arguments == {"to": "carol", "amount": 7}  # type: ignore[union-attr]


def test_an_update_arriving_while_arguments_are_edited_keeps_the_edit(
        tmp_path: Path, chromium: str) -> None:
    # The page had asked for its live region just before the person began to edit; the
    # answer arrives after. Swapped in, it put the proposed arguments back under the
    # person's hands, and the approval ran the call as proposed, not as edited.
    s = SQLiteStore(tmp_path / "t.db")
    run = start_run(s, payer, agent_ref=PAYER, goal="pay bob", name="payroll")
    with dashboard(s.path, tmp_path) as c, \
            running("--store", str(s.path), "worker", log=tmp_path / "worker.log"), \
            browse(chromium) as page:
        req = wait_for(lambda: s.approvals(status="pending"), "the worker asks a person")[0]
        _open_live(page, f"{c.base_url}/needs")
        held: list[Any] = []
        page.route("**/needs*", lambda route: held.append(route)
                   if route.request.headers.get("x-tether-part") == "live"
                   else route.continue_())
        with page.expect_request(lambda r: r.headers.get("x-tether-part") == "live"):
            start_run(s, payer, agent_ref=PAYER, goal="pay bob", name="payroll-2")  # a commit
        for _ in range(500):  # Playwright hands the route over while it works: let it
            if held:
                break
            page.evaluate("1")
        assert held, "the live region's request was not routed"
        args = page.locator(f'[data-approval="{req.id}"]').get_by_test_id("arguments")
        edit = '{"to": "carol", "amount": 7}'
        args.fill(edit)
        before = page.evaluate("document.getElementById('live').dataset.updated || ''")
        held.pop().continue_()  # the answer to the request made before the edit
        page.wait_for_function(
            "b => document.getElementById('live-status').dataset.state === 'changes waiting'"
            " || (document.getElementById('live').dataset.updated || '') !== b", arg=before)
        expect(args).to_have_value(edit)
        page.unroute("**/needs*")
        for route in held:
            route.continue_()
        page.locator(f'[data-approval="{req.id}"]').get_by_test_id("approve").click()
        expect(page.get_by_test_id("notice")).to_contain_text("approved")
        wait_for(lambda: (r := s.get_run(run)) is not None and r.status == "done",
                 "the run to finish")
    (done,) = [e for e in s.events(run) if e.kind == "effect.done"]
    assert done.payload["result"] == "sent 7 to carol"


def test_a_schema_misfit_is_shown_in_the_page_and_decides_nothing(
        tmp_path: Path, chromium: str) -> None:
    s = SQLiteStore(tmp_path / "t.db")
    run = start_run(s, payer, agent_ref=PAYER, goal="pay bob", name="payroll")
    with dashboard(s.path, tmp_path) as c, \
            running("--store", str(s.path), "worker", log=tmp_path / "worker.log"), \
            browse(chromium) as page:
        req = wait_for(lambda: s.approvals(status="pending"), "the worker asks a person")[0]
        page.goto(f"{c.base_url}/needs")
        card = page.locator(f'[data-approval="{req.id}"]')
        card.get_by_test_id("arguments").fill('{"to": "carol", "amount": "seven"}')
        card.get_by_test_id("approve").click()
        expect(page.get_by_test_id("error")).to_contain_text("send")
        expect(page.locator(f'[data-approval="{req.id}"]')).to_have_count(1)
    assert s.approval(req.id).status == "pending"  # type: ignore[union-attr]
    assert not [e for e in s.events(run) if e.kind == "approval.decided"]


def test_deny_with_a_reason_and_the_timeline_shows_the_model_told(
        tmp_path: Path, chromium: str) -> None:
    s = SQLiteStore(tmp_path / "t.db")
    run = start_run(s, payer, agent_ref=PAYER, goal="pay bob", name="payroll")
    with dashboard(s.path, tmp_path) as c, \
            running("--store", str(s.path), "worker", log=tmp_path / "worker.log"), \
            browse(chromium) as page:
        req = wait_for(lambda: s.approvals(status="pending"), "the worker asks a person")[0]
        page.goto(f"{c.base_url}/needs")
        card = page.locator(f'[data-approval="{req.id}"]')
        # The reason is required: the browser will not send the form without it.
        card.get_by_test_id("deny").click()
        assert card.get_by_test_id("reason").evaluate("el => !el.validity.valid")
        card.get_by_test_id("reason").fill("bob was paid twice")
        card.get_by_test_id("deny").click()
        expect(page.get_by_test_id("notice")).to_contain_text("denied")
        expect(page.locator(f'[data-approval="{req.id}"]')).to_have_count(0)
        page.goto(f"{c.base_url}/runs/{run}")
        page.evaluate(MARK)
        expect(page.locator("#run-title")).to_have_attribute("data-status", "done")
        timeline = page.locator("#timeline")
        expect(timeline.locator('[data-kind="approval.decided"]')).to_contain_text("denied")
        # What the agent saw of it (its tool call failed with the reason) ends the run.
        expect(timeline.locator('[data-kind="run.done"]')).to_contain_text("bob was paid twice")
        expect(timeline.locator('[data-kind="effect.done"]')).to_have_count(0)
        _not_reloaded(page)
    (finished,) = [e.payload for e in s.events(run) if e.kind == "run.done"]
    assert "bob was paid twice" in finished["result"]


def test_stop_a_running_run_from_its_page(tmp_path: Path, chromium: str) -> None:
    s = SQLiteStore(tmp_path / "t.db")
    run = start_run(s, ticker, agent_ref="tests.ui_agents:ticker", goal="tick", name="ticker")
    with dashboard(s.path, tmp_path) as c, \
            running("--store", str(s.path), "worker", log=tmp_path / "worker.log"), \
            browse(chromium) as page:
        _open_live(page, f"{c.base_url}/runs/{run}")
        title = page.locator("#run-title")
        # The page follows the steps as the worker takes them.
        page.wait_for_function("Number(document.getElementById('run-title').dataset.step) >= 3")
        expect(title).to_have_attribute("data-status", "running")
        # The button asks first; dismissing it changes nothing, accepting it stops.
        page.once("dialog", lambda d: d.dismiss())
        page.get_by_test_id("stop").click()
        _not_reloaded(page)
        page.once("dialog", lambda d: d.accept())
        page.get_by_test_id("stop").click()
        expect(page.get_by_test_id("notice")).to_contain_text("stop")
        expect(page.locator("#run-title")).to_have_attribute("data-status", "stopped")
        expect(page.locator('#timeline [data-kind="run.stopped"]')).to_have_count(1)
    row = s.get_run(run)
    assert row is not None and row.status == "stopped"
    (stopped,) = [e for e in s.events(run) if e.kind == "run.stopped"]
    assert stopped.payload["reason"] == f"stopped by human:{getpass.getuser()}"


def test_cascade_rollback_shows_the_plan_first_then_undoes_every_run_it_reached(
        tmp_path: Path, chromium: str) -> None:
    s = SQLiteStore(tmp_path / "t.db")
    ws = tmp_path / "ws"
    ws.mkdir()
    # planner writes notes.md, then plan.md and tells builder; builder, told, writes out.md.
    ids, _ = drive(s, ["planner", "builder"], [
        ("planner", [("write", "notes.md")]),
        ("planner", [("write", "plan.md"), ("send", "builder")]),
        ("builder", [("recv", ""), ("write", "out.md")]),
    ], ws)
    before = {p: (ws / p).read_text() for p in ("notes.md", "plan.md", "out.md")}
    with dashboard(s.path, tmp_path) as c, browse(chromium) as page:
        page.goto(f"{c.base_url}/runs/{ids['planner']}")
        page.get_by_test_id("rollback-to").fill("1")
        page.get_by_test_id("rollback-cascade").check()
        page.get_by_test_id("rollback-plan").click()
        # The plan, first: both runs, and nothing done yet.
        expect(page).to_have_url(re.compile(r"/rollback\?to=1&cascade=1$"))
        plan = page.get_by_test_id("plan")
        expect(plan).to_contain_text("planner")
        expect(plan).to_contain_text("builder")
        expect(page.locator("h1")).to_contain_text("Cascade rollback")
        assert {p: (ws / p).read_text() for p in before} == before
        assert all(r.epoch == 0 for r in s.list_runs())
        page.get_by_test_id("confirm").click()
        expect(page.get_by_test_id("notice")).to_contain_text("rolled back")
        expect(page.locator("#run-title")).to_have_attribute("data-epoch", "1")
        expect(page.locator("#run-title")).to_have_attribute("data-step", "1")
    # Undone: planner's second step and everything builder did after hearing from it.
    assert (ws / "notes.md").read_text() == before["notes.md"]
    assert not (ws / "plan.md").exists() and not (ws / "out.md").exists()
    rows = {r.name: r for r in s.list_runs()}
    assert (rows["planner"].epoch, rows["planner"].step) == (1, 1)
    assert (rows["builder"].epoch, rows["builder"].step) == (1, 0)


def test_a_live_update_arrives_without_reload(tmp_path: Path, chromium: str) -> None:
    s = SQLiteStore(tmp_path / "t.db")
    start_run(s, payer, agent_ref=PAYER, goal="pay bob", name="payroll")
    with dashboard(s.path, tmp_path) as c, browse(chromium) as page:
        _open_live(page, str(c.base_url))
        rows = page.locator("#runs tr[data-run]")
        expect(rows).to_have_count(1)
        first_batch = int(page.locator("#live").get_attribute("data-batch") or 0)
        # A commit from another process: a new run.
        new = start_run(s, writer, agent_ref="tests.ui_agents:writer", goal="write",
                        name="newcomer", workspace=tmp_path / "ws")
        expect(page.locator(f'#runs tr[data-run="{new}"]')).to_contain_text("newcomer")
        expect(rows).to_have_count(2)
        assert int(page.locator("#live").get_attribute("data-batch") or 0) > first_batch
        _not_reloaded(page)


def test_new_events_join_an_open_run_page_once_each_without_reload(
        tmp_path: Path, chromium: str) -> None:
    """After a commit the page gets only the events after the last it shows and adds them
    to its timeline: each event once, in its step's group, the newest step on top, and the
    oldest dropped beyond the page's window (data-cap; 400 on a real page, 5 here)."""
    s = SQLiteStore(tmp_path / "t.db")
    run = start_run(s, payer, agent_ref=PAYER, goal="pay bob", name="payroll")
    asyncio.run(Worker(s, agents={PAYER: payer}, poll_interval=0.01).run(until_idle=True))
    (req,) = s.approvals(status="pending")
    with dashboard(s.path, tmp_path) as c, browse(chromium) as page:
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        _open_live(page, f"{c.base_url}/runs/{run}")
        events = page.locator("#timeline li.ev")
        expect(events).to_have_count(len(s.events(run)))
        page.evaluate("document.getElementById('ev-1').dataset.mark = 'kept'")
        # A person approves (another process); the decision joins step 1's group.
        Tether(s, who="human:ops").approve(req.id)
        decided = page.locator('#timeline [data-kind="approval.decided"]')
        expect(decided).to_have_count(1)
        groups = page.locator("#timeline li.step")
        expect(groups.first).to_have_attribute("data-step", "1")
        expect(groups).to_have_count(2)  # steps 0 and 1, the decision in 1's, not a new one
        expect(page.locator("#ev-1")).to_have_attribute("data-mark", "kept")  # not redrawn
        # A window of 5: the worker takes the run on to its end, and the page keeps the
        # newest 5 and points "older events" at the 5 before them.
        page.evaluate("document.getElementById('timeline').dataset.cap = '5'")
        with running("--store", str(s.path), "worker", log=tmp_path / "worker.log"):
            title = page.locator("#run-title")
            expect(title).to_have_attribute("data-status", "done")
            expect(page.locator('#timeline [data-kind="run.done"]')).to_have_count(1)
        journal = s.events(run)
        newest = [str(e.seq) for e in journal[-5:]]
        expect(events).to_have_count(5)
        shown = page.eval_on_selector_all("#timeline li.ev", "es => es.map(e => e.dataset.seq)")
        assert sorted(shown, key=int) == newest and len(set(shown)) == 5
        assert page.locator("#timeline").get_attribute("data-last") == newest[-1]
        older = page.locator("#timeline-older a")
        expect(older).to_be_visible()
        first = int(newest[0])
        assert older.get_attribute("href") == f"/runs/{run}?after={max(0, first - 1 - 5)}"
        # Each step once, newest on top, as a load draws them.
        steps = page.eval_on_selector_all(
            "#timeline li.step", "gs => gs.map(g => g.dataset.epoch + ':' + g.dataset.step)")
        want = []
        for e in reversed(journal[-5:]):
            if f"{e.epoch}:{e.step}" not in want:
                want.append(f"{e.epoch}:{e.step}")
        assert steps == want
        _not_reloaded(page)
        assert errors == []
        # A reload draws the whole window (400) from the server, every event once.
        page.reload()
        expect(events).to_have_count(len(journal))
    s.close()


def test_make_ui_shots_writes_a_picture_of_every_page(tmp_path: Path, chromium: str) -> None:
    """``make ui-shots`` (scripts/ui_shots.py): the demo's night served and shot, one PNG
    per page at the fixed viewport; the script fails on a page that errs."""
    out = tmp_path / "img"
    env = {**os.environ, "TETHER_CHROMIUM": chromium}
    done = subprocess.run([sys.executable, "scripts/ui_shots.py", "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    names = {"ui-overview", "ui-needs", "ui-run", "ui-rollback-plan", "ui-graph", "ui-report"}
    assert {p.stem for p in out.glob("*.png")} == names
    for p in out.glob("*.png"):
        head = p.read_bytes()[:24]
        assert head[:8] == b"\x89PNG\r\n\x1a\n", p
        assert struct.unpack(">II", head[16:24]) == (1280, 860), p  # IHDR width, height
    # Every picture docs/ui.md shows is one the script makes.
    shown = set(re.findall(r"\(img/(ui-[a-z-]+)\.png\)", (ROOT / "docs/ui.md").read_text()))
    assert shown == names


def _token(db: Path, name: str, role: str) -> str:
    """``tether ui token create``: the token is its output's last line."""
    out = subprocess.run([str(TETHER), "--store", str(db), "ui", "token", "create", "--name",
                          name, "--role", role], capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


_APPROVE = """async ([url, body, form]) => {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const r = form
    ? await fetch(url, {method: "POST", body: new URLSearchParams({...body, csrf})})
    : await fetch(url, {method: "POST", body: JSON.stringify(body),
                        headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf}});
  return [r.status, await r.text()];
}"""


def test_a_viewer_signed_in_is_refused_an_approval_and_nothing_is_journaled(
        tmp_path: Path, chromium: str) -> None:
    s = SQLiteStore(tmp_path / "t.db")
    run = start_run(s, payer, agent_ref=PAYER, goal="pay bob", name="payroll")
    asyncio.run(Worker(s, agents={PAYER: payer}, poll_interval=0.01).run(until_idle=True))
    (req,) = s.approvals(status="pending")
    before = len(s.events(run))
    with dashboard(s.path, tmp_path) as c, browse(chromium) as page:
        # Once a token exists every request needs one: the browser is sent to sign in.
        token = _token(s.path, "val", "viewer")
        page.goto(f"{c.base_url}/needs")
        expect(page).to_have_url(re.compile(r"/signin\?next=%2Fneeds$"))
        page.get_by_test_id("token").fill(token)
        page.get_by_test_id("signin").click()
        expect(page).to_have_url(re.compile(r"/needs$"))
        expect(page.get_by_test_id("who")).to_have_attribute("data-role", "viewer")
        card = page.locator(f'[data-approval="{req.id}"]')
        expect(card).to_contain_text("payroll wants send")
        expect(card.get_by_test_id("approve-form")).to_have_count(0)  # a viewer gets no form
        # Asked anyway, from the signed-in page (its session cookie, its CSRF token): 403.
        status, body = page.evaluate(_APPROVE, [f"/api/approvals/{req.id}/approve",
                                                {"arguments": {"to": "mallory", "amount": 500}},
                                                False])
        assert status == 403 and json.loads(body)["error"]["kind"] == "Forbidden", body
        status, _ = page.evaluate(_APPROVE, [f"/approvals/{req.id}/approve",
                                             {"arguments": '{"to": "mallory", "amount": 500}',
                                              "next": "/needs"}, True])
        assert status == 403
    assert len(s.events(run)) == before
    assert s.approval(req.id).status == "pending"  # type: ignore[union-attr]
