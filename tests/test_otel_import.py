"""OpenTelemetry GenAI spans made by a third-party instrumentation
(``opentelemetry-instrumentation-openai-v2``) around the real ``openai`` client talking
to a loopback model server, exported by the SDK's in-memory exporter as JSON, imported
and analyzed.

The spans are made in a subprocess: the instrumentation patches the ``openai`` module
for the whole process, which other tests must not see.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tether import verify_store
from tether.cli.app import app
from tether.store.sqlite import SQLiteStore

pytest.importorskip("opentelemetry.instrumentation.openai_v2")
runner = CliRunner()

MAKE_SPANS = r'''
import json, os, sys
os.environ["OTEL_SEMCONV_STABILITY_OPT_IN"] = "gen_ai_latest_experimental"
os.environ["OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"] = "SPAN_ONLY"
import openai
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tether.testing.openai_server import FakeChatServer, completion, tool_call

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
OpenAIInstrumentor().instrument(tracer_provider=provider)
tracer = provider.get_tracer("weather-app")
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}}]

def agent(server, city, fail):
    client = openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=0)
    with tracer.start_as_current_span("invoke_agent weather") as root:
        root.set_attribute("gen_ai.operation.name", "invoke_agent")
        root.set_attribute("gen_ai.agent.name", "weather")
        msgs = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": f"Weather in {city}?"}]
        for _ in range(2):  # the model asks for the same call twice
            r = client.chat.completions.create(model="gpt-4o-mini", messages=msgs, tools=TOOLS)
            m = r.choices[0].message
            msgs.append(m.model_dump(exclude_none=True))
            msgs.append({"role": "tool", "tool_call_id": m.tool_calls[0].id, "content": "sunny"})
        try:
            client.chat.completions.create(model="gpt-4o-mini", messages=msgs, tools=TOOLS)
        except openai.APIError:
            pass

with FakeChatServer() as server:
    for city, fail in (("Paris", False), ("Oslo", True)):
        args = json.dumps({"city": city})
        server.push(completion(tool_calls=[tool_call("c1", "get_weather", args)]),
                    completion(tool_calls=[tool_call("c2", "get_weather", args)]))
        from tether.testing.openai_server import error
        server.push(error(500, "boom") if fail else completion(f"Sunny in {city}."))
        agent(server, city, fail)

spans = exporter.get_finished_spans()

def any_value(v):
    if isinstance(v, bool): return {"boolValue": v}
    if isinstance(v, int): return {"intValue": str(v)}
    if isinstance(v, float): return {"doubleValue": v}
    if isinstance(v, (list, tuple)): return {"arrayValue": {"values": [any_value(x) for x in v]}}
    return {"stringValue": str(v)}

def otlp(s):
    return {"traceId": format(s.context.trace_id, "032x"), "spanId": format(s.context.span_id, "016x"),
            "parentSpanId": format(s.parent.span_id, "016x") if s.parent else "",
            "name": s.name, "kind": 3, "startTimeUnixNano": str(s.start_time),
            "endTimeUnixNano": str(s.end_time),
            "attributes": [{"key": k, "value": any_value(v)} for k, v in s.attributes.items()],
            "status": {"code": 2, "message": s.status.description or ""}
                      if s.status.status_code.name == "ERROR" else {}}

out = sys.argv[1]
with open(out + ".sdk.json", "w") as f:
    json.dump([json.loads(s.to_json()) for s in spans], f)
export = {"resourceSpans": [{"resource": {"attributes": [
    {"key": "service.name", "value": {"stringValue": "weather-app"}}]},
    "scopeSpans": [{"scope": {"name": "x"}, "spans": [otlp(s) for s in spans]}]}]}
with open(out + ".otlp.jsonl", "w") as f:
    f.write(json.dumps(export) + "\n")
'''


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("otel") / "spans"
    subprocess.run([sys.executable, "-c", MAKE_SPANS, str(base)], check=True, timeout=120)
    return base


def tether(db: Path, *args: str) -> tuple[int, str]:
    res = runner.invoke(app, ["--store", str(db), *args])
    return res.exit_code, res.output


@pytest.mark.parametrize("form", ["sdk.json", "otlp.jsonl"])
def test_instrumented_openai_spans_import_as_runs(exported: Path, tmp_path: Path,
                                                  form: str) -> None:
    db = tmp_path / "t.db"
    code, out = tether(db, "import", f"{exported}.{form}", "--json")
    assert code == 0, out
    made = [json.loads(line) for line in out.splitlines()]
    assert [(m["record"], m["steps"]) for m in made] == [(0, 3), (1, 3)]
    s = SQLiteStore(str(db))
    paris, oslo = (s.get_run(m["run"]) for m in made)
    assert paris is not None and oslo is not None
    assert paris.status == "done" and paris.goal == "Weather in Paris?"
    assert paris.spec["agent_name"] == "weather"
    assert oslo.status == "failed"  # its last call ended with an error status
    ev = s.events(paris.id)
    calls = [e.payload for e in ev if e.kind == "model.called"]
    assert calls[0]["model"] == "fake-model"
    assert calls[0]["response"]["usage"]["input_tokens"] > 0
    assert calls[0]["request"]["messages"][1]["content"] == "Weather in Paris?"
    assert calls[1]["request"]["messages"] == [
        {"role": "tool", "content": "sunny", "tool_call_id": "c1"}]
    assert calls[2]["response"]["content"] == "Sunny in Paris."
    tools = [e.payload for e in ev if e.kind == "tool.called"]
    assert [(t["tool"], t["arguments"], t["result"]) for t in tools] == [
        ("get_weather", {"city": "Paris"}, "sunny")] * 2
    assert verify_store(s).ok


def test_instrumented_spans_are_analyzed_without_a_store(exported: Path, tmp_path: Path) -> None:
    code, out = tether(tmp_path / "none.db", "analyze", f"{exported}.sdk.json", "--json")
    assert code == 0, out
    runs = [json.loads(line) for line in out.splitlines()]
    assert [(r["record"], r["steps"]) for r in runs] == [(0, 3), (1, 3)]
    assert not (tmp_path / "none.db").exists()


def test_a_span_with_broken_messages_is_named(tmp_path: Path) -> None:
    span = {"context": {"trace_id": "0x1", "span_id": "0x2"}, "name": "chat m",
            "start_time": "2026-12-04T22:00:00.000000Z", "end_time": "2026-12-04T22:00:01.000000Z",
            "attributes": {"gen_ai.operation.name": "chat", "gen_ai.input.messages": "{oops"},
            "status": {"status_code": "UNSET"}}
    src = tmp_path / "spans.json"
    src.write_text(json.dumps([span]))
    code, out = tether(tmp_path / "t.db", "import", str(src))
    assert code == 2
    assert "record 0: spans[0].attributes.gen_ai.input.messages: is not JSON text" in \
        " ".join(out.split())


def test_a_trace_without_genai_spans_is_no_run(tmp_path: Path) -> None:
    http = {"context": {"trace_id": "0xa", "span_id": "0x1"}, "name": "GET /health",
            "start_time": "2026-12-04T22:00:00.000000Z", "attributes": {"http.method": "GET"}}
    chat = {"context": {"trace_id": "0xb", "span_id": "0x2"}, "name": "chat m",
            "start_time": "2026-12-04T22:00:01.000000Z", "end_time": "2026-12-04T22:00:02.000000Z",
            "attributes": {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m",
                           "gen_ai.input.messages": json.dumps(
                               [{"role": "user", "parts": [{"type": "text", "content": "hi"}]}]),
                           "gen_ai.output.messages": json.dumps(
                               [{"role": "assistant", "parts": [{"type": "text", "content": "yo"}],
                                 "finish_reason": "stop"}])}}
    src = tmp_path / "spans.json"
    src.write_text(json.dumps([http, chat]))
    code, out = tether(tmp_path / "t.db", "import", str(src), "--json")
    assert code == 0, out
    made = [json.loads(line) for line in out.splitlines()]
    assert [(m["record"], m["steps"]) for m in made] == [(0, 1)]
    s = SQLiteStore(str(tmp_path / "t.db"))
    row = s.get_run(made[0]["run"])
    assert row is not None and row.goal == "hi" and row.spec["imported"]["trace_id"] == "0xb"
