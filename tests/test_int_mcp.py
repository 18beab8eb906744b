"""tether.integrations.mcp on a real MCP server (tests/mcpkit.py: the SDK's MCPServer) run
as a stdio subprocess and over streamable HTTP on loopback, driven by a real Worker on a
real SQLite store; the model over loopback HTTP (FakeChatServer) or scripted."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.mcpkit import ROOT, VARIANT_ENV, HttpServerProcess, calls, stdio_args
from tether import (
    Agent,
    Continue,
    EffectInDoubt,
    ModelResponse,
    ScriptedModel,
    StepAgent,
    ToolCall,
    Worker,
    schema_tool,
    start_run,
    verify_store,
)
from tether.approvals import decide
from tether.control import resolve_effect
from tether.errors import ToolDefinitionError, UsageError
from tether.integrations.mcp import (
    HttpServer,
    ListedTool,
    StdioServer,
    close_sessions,
    list_tools,
    mcp_tools,
)
from tether.models.openai import OpenAIModel
from tether.procs import pid_alive
from tether.store.sqlite import SQLiteStore
from tether.testing import allow_tools
from tether.testing.openai_server import FakeChatServer, completion, tool_call

REF = "tests.test_int_mcp:agent"


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mcp")


@pytest.fixture(scope="module")
def listing(folder: Path) -> list[ListedTool]:
    """The server's tools, listed once for the module (each listing launches the server)."""
    return list_tools(shop(folder / "calls.jsonl"))


@pytest.fixture
def side(folder: Path) -> Path:
    """The server's side file, empty at the start of each test."""
    path = folder / "calls.jsonl"
    path.unlink(missing_ok=True)
    return path


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "t.db")
    yield s
    s.close()


def shop(side: Path, **env: str) -> StdioServer:
    return StdioServer("shop", sys.executable, stdio_args(side), cwd=ROOT, env=env or None)


def drive(store: SQLiteStore, agent: Agent) -> str:
    async def go() -> None:
        try:
            await Worker(store, agents={REF: agent}, poll_interval=0.01).run(until_idle=True)
        finally:
            await close_sessions()
    asyncio.run(go())
    (row,) = store.list_runs()
    return row.status


def tool_messages(server: FakeChatServer) -> list[str]:
    """The tool results the model saw, from the last request it received."""
    last = server.requests[-1].body["messages"]
    return [m["content"] for m in last if m["role"] == "tool"]


def scripted(tools: Any, *turns: ModelResponse) -> Agent:
    return Agent("shop", model=ScriptedModel([*turns, ModelResponse("finished")]),
                 instructions="Shop.", tools=tools)


def call(name: str, args: str, i: int = 1) -> ModelResponse:
    return ModelResponse(None, (ToolCall(f"c{i}", name, args),))


# -- the listing --------------------------------------------------------------------------

def test_tools_listed_with_schema_and_irreversible_unless_declared(
        side: Path, listing: list[ListedTool]) -> None:
    tools = {t.name: t for t in mcp_tools(shop(side), prefix="shop_", listing=listing)}
    assert set(tools) == {"shop_search", "shop_book", "shop_upsert", "shop_broken",
                          "shop_picture", "shop_crash", "shop_slow"}
    search = tools["shop_search"]
    assert search.description == "Search the catalogue."
    assert search.schema["properties"]["query"]["type"] == "string"
    assert search.schema["required"] == ["query"]
    # The server says search is read-only and upsert idempotent: hints, not trusted by default.
    assert {(t.effect, t.idempotent) for t in tools.values()} == {("irreversible", False)}

    trusted = {t.name: t for t in mcp_tools(shop(side), trust_annotations=True,
                                            effects={"book": "irreversible"},
                                            idempotent={"crash"}, listing=listing)}
    assert trusted["search"].effect == "read"
    assert (trusted["upsert"].effect, trusted["upsert"].idempotent) == ("irreversible", True)
    assert (trusted["crash"].effect, trusted["crash"].idempotent) == ("irreversible", True)
    assert trusted["book"].effect == "irreversible" and not trusted["book"].idempotent
    declared = {t.name: t for t in mcp_tools(shop(side), effects={"search": "read"},
                                             only={"search", "book"}, listing=listing)}
    assert set(declared) == {"search", "book"} and declared["search"].effect == "read"
    assert calls(side) == []  # listing calls no tool


