"""A run page's timeline after a commit: the page says the last event it shows
(``X-Tether-Seq``) and its live part brings the run's header again and only the events
after that one (``template#timeline-delta``), as a load would draw them (lanes, step
links, the caller's role), within the page's window; and the times of approvals on the
run's clock, as the night report shows them."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from tests.ui_agents import payer
from tests.uikit import csrf, dashboard
from tether import FixedClock, Tether, Worker, start_run
from tether.identity import create_token
from tether.reporting.lines import at
from tether.store.sqlite import SQLiteStore
from tether.ui.app import create_app
from tether.ui.coalesce import LiveRegions
from tether.ui.pages import run as run_page

PAYER = "tests.ui_agents:payer"
AGENTS = {PAYER: payer}
BASE = "http://127.0.0.1:8765"


def _drive(s: SQLiteStore, clock: FixedClock | None = None) -> None:
    asyncio.run(Worker(s, agents=AGENTS, poll_interval=0.01, clock=clock).run(until_idle=True))


def _awaiting(tmp_path: Path, clock: FixedClock | None = None) -> tuple[SQLiteStore, str, str]:
    """A payer run waiting for a person to approve send(bob, 5)."""
    s = SQLiteStore(tmp_path / "t.db")
    run = start_run(s, payer, agent_ref=PAYER, goal="pay bob", name="payroll", clock=clock)
    _drive(s, clock)
    (req,) = s.approvals(status="pending")
    return s, run, req.id


def _finished(tmp_path: Path) -> tuple[SQLiteStore, str]:
    """The payer run approved and done: a dozen events over three steps."""
    s, run, req = _awaiting(tmp_path)
    Tether(s, who="human:ops").approve(req)
    _drive(s)
    return s, run


def _timeline(html: str) -> tuple[dict[str, str], list[int]]:
    """The whole page's timeline: its attributes and the seqs it shows, in page order."""
    m = re.search(r'<ol id="timeline"([^>]*)>(.*?)</ol>', html, re.S)
    assert m, html
    return dict(re.findall(r'([\w-]+)="([^"]*)"', m.group(1))), \
        [int(x) for x in re.findall(r'data-seq="(\d+)"', m.group(2))]


def _delta(html: str) -> tuple[dict[str, str], list[int], str]:
    """A live part's new events: the template's attributes, their seqs, its inside."""
    assert "<html" not in html and 'id="timeline"' not in html  # the part alone
    m = re.search(r'<template id="timeline-delta"([^>]*)>(.*?)</template>', html, re.S)
    assert m, html
    return dict(re.findall(r'([\w-]+)="([^"]*)"', m.group(1))), \
        [int(x) for x in re.findall(r'data-seq="(\d+)"', m.group(2))], m.group(2)


def _batches(lines: Iterator[str]) -> Iterator[int]:
    """The batch numbers a page's event stream announces (``hello``, then each change)."""
    for line in lines:
        if line.startswith("data: "):
            yield int(json.loads(line.removeprefix("data: "))["batch"])


def _live(held: int | str | None = None) -> dict[str, str]:
    h = {"X-Tether-Part": "live"}
    if held is not None:
        h["X-Tether-Seq"] = str(held)
    return h


@pytest.mark.workers
def test_the_live_part_of_a_run_page_brings_only_the_events_after_the_last_it_shows(
        tmp_path: Path) -> None:
    s, run, req = _awaiting(tmp_path)
    with dashboard(s.path, tmp_path) as c, c.stream("GET", "/api/live") as stream:
        changes = _batches(stream.iter_lines())
        next(changes)  # hello: the server follows the store's commits for this page
        attrs, shown = _timeline(c.get(f"/runs/{run}").text)
        held = int(attrs["data-last"])
        assert sorted(shown) == [e.seq for e in s.events(run)] and held == max(shown)
        # Nothing new: the header again, no event.
        meta, seqs, _ = _delta(c.get(f"/runs/{run}", headers=_live(held)).text)
        assert (seqs, meta["data-last"], meta["data-replace"]) == ([], str(held), "0")
        # A person approves through the API; a worker (this process) takes the run on.
        ok = c.post(f"/api/approvals/{req}/approve", json={}, headers={"X-CSRF-Token": csrf(c)})
        assert ok.status_code == 200, ok.text
        _drive(s)
        # As the page's script does: ask once the server has announced the commit.
        while next(changes) < s.latest_batch():
            pass
        new = [e for e in s.events(run) if e.seq > held]
        assert len(new) >= 4
        part = c.get(f"/runs/{run}", headers=_live(held)).text
        meta, seqs, inside = _delta(part)
        assert seqs == [e.seq for e in new]  # only those, each once, in journal order
        assert (meta["data-last"], meta["data-replace"]) == (str(new[-1].seq), "0")
        assert 'data-status="done"' in part and 'id="controls"' in part  # header redrawn
        # Drawn as a load draws them: their lanes, and their steps with their links.
        assert 'data-kind="effect.done"' in inside and "lane-effect" in inside
        last_step = new[-1].step
        assert f'id="step-0-{last_step}"' in inside
        assert f'href="/runs/{run}?from={last_step - 1}&to={last_step}#inspect"' in inside
        assert f'href="/runs/{run}/rollback?to={last_step - 1}"' in inside  # the owner may
        # A page that says nothing it holds (or nonsense) gets the window whole, to replace.
        for held_text in (None, "x1", "-3", "9" * 40):
            meta, seqs, _ = _delta(c.get(f"/runs/{run}", headers=_live(held_text)).text)
            assert sorted(seqs) == [e.seq for e in s.events(run)], held_text
            assert meta["data-replace"] == "1"


