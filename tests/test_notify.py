"""Webhook notifications against a real loopback HTTP server: signed, retried, never in the way."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tether import (
    Continue,
    Done,
    FixedClock,
    StepAgent,
    UsageError,
    Worker,
    __version__,
    rules_from_python,
    start_run,
    tool,
)
from tether.notify import (
    EXPIRING,
    GAVE_UP_AT,
    Notifier,
    WebhookConfig,
    backoff,
    decide,
    queue_expiring,
)
from tether.policies import apply_policy
from tether.store.records import Notification
from tether.store.sqlite import SQLiteStore

SECRET = "test-secret-ünïcode"  # noqa: S105  (a test fixture, non-ASCII on purpose)
T0 = 1_900_000_000.0


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)
        return data


@dataclass
class Hook:
    """A loopback webhook: records every request, replies as scripted (default 200)."""

    url: str = ""
    script: list[int | str] = field(default_factory=list)
    """Per request, in order: a status to reply with, or "hang" (no reply until teardown)."""
    requests: list[Received] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with lock:
                h.requests.append(Received(dict(self.headers.items()), body))
                action = h.script.pop(0) if h.script else 200
            if action == "hang":
                h.release.wait(5)
                self.close_connection = True
                return
            self.send_response(int(action))
            if 300 <= int(action) < 400:
                self.send_header("Location", "/elsewhere")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01})
    thread.start()
    h.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/tether?token=abc"
    try:
        yield h
    finally:
        h.release.set()
        server.shutdown()
        server.server_close()
        thread.join()


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def config(url: str, **kw: Any) -> WebhookConfig:
    return WebhookConfig(url=url, secret=SECRET, **kw)


def deliver(n: Notifier) -> int:
    async def go() -> int:
        try:
            return await n.deliver_due()
        finally:
            n.close()
    return asyncio.run(go())


def row(store: SQLiteStore, note_id: str) -> Notification | None:
    """The outbox row, while undelivered (due at any time up to the end of days)."""
    return next((n for n in store.outbox_due(GAVE_UP_AT + 1) if n.id == note_id), None)


def queue(store: SQLiteStore, note_id: str = "n1", kind: str = "run.paused") -> None:
    """Queue a notification that is due at once, on the real clock and on T0 alike."""
    store.notify([Notification(note_id, kind, {"id": note_id, "kind": kind, "run": "r1"},
                               time.time() - 1)])


def signed_by_secret(r: Received) -> bool:
    expected = "sha256=" + hmac.new(SECRET.encode(), r.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(r.headers["X-Tether-Signature"], expected)


async def _count(ctx: Any, state: dict[str, Any]) -> Any:
    state["n"] = state.get("n", 0) + 1
    return Continue()


COUNTER = StepAgent(_count, name="counter", budget={"steps": 1})


def start_counter(store: SQLiteStore) -> str:
    return start_run(store, COUNTER, agent_ref="counter", goal="count")


def test_a_real_run_is_notified_signed_with_an_id_per_event(store: SQLiteStore, hook: Hook) -> None:
    run = start_counter(store)
    asyncio.run(Worker(store, agents={"counter": COUNTER}, poll_interval=0.01).run(until_idle=True))
    assert store.get_run(run).status == "paused"  # type: ignore[union-attr]
    events = {e.kind: e.id for e in store.events(run)}

    assert deliver(Notifier(store, config(hook.url))) == 2
    got = {r.json["kind"]: r for r in hook.requests}
    assert set(got) == {"budget.exceeded", "run.paused"}
    for kind, r in got.items():
        assert signed_by_secret(r)
        assert r.headers["Content-Type"] == "application/json"
        assert r.headers["User-Agent"] == f"tether/{__version__}"
        assert r.headers["X-Tether-Notification"] == r.json["notification_id"] == events[kind]
        assert r.json["run"] == run and r.json["name"].startswith("counter-")
    assert got["budget.exceeded"].json["payload"]["limit"] == "steps"
    # Delivered means gone from the outbox: nothing is sent twice without a failure.
    assert store.outbox_due(GAVE_UP_AT + 1) == []
    assert deliver(Notifier(store, config(hook.url))) == 0
    assert len(hook.requests) == 2


def test_a_tampered_body_fails_the_signature(store: SQLiteStore, hook: Hook) -> None:
    queue(store)
    deliver(Notifier(store, config(hook.url)))
    r = hook.requests[0]
    assert signed_by_secret(r)
    assert not signed_by_secret(Received(r.headers, r.body.replace(b"r1", b"r2")))


def test_retries_with_backoff_after_500_and_timeout_then_delivers(store: SQLiteStore,
                                                                  hook: Hook) -> None:
    hook.script = [500, "hang", 200]
    clock = FixedClock(T0)
    notifier = Notifier(store, config(hook.url, timeout=0.3), clock=clock.now)
    queue(store)

    assert deliver(notifier) == 0
    first = row(store, "n1")
    assert first is not None and first.attempts == 1
    assert first.last_error == "HTTP 500 Internal Server Error"
    assert T0 + 0.5 <= first.next_at <= T0 + 1.0  # backoff_base 1 s, jittered over its upper half
    assert deliver(notifier) == 0 and len(hook.requests) == 1  # not due yet: nothing sent

    clock.advance(1.0)
    started = time.monotonic()
    assert deliver(notifier) == 0
    assert time.monotonic() - started < 2.0  # the hang is cut off by the timeout
    second = row(store, "n1")
    assert second is not None and second.attempts == 2
    assert second.last_error == "no reply within 0.3s"
    assert clock.now() + 1.0 <= second.next_at <= clock.now() + 2.0  # doubled

    clock.advance(2.0)
    assert deliver(notifier) == 1
    assert row(store, "n1") is None
    # The receiver got it three times (the hung request too): one id, so it keeps one.
    assert len(hook.requests) == 3
    assert {r.headers["X-Tether-Notification"] for r in hook.requests} == {"n1"}
    assert len({r.body for r in hook.requests}) == 1


def test_gives_up_after_max_attempts_and_keeps_the_error(store: SQLiteStore) -> None:
    clock = FixedClock(T0)
    notifier = Notifier(store, config(closed_port_url(), max_attempts=3, backoff_max=10.0),
                        clock=clock.now)
    queue(store)
    attempts = []
    for _ in range(3):
        assert deliver(notifier) == 0
        clock.advance(10.0)
        attempts.append(row(store, "n1").attempts)  # type: ignore[union-attr]
    assert attempts == [1, 2, 3]
    note = row(store, "n1")
    assert note is not None and note.next_at == GAVE_UP_AT
    assert note.last_error == "gave up after 3 attempts; last: connection refused"
    clock.advance(365 * 86400.0)
    assert deliver(notifier) == 0
    assert row(store, "n1").attempts == 3  # type: ignore[union-attr]


def test_a_dead_webhook_does_not_hold_up_the_run(store: SQLiteStore, hook: Hook) -> None:
    hook.script = ["hang"] * 4
    for i in range(4):  # enough to occupy every one of the notifier's threads
        queue(store, f"old{i}")
    run = start_counter(store)

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(Notifier(store, config(hook.url, timeout=1.0), parallel=4)
                                   .run(stop, interval=0.01))
        for _ in range(300):
            if len(hook.requests) == 4:
                break
            await asyncio.sleep(0.01)
        assert len(hook.requests) == 4  # the notifier is stuck on the webhook...
        await Worker(store, agents={"counter": COUNTER}, poll_interval=0.01).run(until_idle=True)
        # ...and the run went on to pause while every post was still waiting for a reply.
        assert not task.done()
        assert all(n.attempts == 0 for n in store.outbox_due(GAVE_UP_AT + 1))
        stop.set()
        await task

    asyncio.run(main())
    assert store.get_run(run).status == "paused"  # type: ignore[union-attr]
    old = [row(store, f"old{i}") for i in range(4)]
    assert all(n is not None and n.last_error == "no reply within 1s" for n in old)


def test_a_store_that_fails_is_logged_not_raised(store: SQLiteStore, hook: Hook,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    queue(store)
    with sqlite3.connect(store.path) as db:  # a damaged store: every outbox read fails
        db.execute("DROP TABLE outbox")
    db.close()
    assert deliver(Notifier(store, config(hook.url))) == 0
    assert "reading the outbox" in caplog.text


def test_a_redirect_is_a_failure_not_followed(store: SQLiteStore, hook: Hook) -> None:
    hook.script = [302]
    queue(store)
    assert deliver(Notifier(store, config(hook.url))) == 0
    assert len(hook.requests) == 1
    assert row(store, "n1").last_error == "HTTP 302 Found"  # type: ignore[union-attr]


def test_the_secret_stays_out_of_reprs() -> None:
    assert SECRET not in repr(config("https://ops.example.com/t"))


def test_kinds_not_taken_are_marked_not_sent(store: SQLiteStore, hook: Hook) -> None:
    queue(store, "a", "run.paused")
    queue(store, "b", "run.failed")
    assert deliver(Notifier(store, config(hook.url, kinds=frozenset({"run.failed"})))) == 1
    assert [r.json["notification_id"] for r in hook.requests] == ["b"]
    skipped = row(store, "a")
    assert skipped is not None and skipped.next_at == GAVE_UP_AT
    assert skipped.last_error == "not sent: the webhook takes no run.paused notifications"


@tool(effect="irreversible")
def wire_money(to: str, amount: int) -> str:
    """Wire money (irreversible)."""
    return f"wired {amount} to {to}"


async def _wire(ctx: Any, state: dict[str, Any]) -> Any:
    return Done(await ctx.call(wire_money, to="bob", amount=5))


def test_queue_expiring_queues_once(store: SQLiteStore, hook: Hook) -> None:
    agent = StepAgent(_wire, name="wirer", tools=[wire_money])
    policy = rules_from_python([], defaults={"expires": "1h"})
    run = start_run(store, agent, agent_ref="wirer", goal="pay")
    apply_policy(store, policy, who="human:ops")
    asyncio.run(Worker(store, agents={"wirer": agent}, policy=policy,
                       poll_interval=0.01).run(until_idle=True))
    assert store.get_run(run).status == "awaiting_approval"  # type: ignore[union-attr]
    (approval,) = store.approvals(status="pending")
    assert approval.expires_at is not None
    now = approval.expires_at - 3600.0

    assert queue_expiring(store, within=600, now=now) == []  # an hour left: not yet
    soon = approval.expires_at - 300.0
    (note,) = queue_expiring(store, within=600, now=soon)
    assert note.id == f"{approval.id}:expiring" and note.kind == EXPIRING
    queue_expiring(store, within=600, now=soon + 60)
    assert queue_expiring(store, within=600, now=approval.expires_at + 1) == []  # left to expiry

    assert deliver(Notifier(store, config(hook.url), clock=lambda: soon + 60)) == 2
    by_kind = {r.json["kind"]: r.json for r in hook.requests}
    assert set(by_kind) == {"approval.requested", EXPIRING}
    body = by_kind[EXPIRING]
    assert body["notification_id"] == note.id and body["run"] == run
    assert body["payload"]["id"] == approval.id and body["payload"]["tool"] == "wire_money"
    assert body["payload"]["expires_in"] == pytest.approx(300.0)


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    cfg = config("http://127.0.0.1:9/", backoff_base=2.0, backoff_max=100.0)
    assert [backoff(n, cfg, 0.999999) for n in (1, 2, 3)] == pytest.approx([2.0, 4.0, 8.0])
    assert [backoff(n, cfg, 0.0) for n in (1, 2, 3)] == pytest.approx([1.0, 2.0, 4.0])
    assert backoff(10, cfg, 0.999999) == pytest.approx(100.0)
    assert backoff(10_000, cfg, 0.5) == pytest.approx(75.0)  # no overflow
    note = Notification("n", "run.paused", {}, T0, attempts=4)
    assert decide(note, None, now=T0, config=cfg, jitter=0.5).delivered == T0
    retry = decide(note, "HTTP 502", now=T0, config=cfg, jitter=0.5)
    assert retry.delivered is None and retry.error == "HTTP 502"
    assert retry.next_at == pytest.approx(T0 + 24.0)


def test_config_from_env() -> None:
    assert WebhookConfig.from_env({}) is None
    cfg = WebhookConfig.from_env({"TETHER_WEBHOOK_URL": "https://ops.example.com/t",
                                  "TETHER_WEBHOOK_SECRET": "s"})
    assert cfg == WebhookConfig("https://ops.example.com/t", "s")
    with pytest.raises(UsageError, match="TETHER_WEBHOOK_SECRET is not"):
        WebhookConfig.from_env({"TETHER_WEBHOOK_URL": "https://ops.example.com/t"})


@pytest.mark.parametrize(("kw", "message"), [
    ({"url": "file:///etc/passwd"}, "must be http"),
    ({"url": "https://"}, "must be http"),
    ({"secret": ""}, "secret is empty"),
    ({"timeout": 0}, "timeout must be"),
    ({"max_attempts": 0}, "max_attempts"),
    ({"backoff_base": 10.0, "backoff_max": 1.0}, "backoff"),
])
def test_bad_config_is_refused(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        WebhookConfig(**{"url": "https://ops.example.com/t", "secret": "s", **kw})


def test_the_worker_delivers_what_its_runs_journal(store: SQLiteStore, hook: Hook) -> None:
    run = start_counter(store)
    asyncio.run(Worker(store, agents={"counter": COUNTER}, poll_interval=0.01,
                       webhook=config(hook.url)).run(until_idle=True))
    assert store.get_run(run).status == "paused"  # type: ignore[union-attr]
    kinds = sorted(r.json["kind"] for r in hook.requests)
    assert kinds == ["budget.exceeded", "run.paused"]
    assert all(signed_by_secret(r) for r in hook.requests)