def test_bad_declarations_and_an_unreachable_server_name_the_server(
        side: Path, listing: list[ListedTool]) -> None:
    with pytest.raises(ToolDefinitionError, match=r"MCP server shop has no tool serch .*"
                                                  r"it offers: book, broken"):
        mcp_tools(shop(side), effects={"serch": "read"}, listing=listing)
    with pytest.raises(ToolDefinitionError, match="cannot be reversible"):
        mcp_tools(shop(side), effects={"book": "reversible"}, listing=listing)
    gone = StdioServer("ghost", sys.executable, ["-c", "import sys; sys.exit(3)"])
    with pytest.raises(ToolDefinitionError, match=r"MCP server ghost \(.*-c import sys.*\): "
                                                  r"cannot list its tools"):
        mcp_tools(gone)
    with pytest.raises(UsageError, match="url must start with http"):
        HttpServer("web", "ftp://example.com")
    # A URL given as text once failed with AttributeError: 'str' object has no attribute 'name'.
    with pytest.raises(ToolDefinitionError, match="takes a StdioServer or an HttpServer, not str"):
        mcp_tools("http://127.0.0.1:9/mcp")  # type: ignore[arg-type]


def test_the_definition_hash_follows_the_servers_tools(side: Path,
                                                      listing: list[ListedTool]) -> None:
    def hashed(tools: Any) -> str:
        return scripted(tools).definition_hash()
    before = hashed(mcp_tools(shop(side), listing=listing))
    assert hashed(mcp_tools(shop(side))) == before  # listed again, the same: the same definition
    changed = hashed(mcp_tools(shop(side, **{VARIANT_ENV: "2"})))  # the server added a tool
    assert changed != before


def test_a_cached_listing_stands_in_for_a_server_that_is_down(tmp_path: Path,
                                                              side: Path) -> None:
    cache = tmp_path / "listing.json"
    with HttpServerProcess(side, tmp_path / "port") as http:
        web = HttpServer("web", http.url, headers={"Authorization": "Bearer s3cret"})
        live = mcp_tools(web, cache=cache)
    assert "s3cret" not in cache.read_text()
    again = mcp_tools(web, cache=cache)  # the server is gone: the saved listing
    assert [t.spec() for t in again] == [t.spec() for t in live]
    with pytest.raises(ToolDefinitionError, match=r"MCP server web .*cannot list its tools"):
        mcp_tools(web)


# -- calls from an agent -----------------------------------------------------------------

def test_read_runs_irreversible_waits_for_approval_then_runs_once(
        store: SQLiteStore, side: Path, listing: list[ListedTool]) -> None:
    replies = [completion(tool_calls=[tool_call("a", "shop_search", '{"query": "lamp"}'),
                                      tool_call("b", "shop_book", '{"item": "lamp"}')]),
               completion("booked the lamp")]
    with FakeChatServer(replies) as server:
        model = OpenAIModel("gpt-4o-mini", base_url=server.base_url, api_key="test")
        tools = mcp_tools(shop(side), prefix="shop_", effects={"search": "read"},
                          listing=listing)
        agent = Agent("shop", model=model, instructions="Shop.", tools=tools)
        run = start_run(store, agent, agent_ref=REF, goal="book a lamp")
        assert drive(store, agent) == "awaiting_approval"
        assert [c["tool"] for c in calls(side)] == ["search"]  # book waits for a person
        (approval,) = store.approvals(run=run)
        decide(store, approval.id, approve=True, who="human:test")
        assert drive(store, agent) == "done"
        assert len(server.requests) == 2  # step 1 replayed from the journal, not asked again
        assert tool_messages(server) == ['{"result":"3 results for lamp"}',
                                         '{"result":"booked lamp"}']
    booked = [c for c in calls(side) if c["tool"] == "book"]
    assert len(booked) == 1 and [c["tool"] for c in calls(side)] == ["search", "book"]
    (effect,) = store.effects(run=run)
    assert booked[0]["key"] == effect.id  # tether's idempotency key, in the request's _meta
    assert effect.status == "done" and effect.result == {"result": "booked lamp"}
    assert verify_store(store).ok