def test_the_delta_keeps_the_window_of_a_load_and_pages_share_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run_page, "TIMELINE", 4)  # the newest 4 events, not 400
    s, run = _finished(tmp_path)
    n = len(s.events(run))
    assert n >= 12
    app = create_app(s, port=8765, agents=AGENTS)
    live: LiveRegions = app.state.ctx.live
    with TestClient(app, base_url=BASE) as c:
        whole = c.get(f"/runs/{run}").text
        attrs, shown = _timeline(whole)
        assert sorted(shown) == [n - 3, n - 2, n - 1, n]
        assert (attrs["data-last"], attrs["data-cap"]) == (str(n), "4")
        assert f'<p id="timeline-older"><a href="/runs/{run}?after={n - 8}">' in whole
        # Two behind: those two. Further behind than the window: the newest window whole.
        meta, seqs, _ = _delta(c.get(f"/runs/{run}", headers=_live(n - 2)).text)
        assert (seqs, meta["data-replace"]) == ([n - 1, n], "0")
        meta, seqs, _ = _delta(c.get(f"/runs/{run}", headers=_live(n - 5)).text)
        assert (seqs, meta["data-replace"]) == ([n - 3, n - 2, n - 1, n], "1")
        # Paged back (?after=2): the window is seqs 3..6, however many come after it.
        attrs, shown = _timeline(c.get(f"/runs/{run}?after=2").text)
        assert sorted(shown) == [3, 4, 5, 6] and "data-cap" not in attrs
        assert attrs["data-last"] == "6"
        for held, want, replace in ((4, [5, 6], "0"), (6, [], "0"), (None, [3, 4, 5, 6], "1"),
                                    (1, [3, 4, 5, 6], "1")):
            meta, seqs, _ = _delta(c.get(f"/runs/{run}?after=2", headers=_live(held)).text)
            assert (seqs, meta["data-replace"]) == (want, replace), held
        # Pages holding the same last event at one commit share one read and render;
        # another last event is another render.
        before = live.computed
        for _ in range(3):
            c.get(f"/runs/{run}", headers=_live(n - 1))
        assert live.computed == before + 1
        c.get(f"/runs/{run}", headers=_live(n - 3))
        assert live.computed == before + 2
    s.close()


def test_the_delta_draws_only_what_the_callers_role_may_use(tmp_path: Path) -> None:
    s, run = _finished(tmp_path)
    _, secret = create_token(s, "val", "viewer", who="human:root")
    with TestClient(create_app(s, port=8765, agents=AGENTS), base_url=BASE,
                    headers={"Authorization": f"Bearer {secret}"}) as c:
        part = c.get(f"/runs/{run}", headers=_live(3)).text
        _, seqs, inside = _delta(part)
        assert seqs == [e.seq for e in s.events(run) if e.seq > 3]
        assert "?step=" in inside and "roll back before it" not in inside
        assert 'data-testid="stop"' not in part  # nor the header's buttons
    s.close()


def test_approvals_are_timed_on_the_runs_clock_as_the_night_report_times_them(
        tmp_path: Path) -> None:
    night = datetime(2001, 1, 1, 2, 14, tzinfo=UTC).timestamp()  # a simulated night
    s, run, req = _awaiting(tmp_path, FixedClock(night))
    row = s.approval(req)
    asked = s.event(req)
    assert row is not None and asked is not None
    assert asked.time.startswith("2001-01-01T02:14")  # the journal: the run's clock
    assert row.requested_at > night + 3e8  # the row: wall time (expiry counts on it)
    wall = at(row.requested_at)
    with TestClient(create_app(s, port=8765, agents=AGENTS), base_url=BASE) as c:
        needs = c.get("/needs").text
        card = re.search(rf'<article[^>]*data-approval="{req}".*?</article>', needs, re.S)
        assert card and "requested" in card.group(0)
        assert "2001-01-01 02:14:00 (run clock)" in card.group(0)
        assert wall not in card.group(0)
        page = c.get(f"/runs/{run}").text
        assert "asked <span class=\"asked\">2001-01-01 02:14:00 (run clock)</span>" in page
        assert wall not in page
        # The report says the same time (to the minute), and that it is the run's clock.
        report = c.get("/report", params={"tz": "UTC"}).text
        assert "since 2001-01-01 02:14" in report and "times are the runs' own clocks" in report
        # The API keeps requested_at (wall, by design) and adds the run clock's time.
        for listing in (c.get("/api/approvals").json(), c.get("/api/needs").json()["approvals"]):
            (a,) = listing
            assert a["requested_at"] == row.requested_at
            assert a["requested_run_time"] == asked.time
        # A decision answers with the same shape.
        done = c.post(f"/api/approvals/{req}/deny", json={"reason": "not tonight"},
                      headers={"X-CSRF-Token": csrf(c)})
        assert done.status_code == 200, done.text
        assert done.json()["result"]["requested_run_time"] == asked.time
    s.close()
