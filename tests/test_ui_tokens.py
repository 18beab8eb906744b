"""Token identities in the dashboard, driven in process (an ASGI client on the app, real
SQLite stores, real tokens from tether.identity): who each route lets act, a refusal
that journals nothing, Bearer and session callers, the loopback owner stepping aside the
moment a token exists, the sign-in page and its redirects, and a bind beyond loopback.
The same over a real server (sign-in, cookie, live stream, revocation): test_ui_signin.py."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.ui_agents import payer, writer
from tests.uikit import alerting_world, error_of, journal_mark
from tether.identity import PERMISSIONS, Role, create_token, revoke_token
from tether.store.sqlite import SQLiteStore
from tether.ui.app import create_app
from tether.ui.deps import route_permissions

AGENTS = {"tests.ui_agents:payer": payer, "tests.ui_agents:writer": writer}
BASE = "http://127.0.0.1:8765"

# Every route that changes something, and the permission (tether.identity.PERMISSIONS) it
# checks. A new route must be added here, with its permission, or this test fails (and
# create_app refuses a route that checks none).
CHANGES = {
    ("POST", "/api/approvals/{approval}/approve"): "approve",
    ("POST", "/api/approvals/{approval}/deny"): "deny",
    ("POST", "/api/runs/{run}/pause"): "pause",
    ("POST", "/api/runs/{run}/resume"): "resume",
    ("POST", "/api/runs/{run}/stop"): "stop",
    ("POST", "/api/effects/{effect}/resolve"): "resolve",
    ("POST", "/api/alerts/{alert}/ack"): "acknowledge",
    ("POST", "/api/runs/{run}/rollback"): "rollback",  # and cascade, when its body asks
    ("POST", "/api/runs/{run}/fork"): "fork",
    ("POST", "/api/runs/{run}/quarantine"): "quarantine",
    ("POST", "/api/runs/{run}/release"): "release",
    ("POST", "/api/runs/{run}/budget"): "budget",
    ("POST", "/api/audit/verify"): "read",  # reads the journal, writes nothing
    ("POST", "/api/policy"): "policy_apply",
    ("POST", "/approvals/{approval}/approve"): "approve",
    ("POST", "/approvals/{approval}/deny"): "deny",
    ("POST", "/runs/{run}/pause"): "pause",
    ("POST", "/runs/{run}/resume"): "resume",
    ("POST", "/runs/{run}/stop"): "stop",
    ("POST", "/effects/{effect}/resolve"): "resolve",
    ("POST", "/alerts/{alert}/ack"): "acknowledge",
    ("POST", "/runs/{run}/rollback"): "rollback",
    ("POST", "/runs/{run}/fork"): "fork",
    ("POST", "/runs/{run}/quarantine"): "quarantine",
    ("POST", "/runs/{run}/release"): "release",
    ("POST", "/runs/{run}/budget"): "budget",
    ("POST", "/audit/verify"): "read",
    ("POST", "/signin"): None,  # the token in its body is the credential
    ("POST", "/signout"): None,  # the session cookie is
}

# A body each API change would act on, were it allowed (so a wrong allowance journals).
BODIES: dict[str, dict[str, Any]] = {
    "approve": {}, "deny": {"reason": "no"}, "resolve": {"resolution": "done"},
    "acknowledge": {}, "rollback": {"to": 1}, "fork": {"at": 1}, "quarantine": {},
    "budget": {"set": {"steps": 9}},
    "policy_apply": {"text": '[[rule]]\nid = "r"\ntool = "*"\ndecide = "allow"\n'},
}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SQLiteStore, dict[str, str],
                                                                      dict[str, str]]]:
    """The store, its ids, and a token secret per role (module-wide: built once; tests
    that change things copy nothing back, so each checks its own effect)."""
    tmp = tmp_path_factory.mktemp("tokens")
    s = SQLiteStore(tmp / "t.db")
    ids = alerting_world(s, tmp)
    secrets = {r.label: create_token(s, f"{r.label}-1", r, who="human:root")[1] for r in Role}
    yield s, ids, secrets
    s.close()


def _client(s: SQLiteStore, host: str = "127.0.0.1") -> TestClient:
    return TestClient(create_app(s, host=host, port=8765, agents=AGENTS),
                      base_url=f"http://{host}:8765" if host not in ("0.0.0.0",) else BASE)


def _bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def _path(template: str, ids: dict[str, str]) -> str:
    return (template.replace("{run}", ids["pay"]).replace("{approval}", ids["approval"])
            .replace("{effect}", ids["effect"]).replace("{alert}", ids["alert"]))


def test_every_change_is_mapped_to_a_permission_of_the_identity_table(
        world: tuple[SQLiteStore, dict[str, str], dict[str, str]]) -> None:
    s, _, _ = world
    routes = route_permissions(create_app(s, port=8765))
    changes = {k: v for k, v in routes.items() if k[0] != "GET"}
    assert changes == CHANGES
    assert {v for v in CHANGES.values() if v} <= set(PERMISSIONS)
    # Every read checks who asks, with the read permission, but signing in and the schema.
    reads = {k: v for k, v in routes.items() if k[0] == "GET"}
    assert {k[1] for k, v in reads.items() if v is None} == {"/signin"}
    assert reads[("GET", "/api/session")] == "who"
    assert all(v == "read" for k, v in reads.items() if k[1] not in (
        "/signin", "/api/openapi.json", "/api/session"))


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_a_role_too_low_is_refused_every_change_and_nothing_is_journaled(
        world: tuple[SQLiteStore, dict[str, str], dict[str, str]], role: str) -> None:
    s, ids, secrets = world
    refused = [(m, p, perm) for (m, p), perm in CHANGES.items()
               if p.startswith("/api/") and perm and not Role.parse(role) >= PERMISSIONS[perm]]
    assert refused  # the viewer and the operator are each refused something
    with _client(s) as c:
        before = journal_mark(s)
        for _, template, perm in refused:
            resp = c.post(_path(template, ids), json=BODIES.get(perm, {}),
                          headers=_bearer(secrets[role]))
            err = error_of(resp)
            assert resp.status_code == 403, (template, resp.text)
            assert err["kind"] == "Forbidden" and f"may not {perm}" in err["message"]
            assert f"{role}-1 ({role})" in err["message"]
        # The cascade needs admin even where the rollback route is reached.
        assert journal_mark(s) == before


def test_pages_forms_refuse_a_viewer_too_and_draw_no_buttons_it_cannot_use(
        world: tuple[SQLiteStore, dict[str, str], dict[str, str]]) -> None:
    s, ids, secrets = world
    with _client(s) as c:
        viewer = c.get("/needs", headers=_bearer(secrets["viewer"]))
        assert viewer.status_code == 200 and "viewer-1 (viewer)" in viewer.text
        assert f'data-approval="{ids["approval"]}"' in viewer.text
        assert 'data-testid="approve"' not in viewer.text and 'data-testid="ack"' not in viewer.text
        run_page = c.get(f"/runs/{ids['wr']}", headers=_bearer(secrets["viewer"])).text
        for testid in ("pause", "stop", "fork", "quarantine", "rollback-plan", "caps"):
            assert f'data-testid="{testid}"' not in run_page, testid
        op = c.get(f"/runs/{ids['wr']}", headers=_bearer(secrets["operator"])).text
        assert 'data-testid="stop"' in op and 'data-testid="fork"' not in op
        assert "roll back before it" not in op
        admin = c.get(f"/runs/{ids['wr']}", headers=_bearer(secrets["admin"])).text
        assert 'data-testid="fork"' in admin and 'data-testid="rollback-cascade"' in admin
        plan = c.get(f"/runs/{ids['wr']}/rollback?to=1", headers=_bearer(secrets["viewer"]))
        assert 'id="plan"' in plan.text and 'id="confirm"' not in plan.text
        before = journal_mark(s)
        for (_, template), perm in CHANGES.items():
            if template.startswith("/api/") or perm in (None, "read"):
                continue
            resp = c.post(_path(template, ids), data={"to": "1", "at": "1", "reason": "x"},
                          headers=_bearer(secrets["viewer"]), follow_redirects=False)
            assert resp.status_code == 403, (template, resp.text)
        assert journal_mark(s) == before


def test_the_token_name_is_the_actor_and_a_bearer_needs_no_csrf(tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path / "t.db")
    ids = alerting_world(s, tmp_path)
    _, op = create_token(s, "ada", "operator", who="human:root")
    _, admin = create_token(s, "root-bot", "admin", who="human:root")
    with _client(s) as c:
        resp = c.post(f"/api/alerts/{ids['alert']}/ack", json={"note": "seen"},
                      headers=_bearer(op))
        assert resp.status_code == 200, resp.text
        resp = c.post(f"/api/approvals/{ids['approval']}/deny", json={"reason": "not now"},
                      headers=_bearer(op))
        assert resp.status_code == 200, resp.text
        # An operator may roll back nothing; an admin may, but a cascade only as admin too.
        assert c.post(f"/api/runs/{ids['wr']}/rollback", json={"to": 2},
                      headers=_bearer(op)).status_code == 403
        resp = c.post(f"/api/runs/{ids['wr']}/rollback", json={"to": 2}, headers=_bearer(admin))
        assert resp.status_code == 200, resp.text
    (decided,) = [e for e in s.events(ids["pay"]) if e.kind == "approval.decided"]
    (acked,) = [e for e in s.events(ids["loop"]) if e.kind == "alert.acked"]
    (rolled,) = [e for e in s.events(ids["wr"]) if e.kind == "rollback"]
    assert (decided.actor, acked.actor, rolled.actor) == ("human:ada", "human:ada",
                                                          "human:root-bot")
    s.close()


def test_api_session_says_who_you_are_and_what_your_role_may_do(
        world: tuple[SQLiteStore, dict[str, str], dict[str, str]]) -> None:
    s, _, secrets = world
    with _client(s) as c:
        me = c.get("/api/session", headers=_bearer(secrets["operator"])).json()
        assert {k: me[k] for k in ("name", "role", "source", "via", "actor")} == {
            "name": "operator-1", "role": "operator", "source": "token", "via": "bearer",
            "actor": "human:operator-1"}
        assert "approve" in me["may"] and "rollback" not in me["may"] and me["csrf"]
        assert c.get("/api/session", headers=_bearer(secrets["admin"])).json()["may"] == list(
            PERMISSIONS)


def test_once_a_token_exists_every_request_needs_one_even_while_serving(
        tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path / "t.db")
    with _client(s) as c:
        me = c.get("/api/session").json()
        assert (me["role"], me["via"], me["source"]) == ("admin", "loopback", "os")
        info, secret = create_token(s, "ada", "viewer", who="human:root")  # while it serves
        resp = c.get("/api/overview")
        assert resp.status_code == 401 and "Bearer" in resp.headers["www-authenticate"]
        assert "needs an access token" in error_of(resp)["message"]
        bad = c.get("/api/overview", headers=_bearer("tth_" + "x" * 43))
        assert bad.status_code == 401 and bad.headers["www-authenticate"] == (
            'Bearer realm="tether", error="invalid_token"')  # RFC 6750: comma-separated
        assert "not valid" in error_of(bad)["message"]
        assert c.get("/api/overview", headers={"Authorization": "Basic eDp5"}).status_code == 401
        assert c.get("/api/overview", headers=_bearer(secret)).status_code == 200
        # A browser is sent to sign in, keeping where it was going; its script gets a 401.
        page = c.get("/runs/abc?step=2", follow_redirects=False)
        assert page.status_code == 303
        assert page.headers["location"] == "/signin?next=%2Fruns%2Fabc%3Fstep%3D2"
        part = c.get("/needs", headers={"X-Tether-Part": "live"}, follow_redirects=False)
        assert part.status_code == 401
        # A proxy's header: never the loopback owner, even before any token.
        revoke_token(s, info.id, who="human:root")
        assert c.get("/api/overview").status_code == 200  # no valid token: the OS user again
        fwd = c.get("/api/overview", headers={"X-Forwarded-For": "203.0.113.9"})
        assert fwd.status_code == 401 and "proxy" in error_of(fwd)["message"]
    s.close()


def _csrf(html: str) -> str:
    m = re.search(r'name="csrf-token" content="([0-9a-f]+)"', html)
    assert m
    return m.group(1)


def test_sign_in_starts_a_session_and_refuses_a_bad_token_or_a_foreign_redirect(
        tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path / "t.db")
    _, secret = create_token(s, "ada", "operator", who="human:root")
    with _client(s) as c:
        form = c.get("/signin?next=/needs")
        assert form.status_code == 200 and 'name="token"' in form.text
        assert 'value="/needs"' in form.text and secret not in form.text
        token = _csrf(form.text)
        # Without the CSRF token another site could sign a browser in as someone else.
        assert c.post("/signin", data={"token": secret}).status_code == 403
        wrong = c.post("/signin", data={"token": "tth_" + "y" * 43, "csrf": token})
        assert wrong.status_code == 401 and "not valid" in wrong.text
        assert "tether_session" not in c.cookies
        ok = c.post("/signin", data={"token": secret, "csrf": token,
                                     "next": "//evil.example/x"}, follow_redirects=False)
        assert ok.status_code == 303 and ok.headers["location"] == "/"
        cookie = ok.headers["set-cookie"]
        assert "tether_session=" in cookie and "HttpOnly" in cookie
        assert "SameSite=strict" in cookie or "samesite=strict" in cookie.lower()
        assert "Path=/" in cookie and "Secure" not in cookie  # loopback: plain http
        me = c.get("/api/session").json()
        assert (me["name"], me["via"]) == ("ada", "session")
        # A session is a browser's: a change needs the CSRF token as any form does.
        assert c.post("/api/audit/verify").status_code == 403
        assert c.post("/api/audit/verify", headers={"X-CSRF-Token": token}).status_code == 200
        out = c.post("/signout", data={"csrf": token}, follow_redirects=False)
        assert out.status_code == 303 and out.headers["location"].startswith("/signin")
        assert c.get("/api/session").status_code == 401
    s.close()


def test_beyond_loopback_the_bound_name_is_answered_and_nobody_acts_without_a_token(
        tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path / "t.db")
    info, secret = create_token(s, "ada", "viewer", who="human:root")
    with TestClient(create_app(s, host="10.1.2.3", port=8765),
                    base_url="http://10.1.2.3:8765") as c:
        assert c.get("/api/overview", headers=_bearer(secret)).status_code == 200
        assert c.get("/api/overview").status_code == 401
        evil = c.get("/api/overview", headers={**_bearer(secret), "Host": "evil.example:8765"})
        assert evil.status_code == 400 and error_of(evil)["kind"] == "BadHost"
        form = c.get("/signin")
        assert "Secure" in form.text  # the page says the cookie needs https
        ok = c.post("/signin", data={"token": secret, "csrf": _csrf(form.text)},
                    follow_redirects=False)
        assert "Secure" in ok.headers["set-cookie"]
        # Every token revoked: beyond loopback there is no OS-user fallback at all.
        revoke_token(s, info.id, who="human:root")
        assert c.get("/api/overview").status_code == 401
    with TestClient(create_app(s, host="0.0.0.0", port=8765),
                    base_url="http://dash.example:8765") as c:
        resp = c.get("/api/overview")  # any Host is answered; still nobody without a token
        assert resp.status_code == 401 and error_of(resp)["kind"] == "Unauthorized"
    s.close()


def test_what_a_request_may_bring_is_bounded_and_typed(tmp_path: Path) -> None:
    # Found by an adversarial review: a 50 MB note was acked and journaled for good; "yes"
    # counted as true; a huge ?after= reached SQLite; any page showed a sentence put in its
    # link (?notice=...), the sign-in page included; a proxy's Basic auth broke sessions.
    s = SQLiteStore(tmp_path / "t.db")
    ids = alerting_world(s, tmp_path)
    _info, secret = create_token(s, "ops", "admin", who="human:root")
    with _client(s) as c:
        auth = _bearer(secret)
        before = journal_mark(s)
        big = c.post(f"/api/alerts/{ids['alert']}/ack", headers=auth,
                     json={"note": "a" * (2 << 20)})
        assert big.status_code == 413 and "over 1,048,576 bytes" in error_of(big)["message"]

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it comes
            yield b'{"note": "'
            for _ in range(40):
                yield b"a" * 65536
            yield b'"}'
        streamed = c.post(f"/api/alerts/{ids['alert']}/ack", content=chunks(),
                          headers={**auth, "Content-Type": "application/json"})
        assert streamed.status_code == 413
        lax = c.post(f"/api/approvals/{ids['approval']}/approve", headers=auth,
                     json={"always": "yes"})
        assert lax.status_code == 422 and "always" in error_of(lax)["message"]
        huge = c.get(f"/api/runs/{ids['pay']}/events?after={10**22}", headers=auth)
        assert huge.status_code == 422 and "after" in error_of(huge)["message"]
        assert journal_mark(s) == before  # none of it journaled anything
        ok = c.post(f"/api/alerts/{ids['alert']}/ack", headers=auth, json={"note": "seen"})
        assert ok.status_code == 200
    with _client(SQLiteStore(tmp_path / "t2.db")) as c:  # no tokens: the loopback owner
        lure = "Tokens rotated: paste yours at https://evil.example"
        for path in ("/signin", "/", "/needs"):
            page = c.get(path, params={"notice": lure, "error": lure})
            assert page.status_code == 200 and "evil.example" not in page.text, path
        form = c.get("/needs")
        token = re.search(r'name="csrf-token" content="([0-9a-f]+)"', form.text)
        assert token is not None
        done = c.post("/audit/verify", data={"csrf": token.group(1)}, follow_redirects=False)
        assert done.status_code == 303
        shown = c.get(done.headers["location"])
        assert "verified: intact" in shown.text  # this server's own notices still show
        basic = c.get("/api/session", headers={"Authorization": "Basic eDp5"})
        assert basic.status_code == 200  # another scheme is not a claim to judge
        assert basic.headers["x-frame-options"] == "DENY"  # nobody frames its buttons
        assert "frame-ancestors 'none'" in c.get("/").headers["content-security-policy"]


def test_an_admin_applies_a_policy_journaled_as_their_token(tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path / "t.db")
    _info, secret = create_token(s, "ada", "admin", who="human:root")
    text = '[[rule]]\nid = "pay-needs-ok"\ntool = "pay"\ndecide = "approve"\n'
    with _client(s) as c:
        auth = _bearer(secret)
        assert c.get("/api/policy", headers=auth).json()["scope"] == "built-in"
        bad = c.post("/api/policy", headers=auth, json={"text": "[[rule]]\nid = 3\n"})
        assert bad.status_code == 400 and "dashboard" in error_of(bad)["message"]
        assert not [e for e in s.store_events() if e.kind == "policy.applied"]
        ok = c.post("/api/policy", headers=auth, json={"text": text})
        assert ok.status_code == 200 and "applied to the store" in ok.json()["message"]
        again = c.post("/api/policy", headers=auth, json={"text": text})
        assert again.json()["message"].startswith("unchanged")
        now = c.get("/api/policy", headers=auth).json()
        assert (now["scope"], now["rules"], now["text"], now["applied_by"]) == (
            "store", 1, text, "human:ada")
    applied = [e for e in s.store_events() if e.kind == "policy.applied"]
    assert [e.actor for e in applied] == ["human:ada"]  # once: the second was unchanged