def test_a_denied_effect_is_told_to_the_model_and_never_sent(
        store: SQLiteStore, side: Path, listing: list[ListedTool]) -> None:
    agent = scripted(mcp_tools(shop(side), listing=listing), call("book", '{"item": "lamp"}'))
    run = start_run(store, agent, agent_ref=REF, goal="g")
    assert drive(store, agent) == "awaiting_approval"
    (approval,) = store.approvals(run=run)
    decide(store, approval.id, approve=False, who="human:test", note="not today")
    assert drive(store, agent) == "done"
    assert calls(side) == []
    msgs = [m for m in _conversation(store, run) if m["role"] == "tool"]
    assert "denied" in msgs[0]["content"] and "not today" in msgs[0]["content"]


def test_an_error_result_and_bad_arguments_are_told_to_the_model(
        store: SQLiteStore, side: Path, listing: list[ListedTool]) -> None:
    allow_tools(store)
    agent = scripted(mcp_tools(shop(side), listing=listing),
                     call("broken", '{"x": 7}', 1),
                     call("book", '{"itm": "lamp"}', 2),
                     call("book", '{"item": ', 3),
                     call("picture", "{}", 4))
    run = start_run(store, agent, agent_ref=REF, goal="g")
    assert drive(store, agent) == "done"
    msgs = [m["content"] for m in _conversation(store, run) if m["role"] == "tool"]
    assert "MCP server shop says: " in msgs[0] and "cannot handle 7" in msgs[0]
    assert "'item' is a required property" in msgs[1]
    assert "not valid JSON" in msgs[2]
    assert msgs[3] == "a red dot\n[image image/png, 8 bytes, not shown]"
    assert [c["tool"] for c in calls(side)] == ["broken", "picture"]  # book never reached it
    failed = [e for e in store.events(run) if e.kind == "effect.failed"]
    assert len(failed) == 1 and "cannot handle 7" in failed[0].payload["error"]
    assert verify_store(store).ok


def test_a_server_killed_mid_call_leaves_the_effect_in_doubt(
        store: SQLiteStore, side: Path, listing: list[ListedTool]) -> None:
    allow_tools(store)
    agent = scripted(mcp_tools(shop(side), effects={"search": "read"}, listing=listing),
                     call("crash", '{"item": "vase"}', 1), call("search", '{"query": "q"}', 2))
    run = start_run(store, agent, agent_ref=REF, goal="g")
    assert drive(store, agent) == "paused"
    (row,) = store.list_runs()
    assert "is in doubt: MCP server shop" in row.reason and "call of crash" in row.reason
    assert "tether resolve" in row.reason
    (effect,) = store.effects(run=run)
    assert effect.status == "in_doubt"
    assert [c["tool"] for c in calls(side)] == ["crash"]
    resolve_effect(store, effect.id, "not_done", who="human:test")  # checked: it did not
    assert drive(store, agent) == "done"
    assert [c["tool"] for c in calls(side)] == ["crash", "search"]  # never repeated
    pids = {c["pid"] for c in calls(side)}
    assert len(pids) == 2  # the dead server was started again for the next call
    msgs = [m["content"] for m in _conversation(store, run) if m["role"] == "tool"]
    assert "was not performed" in msgs[0] and msgs[1] == '{"result":"3 results for q"}'
    assert verify_store(store).ok


