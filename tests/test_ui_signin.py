"""Signing in over a real server: ``tether ui serve`` on a loopback port, a browser-like
client (cookies, no Authorization header) signing in with a token, following the live
stream with its cookie alone, and a revocation ending its session and its stream at once."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import httpx
import pytest

from tests.uikit import dashboard, error_of, journal_mark, wait_for
from tether.identity import create_token, revoke_token
from tether.store.sqlite import SQLiteStore

pytestmark = pytest.mark.workers


def _csrf(html: str) -> str:
    m = re.search(r'name="csrf-token" content="([0-9a-f]+)"', html)
    assert m, html[:300]
    return m.group(1)


def _sign_in(c: httpx.Client, secret: str, next_: str = "/") -> httpx.Response:
    form = c.get(f"/signin?next={next_}")
    assert form.status_code == 200
    return c.post("/signin", data={"token": secret, "csrf": _csrf(form.text), "next": next_},
                  follow_redirects=True)


def test_sign_in_follow_the_live_stream_with_the_cookie_and_revoking_ends_it(
        tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path / "t.db")
    info, secret = create_token(s, "ada", "operator", who="human:root")
    with dashboard(s.path, tmp_path) as c:
        # Not signed in: the page sends the browser to sign in, keeping where it went.
        first = c.get("/needs", follow_redirects=False)
        assert first.status_code == 303 and first.headers["location"] == "/signin?next=%2Fneeds"
        done = _sign_in(c, secret, "/needs")
        assert done.status_code == 200 and str(done.url).endswith("/needs")  # followed
        assert "ada (operator)" in done.text and 'data-testid="signout"' in done.text
        cookie = done.history[0].headers["set-cookie"]
        assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower() and "Path=/" in cookie
        assert secret not in str(done.history[0].headers)  # the token went in the body only
        assert c.get("/api/session").json()["via"] == "session"

        # The live stream, with the cookie only (EventSource sends no header of its own).
        got: list[str] = []
        ended = threading.Event()

        def follow() -> None:
            with c.stream("GET", "/api/live") as resp:
                got.append(f"status {resp.status_code}")
                for line in resp.iter_lines():
                    got.append(line)
            ended.set()
        reader = threading.Thread(target=follow, daemon=True)
        reader.start()
        wait_for(lambda: any(x.startswith("event: hello") for x in got), "the stream says hello")
        assert got[0] == "status 200"
        _, other = create_token(s, "bob", "viewer", who="human:root")  # a commit: a change
        wait_for(lambda: any(x.startswith("event: change") for x in got), "a change arrives")

        # Revoked: the stream ends, and so does the session, at once.
        revoke_token(s, info.id, who="human:root")
        wait_for(ended.is_set, "the stream of a revoked token's session ends")
        resp = c.get("/api/session")
        assert resp.status_code == 401 and "session has ended" in error_of(resp)["message"]
        again = c.get("/needs", follow_redirects=False)
        assert again.status_code == 303 and again.headers["location"].startswith("/signin")
        # Signing in again with the revoked token is refused; journaled nothing.
        before = journal_mark(s)
        refused = _sign_in(c, secret)
        assert refused.status_code == 401 and "not valid" in refused.text
        assert journal_mark(s) == before
        # Another token signs in; signing out ends that session.
        assert _sign_in(c, other).status_code == 200
        assert c.get("/api/session").json()["name"] == "bob"
        out = c.post("/signout", data={"csrf": _csrf(c.get("/").text)}, follow_redirects=True)
        assert out.status_code == 200 and "signed out" in out.text
        assert c.get("/api/session").status_code == 401
    s.close()
