"""Spans from the journal: a real swarm run through the Worker, its committed stream sent by
the OTLP/HTTP exporter to a loopback receiver that decodes the protobuf
(``tether.testing.otlp``); ``tether export-otel`` replays the store to another receiver
and must send the very same spans."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tether import Agent, ScriptedModel, Worker, start_run
from tether.cli.app import app
from tether.core.ids import UlidSource
from tether.models.base import ModelResponse, ToolCall
from tether.ops import Tether
from tether.runtime.committer import GroupCommitter
from tether.runtime.journal import RunJournal
from tether.store.records import Write
from tether.store.sqlite import SQLiteStore
from tether.telemetry.otel import OtlpSpans
from tether.telemetry.sink import TelemetrySink
from tether.testing.otlp import OtlpReceiver, ReceivedSpan
from tether.tools import tool

runner = CliRunner()


@tool(effect="read")
def lookup(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


@tool(effect="irreversible")
def notify(text: str) -> str:
    """Tell the on-call person."""
    return f"notified: {text}"


def _calls(*calls: tuple[str, str, dict[str, object]]) -> ModelResponse:
    return ModelResponse(None, [ToolCall(cid, name, json.dumps(args)) for cid, name, args in calls])


WRITER = Agent("writer", model=ScriptedModel([
    _calls(("c1", "lookup", {"city": "Paris"}), ("c2", "notify", {"text": "storm"})),
    _calls(("c3", "send_message", {"to": "reader", "text": "storm warned", "topic": "news"})),
    ModelResponse("done"),
], name="gpt-test"), instructions="Warn people.", tools=[lookup, notify], swarm=True)

READER = Agent("reader", model=ScriptedModel([
    _calls(("r1", "read_inbox", {})),
    ModelResponse("read"),
], name="gpt-test"), instructions="Read.", swarm=True)

AGENTS = {"writer": WRITER, "reader": READER}


def _drive(store: SQLiteStore, endpoint: str, only: set[str] | None = None) -> None:
    """One worker process's life: a sink of its own (a fresh builder, as after a restart)."""
    sink = TelemetrySink(store, spans=OtlpSpans(endpoint + "/v1/traces"))
    try:
        asyncio.run(Worker(store, agents=AGENTS, on_commit=sink, only=only).run(
            until_idle=True))
    finally:
        sink.close()


def _key(s: ReceivedSpan) -> tuple[object, ...]:
    return (s.trace_id, s.span_id, s.parent_id, s.name, s.kind, s.start_ns, s.end_ns,
            json.dumps([s.attributes, s.events, s.links], sort_keys=True), s.status)


