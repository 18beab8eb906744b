"""Open pages that show the same live region at the same commit share one read and render
of it (tether.ui.coalesce): each still gets its own CSRF token in its forms, a new commit
is read again, and a render that fails is not shared."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from tests.ui_agents import ticker
from tether import Tether, start_run
from tether.store.sqlite import SQLiteStore
from tether.ui.app import create_app
from tether.ui.coalesce import LiveRegions

LIVE = {"X-Tether-Part": "live"}


def _tokens(html: str) -> set[str]:
    return set(re.findall(r'name="csrf" value="([^"]*)"', html))


def test_pages_on_one_run_share_its_live_region_each_with_its_own_token(
        tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path / "t.db")
    run = start_run(s, ticker, agent_ref="tests.ui_agents:ticker", goal="tick", name="tick")
    app = create_app(s, port=8765)
    live: LiveRegions = app.state.ctx.live
    # Two browsers (their own cookies) on one server; the first runs the server's lifespan.
    with TestClient(app, base_url="http://127.0.0.1:8765") as a:
        b = TestClient(app, base_url="http://127.0.0.1:8765")
        pages = [c.get(f"/runs/{run}") for c in (a, b)]  # each browser gets its CSRF seed
        own = [set(re.findall(r'name="csrf-token" content="([0-9a-f]+)"', p.text))
               for p in pages]
        assert own[0] != own[1]
        parts = [c.get(f"/runs/{run}", headers=LIVE) for c in (a, b, a)]
        assert all(p.status_code == 200 and 'data-status="running"' in p.text for p in parts)
        assert live.computed == 1  # three fetches, one read and render
        assert [_tokens(p.text) for p in parts] == [own[0], own[1], own[0]]
        assert live.placeholder not in "".join(p.text for p in parts)
        # Another page, or the same page asked differently, is its own region.
        a.get("/", headers=LIVE)
        a.get(f"/runs/{run}?notice=hello", headers=LIVE)
        assert live.computed == 3
        # A whole page is never shared: it is what a person's own action redirects to.
        Tether(s, who="human:ops").pause(run)
        assert 'data-status="paused"' in a.get(f"/runs/{run}").text
        b.close()
    s.close()


def test_concurrent_requests_wait_for_the_first_render() -> None:
    live = LiveRegions()
    calls: list[str] = []
    go = threading.Event()

    def render(token: str) -> str:
        calls.append(token)
        go.wait(30)  # the others arrive while this one renders
        return f"<form>{token}</form>"

    out: list[str] = []
    threads = [threading.Thread(target=lambda i=i: out.append(
        live.get(7, "/runs/x", render, f"t{i}"))) for i in range(8)]
    for t in threads:
        t.start()
    while not calls:
        threading.Event().wait(0.01)
    go.set()
    for t in threads:
        t.join(30)
    assert calls == [live.placeholder]
    assert sorted(out) == sorted(f"<form>t{i}</form>" for i in range(8))
    # An older commit than the one held is never served from, nor stored in, the cache.
    assert live.get(6, "/runs/x", lambda tok: f"old {tok}", "t") == "old t"
    assert live.get(7, "/runs/x", render, "t9") == "<form>t9</form>" and len(calls) == 1
    # A newer commit is rendered anew, and the older entries are dropped.
    assert live.get(8, "/runs/x", lambda tok: f"new {tok}", "t") == "new t"
    assert live.get(8, "/runs/x", render, "u") == "new u" and len(calls) == 1


def test_at_most_limit_regions_are_kept_the_oldest_going_first() -> None:
    live = LiveRegions(limit=3)
    for k in range(5):
        live.get(1, k, lambda tok, k=k: f"{k} {tok}", "t")

    def missing(tok: str) -> str:
        raise LookupError  # a region not kept is rendered again (and a failure not kept)

    def kept(k: int) -> bool:
        try:
            return live.get(1, k, missing, "t") == f"{k} t"
        except LookupError:
            return False
    assert [k for k in range(5) if kept(k)] == [2, 3, 4]


def test_a_failed_render_is_not_shared() -> None:
    live = LiveRegions()

    def broken(token: str) -> str:
        raise RuntimeError("the store went away")
    with pytest.raises(RuntimeError):
        live.get(1, "k", broken, "t")
    assert live.get(1, "k", lambda tok: f"ok {tok}", "t") == "ok t"
    assert live.computed == 1