def test_an_effect_past_its_timeout_is_in_doubt(store: SQLiteStore, side: Path,
                                                listing: list[ListedTool]) -> None:
    allow_tools(store)
    hasty = StdioServer("shop", sys.executable, stdio_args(side), cwd=ROOT, timeout=1.0)
    agent = scripted(mcp_tools(hasty, listing=listing), call("slow", '{"seconds": 60}'))
    run = start_run(store, agent, agent_ref=REF, goal="g")
    assert drive(store, agent) == "paused"
    (effect,) = store.effects(run=run)
    assert effect.status == "in_doubt"
    reason = next(e for e in store.events(run) if e.kind == "effect.in_doubt").payload["reason"]
    assert "gave no answer to the call of slow" in reason and "MCP error -32001" in reason
    resolve_effect(store, effect.id, "done", result="slept 60", who="human:test")
    assert drive(store, agent) == "done"
    msgs = [m["content"] for m in _conversation(store, run) if m["role"] == "tool"]
    assert msgs == ["slept 60"]
    assert [c["tool"] for c in calls(side)] == ["slow"]


def test_an_idempotent_effect_is_sent_again_with_the_same_key(
        store: SQLiteStore, side: Path, listing: list[ListedTool]) -> None:
    allow_tools(store)
    agent = scripted(mcp_tools(shop(side), idempotent={"crash"}, listing=listing),
                     call("crash", '{"item": "vase"}'))
    run = start_run(store, agent, agent_ref=REF, goal="g")
    assert drive(store, agent) == "done"
    sent = calls(side)
    (effect,) = store.effects(run=run)
    assert [c["key"] for c in sent] == [effect.id, effect.id]  # the repeat said who it was
    assert sent[0]["pid"] != sent[1]["pid"]  # on a fresh server process
    assert effect.status == "done" and effect.result == {"result": "done vase"}


def test_over_streamable_http_with_headers(tmp_path: Path, store: SQLiteStore,
                                           side: Path) -> None:
    with HttpServerProcess(side, tmp_path / "port") as http:
        web = HttpServer("web", http.url, headers={"Authorization": "Bearer s3cret"})
        agent = scripted(mcp_tools(web, effects={"search": "read"}),
                         call("search", '{"query": "lamp"}', 1),
                         call("upsert", '{"name": "a", "value": "1"}', 2),
                         call("book", '{"item": "lamp"}', 3))
        run = start_run(store, agent, agent_ref=REF, goal="g")
        assert drive(store, agent) == "awaiting_approval"  # upsert: irreversible, undeclared
        (approval,) = store.approvals(run=run)
        decide(store, approval.id, approve=True, who="human:test")
        assert drive(store, agent) == "awaiting_approval"  # upsert ran; book waits
        http.kill()  # the server goes away before book is called
        (booking,) = [a for a in store.approvals(run=run) if a.status == "pending"]
        decide(store, booking.id, approve=True, who="human:test")
        assert drive(store, agent) == "done"
    sent = calls(side)
    assert [c["tool"] for c in sent] == ["search", "upsert"]
    assert {c["auth"] for c in sent} == {"Bearer s3cret"}
    msgs = [m["content"] for m in _conversation(store, run) if m["role"] == "tool"]
    assert json.loads(msgs[1]) == {"name": "a", "value": "1", "repeat": False}
    assert "MCP server web (http://127.0.0.1:" in msgs[2] and "cannot be reached" in msgs[2]
    book = [e for e in store.effects(run=run) if e.tool == "book"]
    assert book[0].status == "failed"  # nothing was sent: it did not happen
    assert "s3cret" not in json.dumps([e.payload for e in store.events(run)])
    assert verify_store(store).ok


def test_a_tool_saying_in_doubt_pauses_an_effect_but_fails_a_read(store: SQLiteStore) -> None:
    async def lost(q: str) -> str:
        raise EffectInDoubt("the answer never came")
    schema = {"type": "object", "properties": {"q": {"type": "string"}}}
    look = schema_tool("look", lost, schema=schema, effect="read")
    agent = scripted([look], call("look", '{"q": "x"}'))
    run = start_run(store, agent, agent_ref=REF, goal="g")
    assert drive(store, agent) == "done"
    msgs = [m["content"] for m in _conversation(store, run) if m["role"] == "tool"]
    assert "the answer never came" in msgs[0]