def test_live_spans_follow_genai_conventions_and_export_otel_sends_the_same(
        tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "t.db")
    w = start_run(store, WRITER, agent_ref="writer", goal="warn", name="writer", swarm="team")
    r = start_run(store, READER, agent_ref="reader", goal="read", name="reader", swarm="team")
    with OtlpReceiver() as live:
        _drive(store, live.endpoint, {w})  # stops at notify: irreversible needs approval
        (pending,) = Tether(store, who="human:ops").approvals()
        live_before = len(live.spans)
        Tether(store, agents=AGENTS, who="human:ops").approve(pending.id)
        _drive(store, live.endpoint, {w})  # another process takes the step up where it waited
        _drive(store, live.endpoint)  # the reader finds the writer's message
    assert store.get_run(w).status == "done" and store.get_run(r).status == "done"  # type: ignore[union-attr]
    spans = live.spans
    assert live_before >= 2 and len(spans) > live_before
    by_name: dict[str, list[ReceivedSpan]] = {}
    for s in spans:
        by_name.setdefault(s.name, []).append(s)
    assert set(by_name) == {"invoke_agent writer", "invoke_agent reader", "chat gpt-test",
                            "execute_tool lookup", "execute_tool notify",
                            "execute_tool send_message", "execute_tool read_inbox"}
    ids = [(s.trace_id, s.span_id) for s in spans]
    assert len(ids) == len(set(ids)), "a span was sent twice"
    steps = {(s.trace_id, s.span_id): s for s in by_name["invoke_agent writer"]}
    assert len(steps) == 3 and len(by_name["invoke_agent reader"]) == 2
    for s in spans:
        a = s.attributes
        assert a["gen_ai.conversation.id"] == a["tether.run.id"] and a["tether.run.id"] in (w, r)
        assert a["gen_ai.agent.name"] in ("writer", "reader")
        assert s.resource["service.name"] == "tether" and s.scope == "tether"
        assert s.start_ns <= s.end_ns
        if s.name.startswith("invoke_agent"):
            assert s.parent_id == "" and a["gen_ai.operation.name"] == "invoke_agent"
            assert s.kind == "INTERNAL" and isinstance(a["tether.step"], int)
        else:  # every call span hangs under its step's invoke_agent, in the step's trace
            parent = [p for p in spans if p.trace_id == s.trace_id and p.span_id == s.parent_id]
            assert [p.name.startswith("invoke_agent") for p in parent] == [True], s.name
            assert parent[0].attributes["tether.step"] == a["tether.step"]
    chat = by_name["chat gpt-test"][0]
    assert chat.kind == "CLIENT" and chat.attributes["gen_ai.operation.name"] == "chat"
    assert chat.attributes["gen_ai.request.model"] == "gpt-test"
    assert chat.attributes["gen_ai.response.model"] == "gpt-test"
    assert chat.attributes["gen_ai.usage.input_tokens"] > 0
    assert chat.attributes["gen_ai.usage.output_tokens"] > 0
    (look,) = by_name["execute_tool lookup"]
    assert look.attributes["gen_ai.tool.name"] == "lookup"
    assert look.attributes["gen_ai.tool.call.id"] == "c1"
    assert look.attributes["gen_ai.operation.name"] == "execute_tool"
    assert look.attributes["tether.effect.class"] == "read"
    (eff,) = by_name["execute_tool notify"]
    assert eff.attributes["gen_ai.tool.call.id"] == "c2"
    assert eff.attributes["tether.effect.class"] == "irreversible"
    assert eff.attributes["tether.policy.verdict"] == "approve"
    assert eff.attributes["tether.effect.outcome"] == "done"
    # The step that waited for a person: its span, sent by the second process (which read
    # the step's earlier events back from the store), spans the wait and carries the
    # policy's decision, the request and the person's decision (journaled by the CLI).
    step1 = steps[(eff.trace_id, eff.parent_id)]
    names = [n for n, _, _ in step1.events]
    assert names[:3] == ["tether.policy.decided", "tether.approval.requested",
                         "tether.approval.decided"]
    assert step1.start_ns < eff.start_ns < eff.end_ns <= step1.end_ns
    # The message's receiver links to its sender's send_message span, across runs.
    (send,) = by_name["execute_tool send_message"]
    (recv,) = by_name["execute_tool read_inbox"]
    assert send.attributes["gen_ai.tool.call.id"] == "c3"
    assert [(t, s_) for t, s_, _ in recv.links] == [(send.trace_id, send.span_id)]
    assert recv.links[0][2]["tether.link.kind"] == "message"

    with OtlpReceiver() as replay:
        for run in (w, r):
            res = runner.invoke(app, ["--store", str(tmp_path / "t.db"), "export-otel", run,
                                      "--endpoint", replay.endpoint + "/v1/traces",
                                      "--resource", "deployment.environment=test"])
            assert res.exit_code == 0, res.output
            assert "exported" in res.output
    assert sorted(map(_key, replay.spans)) == sorted(map(_key, spans))
    assert replay.spans[0].resource["deployment.environment"] == "test"
    store.close()


def test_only_committed_writes_reach_the_sink(tmp_path: Path) -> None:
    """A write the store refuses (a fenced-out owner) never reaches the sink (so makes no
    span and no count); the write committed in the same batch does."""
    store = SQLiteStore(tmp_path / "t.db")
    a = start_run(store, WRITER, agent_ref="writer", goal="a")
    b = start_run(store, WRITER, agent_ref="writer", goal="b")
    seen: list[Write] = []
    mine, theirs = store.acquire(a, "me", 60.0, 0.0), store.acquire(b, "someone-else", 60.0, 0.0)
    assert mine is not None and theirs is not None

    async def go() -> list[BaseException | None]:
        c = GroupCommitter(store, on_commit=lambda ws, secs: seen.extend(ws))
        outs = []
        for rid, fence in ((a, mine), (b, theirs + 1)):
            row = store.get_run(rid)
            assert row is not None
            j = RunJournal(store, row, fence, UlidSource(lambda: 1.8e9), lambda: 1.8e9)
            j.append("step.started", {}, actor="agent:writer")
            outs.append(c.submit_nowait(j.take()))
        res = await asyncio.gather(*outs, return_exceptions=True)
        await asyncio.to_thread(c.close)
        return [x if isinstance(x, BaseException) else None for x in res]

    errors = asyncio.run(go())
    assert errors[0] is None and errors[1] is not None
    assert [wr.run for wr in seen] == [a]
    store.close()


