"""Arize Phoenix as a real OTLP receiver (``make test-phoenix``): started offline on loopback
from its own venv, fed a swarm's spans by ``tether export-otel`` under a project named by
the resource attribute ``openinference.project.name``, and read back over its REST API.

Phoenix is large (about 860 MB installed), so this suite runs only when ``PHOENIX_BIN``
names its ``phoenix`` executable, as ``make test-phoenix`` does."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.test_telemetry_otel import AGENTS, READER, WRITER
from tether import Worker, start_run
from tether.cli.app import app
from tether.ops import Tether
from tether.store.sqlite import SQLiteStore

PHOENIX = os.environ.get("PHOENIX_BIN")
pytestmark = [pytest.mark.phoenix,
              pytest.mark.skipif(not PHOENIX, reason="make test-phoenix sets PHOENIX_BIN")]
PROJECT = "tether-night"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:  # noqa: S310 (loopback)
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (urllib.error.URLError, ConnectionError, json.JSONDecodeError):
        return 0, None


@pytest.fixture
def phoenix(tmp_path: Path) -> Iterator[str]:
    port = _free_port()
    env = {**os.environ, "PHOENIX_HOST": "127.0.0.1", "PHOENIX_PORT": str(port),
           "PHOENIX_GRPC_PORT": str(_free_port()), "PHOENIX_WORKING_DIR": str(tmp_path / "px"),
           "PHOENIX_ALLOW_EXTERNAL_RESOURCES": "false", "PHOENIX_TELEMETRY_ENABLED": "false"}
    log = (tmp_path / "phoenix.log").open("w")
    proc = subprocess.Popen([str(PHOENIX), "serve"], env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120  # a readiness wait, not an assertion on speed
        while _get(base + "/readyz")[0] != 200:
            assert proc.poll() is None, (tmp_path / "phoenix.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "Phoenix did not become ready in 120 s"
            time.sleep(0.25)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()


def test_phoenix_receives_a_swarms_spans_under_its_project(tmp_path: Path, phoenix: str) -> None:
    db = tmp_path / "t.db"
    store = SQLiteStore(db)
    w = start_run(store, WRITER, agent_ref="writer", goal="warn", name="writer", swarm="team")
    r = start_run(store, READER, agent_ref="reader", goal="read", name="reader", swarm="team")
    asyncio.run(Worker(store, agents=AGENTS, only={w}).run(until_idle=True))
    (pending,) = Tether(store).approvals()
    Tether(store, agents=AGENTS, who="human:ops").approve(pending.id)
    asyncio.run(Worker(store, agents=AGENTS, only={w}).run(until_idle=True))
    asyncio.run(Worker(store, agents=AGENTS).run(until_idle=True))
    store.close()
    for run in (w, r):
        res = CliRunner().invoke(app, ["--store", str(db), "export-otel", run, "--endpoint",
                                       phoenix + "/v1/traces", "--resource",
                                       f"openinference.project.name={PROJECT}"])
        assert res.exit_code == 0, res.output
    want = 14  # writer: 3 steps, 3 chats, lookup, notify, send_message; reader: 2, 2, inbox
    url = f"{phoenix}/v1/projects/{PROJECT}/spans?limit=100"
    deadline = time.monotonic() + 60  # Phoenix ingests in the background
    while True:
        code, body = _get(url)
        spans = body["data"] if code == 200 and body else []
        if len(spans) >= want or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    assert len(spans) == want, (code, [s["name"] for s in spans])
    by_name: dict[str, list[dict[str, Any]]] = {}
    for s in spans:
        assert {"name", "context", "parent_id", "span_kind", "start_time", "end_time",
                "status_code", "attributes"} <= set(s)
        by_name.setdefault(s["name"], []).append(s)
    assert sorted((n, len(v)) for n, v in by_name.items()) == [
        ("chat gpt-test", 5), ("execute_tool lookup", 1), ("execute_tool notify", 1),
        ("execute_tool read_inbox", 1), ("execute_tool send_message", 1),
        ("invoke_agent reader", 2), ("invoke_agent writer", 3)]
    roots = {s["context"]["span_id"]: s for s in spans if s["parent_id"] is None}
    assert len(roots) == 5 and all(s["name"].startswith("invoke_agent") for s in roots.values())
    for s in spans:
        a = s["attributes"]
        assert a["gen_ai.conversation.id"] in (w, r) and a["tether.run.id"] in (w, r)
        if s["parent_id"] is not None:
            assert roots[s["parent_id"]]["context"]["trace_id"] == s["context"]["trace_id"]
    (chat, *_) = by_name["chat gpt-test"]
    assert chat["span_kind"] == "LLM"  # Phoenix's own reading of gen_ai.operation.name
    assert chat["attributes"]["gen_ai.request.model"] == "gpt-test"
    assert chat["attributes"]["gen_ai.usage.input_tokens"] > 0
    (notify,) = by_name["execute_tool notify"]
    assert notify["span_kind"] == "TOOL"
    assert notify["attributes"]["gen_ai.tool.call.id"] == "c2"
    assert notify["attributes"]["tether.effect.class"] == "irreversible"
    assert by_name["invoke_agent writer"][0]["span_kind"] == "AGENT"
