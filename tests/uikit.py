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
                return client.get("/api/session").status_code == 200
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