def test_tether_worker_sends_spans_when_an_endpoint_is_set(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    """`tether worker` exports by default once OTEL_EXPORTER_OTLP_ENDPOINT names a receiver
    (and `--no-otel` keeps it quiet); the resource comes from OTEL_RESOURCE_ATTRIBUTES."""
    db = str(tmp_path / "t.db")
    res = runner.invoke(app, ["--store", db, "run", "tests.sample_agents:sleeper", "--goal", "t",
                              "--detach"])
    assert res.exit_code == 0, res.output
    with OtlpReceiver() as rx:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rx.endpoint)
        monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "openinference.project.name=night")
        res = runner.invoke(app, ["--store", db, "worker", "--until-idle", "--no-otel"])
        assert res.exit_code == 0, res.output
        assert rx.spans == []
        res = runner.invoke(app, ["--store", db, "run", "tests.sample_agents:sleeper", "--goal",
                                  "t", "--detach"])
        res = runner.invoke(app, ["--store", db, "worker", "--until-idle"])
        assert res.exit_code == 0, res.output
    (step,) = rx.spans  # the second run's one step (then it sleeps); the first sent nothing
    assert step.name == "invoke_agent sleeper" and step.attributes["tether.step"] == 1
    assert step.attributes["tether.step.outcome"] == "sleep"
    assert step.resource["openinference.project.name"] == "night"
    # export-otel --since: every run changed since then (both), the same span for the second.
    with OtlpReceiver() as again:
        res = runner.invoke(app, ["--store", db, "export-otel", "--since", "1h", "--endpoint",
                                  again.endpoint + "/v1/traces"])
        assert res.exit_code == 0, res.output
        assert "exported 2 spans of 2 runs" in res.output
        assert (step.trace_id, step.span_id) in {(s.trace_id, s.span_id) for s in again.spans}
        res = runner.invoke(app, ["--store", db, "export-otel", "--since", "2999-01-01T00:00",
                                  "--endpoint", again.endpoint + "/v1/traces"])
        assert res.exit_code == 0 and "exported 0 spans of 0 runs" in res.output, res.output
        for wrong in ([], ["RUN", "--since", "1h"]):
            res = runner.invoke(app, ["--store", db, "export-otel", *wrong])
            assert res.exit_code == 2 and "give a RUN or --since TIME" in res.output


def test_the_wire_encoder_writes_what_the_sdk_encoder_writes() -> None:
    """Every attribute type, events, links, an error status and a root span: the live
    path's encoder (telemetry/wire.py) and the SDK's decode to the same spans."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    from tether.telemetry.spans import Span, SpanEvent, SpanLink
    from tether.telemetry.wire import Encoder
    from tether.testing.otlp import decode

    attrs = {"s": "ünïcode", "t": True, "f": False, "i": -1, "big": 2**62, "x": 0.25,
             "l": ["a", "b"], "long": "y" * 300}
    spans = [
        Span("invoke_agent a", "internal", 2**127 + 5, 2**63 + 7, None, 1_000, 2_000, attrs,
             (SpanEvent("tether.alert", 1_500, {"tether.stage": 2, "tether.message": "m"}),),
             error="run r step 1: boom"),
        Span("chat m", "client", 3, 4, 2**63 + 7, 1_100, 1_900, {"n": 1},
             links=(SpanLink(9, 10, {"tether.link.kind": "message"}),)),
    ]
    out = OtlpSpans("http://127.0.0.1:9/v1/traces", resource={"k": "v"}, live=False)
    try:
        ours = decode(Encoder(dict(out.resource.attributes), "tether", out.scope.version or "")
                      .request(spans))
        theirs = decode(encode_spans([out.sdk_span(s) for s in spans]).SerializeToString())
    finally:
        out.close()
    assert ours == theirs
    assert ours[0].attributes == attrs and ours[0].status == ("ERROR", "run r step 1: boom")
    assert ours[1].parent_id == f"{2**63 + 7:016x}" and ours[1].kind == "CLIENT"
