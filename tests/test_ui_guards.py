"""The dashboard's pure parts: where it may listen, which Host and Origin it answers,
CSRF tokens, roles, the loopback owner, state diffs, the live poller's fan-out; and the
``tether ui`` commands' refusals."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from tether.cli.app import app
from tether.core.identity import TokenInfo
from tether.core.statediff import diff
from tether.errors import UsageError
from tether.identity import Principal, Role
from tether.ui.auth import Auth, BearerToken, Caller, Credentials, LoopbackOwner, SessionCookie, Sessions
from tether.ui.live import Poller
from tether.ui.security import (
    allowed_hosts,
    check_bind,
    csrf_ok,
    csrf_token,
    is_loopback,
    origin_ok,
    safe_next,
)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_loopback_binds_are_allowed(host: str) -> None:
    assert is_loopback(host)
    check_bind(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5", "example.com", "localhost.evil"])
def test_any_other_bind_is_refused_until_tokens_exist(host: str) -> None:
    with pytest.raises(UsageError, match=r"refusing to serve on .*access token.*`tether ui token "
                                         r"create --name NAME --role admin`.*TLS"):
        check_bind(host)
    check_bind(host, tokens=True)


def test_allowed_hosts_are_the_loopback_names_with_the_port() -> None:
    hosts = allowed_hosts("127.0.0.1", 8765)
    assert hosts == {"localhost:8765", "127.0.0.1:8765", "[::1]:8765"}
    assert "[::2]:9000" in allowed_hosts("::2", 9000)  # type: ignore[operator]
    # Beyond loopback: the bound name or address too; a wildcard bind answers any Host
    # (it needs tokens, and then every request carries one).
    assert "dash.internal:8765" in allowed_hosts("dash.internal", 8765)  # type: ignore[operator]
    assert "10.1.2.3:8765" in allowed_hosts("10.1.2.3", 8765)  # type: ignore[operator]
    assert allowed_hosts("0.0.0.0", 8765) is None and allowed_hosts("::", 8765) is None


@pytest.mark.parametrize(("origin", "ok"), [
    (None, True), ("http://127.0.0.1:8765", True), ("https://127.0.0.1:8765", True),
    ("http://localhost:8765", False), ("http://evil.example", False),
    ("http://127.0.0.1:9999", False), ("null", False), ("ftp://127.0.0.1:8765", False)])
def test_origin_must_be_the_dashboard_as_the_browser_addressed_it(origin: str | None,
                                                                  ok: bool) -> None:
    assert origin_ok(origin, "127.0.0.1:8765") is ok


@pytest.mark.parametrize(("given", "went"), [
    ("/runs/01ABC?step=3", "/runs/01ABC?step=3"), ("/", "/"), ("/needs#x", "/needs#x"),
    (None, "/"), ("", "/"), ("https://evil.example/", "/"), ("//evil.example/", "/"),
    ("/\\evil.example/", "/"), ("\\\\evil.example", "/"), ("evil.example", "/"),
    ("javascript:alert(1)", "/"), ("/ok\r\nSet-Cookie: x=1", "/"), ("/signin?next=/", "/"),
    ("/signout", "/"), ("/" + "a" * 3000, "/")])
def test_sign_in_sends_the_browser_only_to_a_path_of_this_dashboard(given: str | None,
                                                                    went: str) -> None:
    assert safe_next(given) == went


def test_csrf_tokens_fit_one_seed_under_one_secret() -> None:
    token = csrf_token(b"s" * 32, "seed")
    assert csrf_ok(b"s" * 32, "seed", token)
    assert not csrf_ok(b"s" * 32, "other", token)
    assert not csrf_ok(b"t" * 32, "seed", token)  # a restarted server: tokens die with it
    assert not csrf_ok(b"s" * 32, None, token) and not csrf_ok(b"s" * 32, "seed", None)


def test_the_loopback_owner_steps_aside_for_a_bearer_a_proxy_and_tokens() -> None:
    tokens = [False]
    owner = LoopbackOwner("ada", tokens_exist=lambda: tokens[0])
    auth = Auth([owner])
    me = Caller(Principal("ada", Role.ADMIN, "os"), "loopback")
    assert auth.resolve(Credentials()) == me and me.actor == "human:ada"
    assert auth.resolve(Credentials(bearer="t0k3n")) is None  # a token resolver judges it
    assert auth.resolve(Credentials(forwarded=True)) is None  # may come from anywhere
    # A stale session cookie (signed in before the last token was revoked) is ignored.
    assert auth.resolve(Credentials(session="s")) == me
    tokens[0] = True
    assert auth.resolve(Credentials()) is None  # once a token exists, every request needs one


def _token(name: str, role: Role, tid: str = "T1", revoked: str | None = None) -> TokenInfo:
    return TokenInfo(id=tid, name=name, role=role, hash="h-" + tid, created="2026-01-01",
                     created_by="human:root", revoked=revoked)


def test_a_session_names_its_tokens_current_holder_and_ends_with_it() -> None:
    rows = {"h-T1": _token("ada", Role.OPERATOR)}
    now = [0.0]
    sessions = Sessions(rows.get, max_age=100, limit=2, clock=lambda: now[0])
    auth = Auth([BearerToken(lambda s: Principal("bot", Role.ADMIN, "token")
                             if s == "good" else None), SessionCookie(sessions)], sessions)
    sid = sessions.start(rows["h-T1"])
    assert len(sid) >= 43 and sid != sessions.start(rows["h-T1"])  # random, new each time
    got = auth.resolve(Credentials(session=sid))
    assert got is not None and (got.name, got.role, got.via) == ("ada", Role.OPERATOR, "session")
    # A Bearer header is judged alone: a bad one is not rescued by a good cookie.
    assert auth.resolve(Credentials(bearer="bad", session=sid)) is None
    assert auth.resolve(Credentials(bearer="good", session=sid)).via == "bearer"  # type: ignore[union-attr]
    # Revoked: the next request finds the row revoked, and the session is gone for good.
    rows["h-T1"] = _token("ada", Role.OPERATOR, revoked="2026-01-02")
    assert auth.resolve(Credentials(session=sid)) is None
    rows["h-T1"] = _token("ada", Role.OPERATOR)
    assert auth.resolve(Credentials(session=sid)) is None
    # Too old, however active; and the oldest goes first past the limit.
    old = sessions.start(rows["h-T1"])
    now[0] = 100.0
    assert sessions.principal(old) is None
    a, b, c = (sessions.start(rows["h-T1"]) for _ in range(3))
    assert len(sessions) == 2 and sessions.principal(a) is None and sessions.principal(c)
    assert sessions.end(b) and not sessions.end(b) and sessions.principal(b) is None


def test_state_diff_walks_objects_and_keeps_lists_whole() -> None:
    before = {"n": 1, "flag": 1, "seen": {"a": 1, "b": 2}, "log": [1, 2], "a.b": 0}
    after = {"n": 2, "flag": True, "seen": {"b": 2, "c": 3}, "log": [1, 2, 3], "a.b": 0,
             "new": None}
    assert [c.to_json() for c in diff(before, after)] == [
        {"path": "flag", "op": "changed", "before": 1, "after": True},
        {"path": "log", "op": "changed", "before": [1, 2], "after": [1, 2, 3]},
        {"path": "n", "op": "changed", "before": 1, "after": 2},
        {"path": "new", "op": "added", "before": None, "after": None},
        {"path": "seen.a", "op": "removed", "before": 1, "after": None},
        {"path": "seen.c", "op": "added", "before": None, "after": 3}]
    assert diff(before, before) == []
    assert diff({"x": {"a.b": 1}}, {"x": {"a.b": 2}})[0].path == 'x."a.b"'
    assert diff([1], [2])[0].path == "(state)"


def test_one_poller_read_serves_every_subscriber_and_a_slow_one_keeps_the_newest() -> None:
    head = [0]
    reads: list[int] = []

    def read() -> int:
        reads.append(head[0])
        return head[0]

    async def main() -> None:
        p = Poller(read, interval=0.001)
        await p.start()
        async with p.subscribe() as a, p.subscribe() as b, p.subscribe() as slow:
            head[0] = 1
            assert (await a.get(), await b.get()) == (1, 1)
            head[0] = 2
            assert (await a.get(), await b.get()) == (2, 2)
            # The slow page took nothing: it holds the newest number only, not a backlog.
            assert slow.qsize() == 1 and await slow.get() == 2
            assert p.listeners == 3
        assert p.listeners == 0
        await p.stop()
        # Every read was the poller's: three listeners did not make three readers.
        assert len(reads) == p.reads + 1  # and the one at start
    asyncio.run(main())


def test_ui_without_a_command_prints_its_help() -> None:
    res = CliRunner().invoke(app, ["ui"])
    assert res.exit_code in (0, 2) and "serve" in res.output


def test_ui_serve_refuses_a_public_bind_in_one_line(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["--store", str(tmp_path / "t.db"), "ui", "serve",
                                   "--host", "0.0.0.0"])
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: refusing to serve on 0.0.0.0")
    assert "`tether ui token create --name NAME --role admin`" in lines[0]
    assert not (tmp_path / "t.db").exists()  # refused before the store was opened


def test_state_diff_from_the_cli(tmp_path: Path) -> None:
    import asyncio as aio

    from tests.ui_agents import writer
    from tether import Worker, start_run
    from tether.store.sqlite import SQLiteStore
    s = SQLiteStore(tmp_path / "t.db")
    run = start_run(s, writer, agent_ref="tests.ui_agents:writer", goal="w",
                    workspace=tmp_path / "ws")
    aio.run(Worker(s, agents={"tests.ui_agents:writer": writer}, poll_interval=0.01)
            .run(until_idle=True))
    res = CliRunner().invoke(app, ["--store", str(s.path), "state", run, "--step", "2",
                                   "--diff-from", "1"])
    assert res.exit_code == 0, res.output
    assert [orjson.loads(x) for x in res.output.splitlines()] == [
        {"path": "n", "op": "changed", "before": 1, "after": 2},
        {"path": "written", "op": "changed", "before": ["f1.txt"],
         "after": ["f1.txt", "f2.txt"]}]


def test_a_missing_web_stack_is_one_error_naming_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from tether.ui import require
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("fastapi", "multipart") else real(name, *a))
    with pytest.raises(UsageError, match=r"needs fastapi, python-multipart \(the ui extra\): "
                                         r"pip install 'tether\[ui\]'"):
        require()


def test_ui_serve_on_a_port_in_use_is_one_error_line(tmp_path: Path) -> None:
    import socket

    from tether.store.sqlite import SQLiteStore
    SQLiteStore(tmp_path / "t.db").close()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        res = CliRunner().invoke(app, ["--store", str(tmp_path / "t.db"), "ui", "serve",
                                       "--port", str(port)])
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert len(lines) == 1, res.output
    assert lines[0].startswith(f"error: cannot serve the dashboard on 127.0.0.1:{port} (")
    assert "--port" in lines[0]
