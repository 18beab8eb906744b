"""Real dashboard servers and workers for the UI tests: ``tether ui serve`` and
``tether worker`` as subprocesses on a store file, on a free loopback port."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx

ROOT = Path(__file__).resolve().parents[1]
TETHER = Path(sys.executable).with_name("tether")
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(fn: Callable[[], T | None], what: str, limit: float = 30.0) -> T:
    """Poll ``fn`` until it returns something truthy (a liveness bound, not a timing
    assertion: the test fails only if it never happens)."""
    deadline = time.monotonic() + limit
    while True:
        got = fn()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.05)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


@contextmanager
def running(*args: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``tether ARGS`` as a subprocess (from the repository root, so agents given as
    ``tests.ui_agents:NAME`` load), ended at the end."""
    with log.open("wb") as out:
        proc = subprocess.Popen([str(TETHER), *args], cwd=ROOT, env=_env(), stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


@contextmanager
def dashboard(db: Path, tmp: Path) -> Iterator[httpx.Client]:
    """``tether ui serve`` on ``db``; a client on its base URL, once it answers."""
    port = free_port()
    log = tmp / f"ui-{port}.log"
    with running("--store", str(db), "ui", "serve", "--port", str(port), log=log) as proc:
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)

        def up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"the server exited: {log.read_text()}")
            try:
                # 401: it answers, and asks for a token (one exists in the store).
                return client.get("/api/session").status_code in (200, 401)
            except httpx.TransportError:
                return False
        wait_for(up, "the dashboard answers")
        client.proc = proc  # type: ignore[attr-defined]  # for a test that stops it
        try:
            yield client
        finally:
            client.close()


def csrf(client: httpx.Client) -> str:
    """The CSRF token of the client's cookie (the cookie is set on the client)."""
    return str(client.get("/api/session").json()["csrf"])


def page_csrf(html: str) -> str:
    m = re.search(r'name="csrf-token" content="([0-9a-f]+)"', html)
    assert m, "the page has no CSRF token"
    return m.group(1)


def error_of(resp: httpx.Response) -> dict[str, Any]:
    """The error body every API error has; fails unless it is well formed."""
    body = resp.json()
    err = body["error"]
    assert set(err) == {"status", "kind", "message"}, body
    assert err["status"] == resp.status_code and err["kind"] and err["message"], body
    return dict(err)


def journal_mark(store: Any) -> tuple[Any, ...]:
    """Everything a change would move: the newest commit batch, each run's events (count
    and last id), the store chain, every approval's status. Equal before and after a
    request: it journaled nothing."""
    runs = tuple((r.id, r.seq, r.status, r.epoch) for r in store.list_runs())
    events = tuple((r[0], len(store.events(r[0]))) for r in runs)
    chain = tuple(e.id for e in store.store_events())
    approvals = tuple((a.id, a.status) for a in store.approvals())
    return store.latest_batch(), runs, events, chain, approvals


def alerting_world(store: Any, tmp: Path) -> dict[str, str]:
    """A small real store for the API's tests: a payer waiting for approval, a writer done
    after 3 steps (reversible writes in ``tmp/ws``), and a looper its monitor alerted on.
    Returns the ids: ``pay``, ``wr``, ``loop``, ``approval``, ``alert``, ``effect``."""
    import asyncio

    from tests.test_monitor_host import Repeats, _looping, look
    from tests.ui_agents import payer, writer
    from tether import StepAgent, Worker, start_run
    looper = StepAgent(_looping, name="looper", tools=[look], monitors=[Repeats])
    agents = {"tests.ui_agents:payer": payer, "tests.ui_agents:writer": writer,
              "tests.uikit:looper": looper}
    pay = start_run(store, payer, agent_ref="tests.ui_agents:payer", goal="pay bob", name="pay")
    wr = start_run(store, writer, agent_ref="tests.ui_agents:writer", goal="write", name="wr",
                   workspace=tmp / "ws")
    loop = start_run(store, looper, agent_ref="tests.uikit:looper", goal="look", name="loop")
    asyncio.run(Worker(store, agents=agents, poll_interval=0.01).run(until_idle=True))
    (req,) = store.approvals(status="pending")
    from tether.alerts import alerts
    found = alerts(store, run=loop)
    assert found, "the looper raised no alert"
    effect = next(e for e in store.effects(run=wr))
    return {"pay": pay, "wr": wr, "loop": loop, "approval": req.id, "alert": found[0].id,
            "effect": effect.id}