def test_a_step_agent_calls_them_and_a_budget_stops_it(store: SQLiteStore, side: Path,
                                                        listing: list[ListedTool]) -> None:
    allow_tools(store)
    tools = {t.name: t for t in mcp_tools(shop(side), effects={"search": "read"},
                                          idempotent={"upsert"}, listing=listing)}

    async def step(ctx: Any, state: dict[str, Any]) -> Any:
        state.setdefault("found", []).append(await ctx.call(tools["search"], query="lamp"))
        state["set"] = await ctx.call(tools["upsert"], name="a", value=str(ctx.step))
        return Continue()
    agent = StepAgent(step, name="stepper", tools=list(tools.values()),
                      budget={"tool_calls": 4})
    run = start_run(store, agent, agent_ref=REF, goal="g")
    # No close_sessions(): the session closes with the worker's loop, its server with it.
    asyncio.run(Worker(store, agents={REF: agent}, poll_interval=0.01).run(until_idle=True))
    row = store.get_run(run)
    assert row is not None and row.status == "paused" and "tool_calls" in row.reason
    sent = calls(side)
    assert [c["tool"] for c in sent] == ["search", "upsert", "search", "upsert"]
    assert len({c["pid"] for c in sent}) == 1  # one session for the whole run
    assert not pid_alive(sent[0]["pid"])
    upserts = [e for e in store.effects(run=run) if e.tool == "upsert"]
    assert [c["key"] for c in sent if c["tool"] == "upsert"] == [e.id for e in upserts]


def _conversation(store: SQLiteStore, run: str) -> list[dict[str, Any]]:
    from tether.ops import Tether
    state = Tether(store).state(run)
    return list(state.state["messages"])


# -- pure parts ---------------------------------------------------------------------------

def test_results_keep_text_and_summarise_binary_content() -> None:
    from mcp_types import (
        BlobResourceContents,
        CallToolResult,
        EmbeddedResource,
        ResourceLink,
        TextContent,
        TextResourceContents,
    )

    from tether.integrations.mcp.results import tool_result
    blocks: list[Any] = [
        TextContent(text="hello"),
        EmbeddedResource(resource=TextResourceContents(uri="file:///a.txt", text="inside")),
        EmbeddedResource(resource=BlobResourceContents(uri="file:///b.bin", blob="AAAA",
                                                       mime_type="application/pdf")),
        ResourceLink(uri="file:///c.md", name="notes")]
    assert tool_result(CallToolResult(content=blocks)) == (
        "hello\n[resource file:///a.txt]\ninside\n"
        "[resource file:///b.bin application/pdf, 3 bytes, not shown]\n"
        "[resource link file:///c.md (notes)]")
    structured = CallToolResult(content=[TextContent(text='{"n": 1}')], structured_content={"n": 1})
    assert tool_result(structured) == {"n": 1}


@pytest.mark.parametrize(("hints", "trust", "declared", "expected"), [
    ({"read_only": True}, False, {}, ("irreversible", False, "default")),
    ({"read_only": True}, True, {}, ("read", False, "annotations")),
    ({"idempotent": True}, True, {}, ("irreversible", True, "annotations")),
    ({"read_only": True}, True, {"effects": {"t": "irreversible"}},
     ("irreversible", False, "declared")),
    ({}, False, {"idempotent": {"t"}}, ("irreversible", True, "declared")),
    ({"idempotent": True}, True, {"effects": {"t": "read"}}, ("read", False, "declared")),
])
def test_annotations_weaken_nothing_unless_trusted(hints: dict[str, bool], trust: bool,
                                                   declared: dict[str, Any],
                                                   expected: tuple[str, bool, str]) -> None:
    from tether.integrations.mcp.classes import Hints, classify
    got = classify("t", Hints(**hints), effects=declared.get("effects", {}),
                   idempotent=declared.get("idempotent", set()), trust_annotations=trust)
    assert (got.effect, got.idempotent, got.source) == expected
