"""Secrets are redacted before they are journaled (issue 11, "Erasure and secrets").

A corpus of real-looking secrets goes through a real run (scripted model, real
SQLite file, a worker): in the model's response, in a read tool's result, in an
effect's arguments and result. Then the store's bytes (the database, its WAL) are
searched for every secret: none may be there. The step sees the redacted values,
live and on replay alike (the step is cut by a budget mid-way and re-run from the
journal), the tool still gets the real arguments, and the replay needs no new call.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from tests import crashkit as ck
from tests import secretkit
from tests.secretkit import ALL, POLICY, SECRETS, TICKET, needle, needles
from tether import Done, ScriptedModel, StepAgent, Worker, start_run, tool, verify_store
from tether.control import set_budget
from tether.core.canonical import digest
from tether.core.fingerprint import fingerprint
from tether.core.policy import parse_policy
from tether.core.policy_match import PolicyError
from tether.core.redaction import BUILTIN, DEFAULT, Redactor, compile_redaction
from tether.models.base import ModelResponse, Usage
from tether.ops import Tether
from tether.policies import apply_policy
from tether.runtime.context import CALL_KINDS
from tether.runtime.operator import send_command
from tether.store.sqlite import SQLiteStore
from tether.testing import allow_tools

_needle = needle


@pytest.mark.parametrize("name", sorted(SECRETS))
def test_every_builtin_pattern_redacts_its_secrets(name: str) -> None:
    value = {"text": f"here it is: {SECRETS[name]} (keep it safe)", "n": 3}
    out = DEFAULT.redact(value)
    assert out is not value and _needle(SECRETS[name]) not in json.dumps(out)
    assert "[REDACTED:" in out["text"] and out["n"] == 3
    assert out["text"].startswith("here it is: ") and out["text"].endswith("(keep it safe)")


def test_nothing_to_redact_returns_the_same_object() -> None:
    value = {"a": ["plain", {"b": "text with sk- but short", "c": 1.5}], "d": None}
    assert DEFAULT.redact(value) is value


def test_no_false_redaction_on_the_demo_and_tau_bench_text() -> None:
    """Ordinary text (the demo's tickets and answers, every message of the tau-bench
    airline transcripts when they are beside the repository) is left alone."""
    from tether.demo import agents as night
    texts = [json.dumps(getattr(night, n), default=str) for n in dir(night)
             if n.isupper() and not n.startswith("_")]
    tau = Path(__file__).resolve().parents[2] / "shared" / "data" / "tau-bench-airline"
    for f in sorted(tau.glob("*.json"))[:3] if tau.exists() else []:
        texts.append(f.read_text())
    hits = [t[:80] for t in texts if DEFAULT.redact(t) != t]
    assert hits == [], hits


def test_a_policy_adds_patterns_and_cannot_remove_the_builtins() -> None:
    p = parse_policy('[redaction]\npatterns = { ticket_token = "tok_[a-z0-9]{12}" }\n',
                     source="p.toml")
    out = p.redaction.redact(f"tok_abcdef123456 and {SECRETS['openai_key']}")
    assert out == "[REDACTED:ticket_token] and [REDACTED:openai_key]"
    assert set(BUILTIN) <= set(p.redaction.patterns)
    for bad, says in (('[redaction]\npatterns = { x = "(" }\n', "not a regular expression"),
                      ('[redaction]\npatterns = { x = "a*" }\n', "matches the empty string"),
                      ('[redaction]\npatterns = { jwt = "x" }\n', "cannot be replaced"),
                      ('[redaction]\nbuiltin = false\n', "unknown key")):
        with pytest.raises(PolicyError, match=says):
            parse_policy(bad, source="p.toml")
    assert compile_redaction(None) is DEFAULT
    assert isinstance(Redactor({"x": "(?i)secret-[0-9]+"}).redact("SECRET-42"), str)


# -- through a real run ----------------------------------------------------------------
SEEN: dict[str, Any] = {}
SENT: list[str] = []


@tool(effect="read")
def read_config(path: str) -> str:
    """Read a config file (that happens to hold a token)."""
    return f"[{path}]\ntoken = {SECRETS['github_token']}\nregion = eu-west-1"


@tool(effect="irreversible")
def call_api(url: str, auth: str) -> dict[str, str]:
    """Call an API with a credential; it echoes one back."""
    SENT.append(auth)
    return {"status": "ok", "session": SECRETS["jwt"]}


@tool(effect="read")
def noop() -> str:
    """Nothing (the call the budget cuts the step at)."""
    return "ok"


def _answer(messages: Any, tools: Any) -> ModelResponse:
    return ModelResponse(content=f"Use {SECRETS['openai_key']} and {SECRETS['slack_webhook']}",
                         usage=Usage(10, 5))


async def _step(ctx: Any, state: dict[str, Any]) -> Any:
    said = await ctx.model([{"role": "user", "content": "which key?"}])
    config = await ctx.call(read_config, path="app.ini")
    # The credential comes from the step's own code (an environment variable, say).
    reply = await ctx.call(call_api, url="https://api.example.com", auth=SECRETS["bearer_token"])
    await ctx.call(noop)  # the budget cuts the first attempt here
    state.update(said=said.content, config=config, reply=reply)
    SEEN.update(state)
    return Done()


def _store_bytes(db: Path) -> bytes:
    return b"".join(p.read_bytes() for p in (db, Path(f"{db}-wal")) if p.exists())


def test_no_secret_reaches_the_store_and_replay_sees_what_live_saw(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    store = SQLiteStore(db)
    allow_tools(store)
    agent = StepAgent(_step, name="leaky", model=ScriptedModel(_answer, name="m"),
                      tools=[read_config, call_api, noop])
    run = start_run(store, agent, agent_ref="leaky", goal="g", budget={"tool_calls": 2})
    SEEN.clear()
    SENT.clear()
    asyncio.run(Worker(store, agents={"leaky": agent}, poll_interval=0.01).run(until_idle=True))
    assert store.get_run(run).status == "paused"  # type: ignore[union-attr]
    set_budget(store, run, {"tool_calls": 10}, [], who="human:test")
    send_command(store, run, "resume", who="human:test")
    asyncio.run(Worker(store, agents={"leaky": agent}, poll_interval=0.01).run(until_idle=True))
    assert store.get_run(run).status == "done"  # type: ignore[union-attr]
    kinds = [e.kind for e in store.events(run)]
    assert "nondeterminism" not in kinds and kinds.count("effect.intent") == 1
    assert [SECRETS["bearer_token"]] == SENT  # the tool got the real value, once
    # The step saw the redacted values (the re-run step got them from the journal).
    assert SEEN["said"] == "Use [REDACTED:openai_key] and [REDACTED:slack_webhook]"
    assert "[REDACTED:github_token]" in SEEN["config"] and "eu-west-1" in SEEN["config"]
    assert SEEN["reply"] == {"status": "ok", "session": "[REDACTED:jwt]"}
    intent = next(e for e in store.events(run) if e.kind == "effect.intent")
    assert intent.payload["arguments"]["auth"] == "Authorization: [REDACTED:bearer_token]"
    assert intent.payload["fp"].startswith("effect:call_api:")
    assert verify_store(store).ok
    store.close()
    data = _store_bytes(db)
    found = [n for n, s in SECRETS.items() if _needle(s).encode() in data]
    assert found == [], f"secrets in the store: {found}"


def test_a_keyed_fingerprint_differs_per_store_and_matches_on_replay(tmp_path: Path) -> None:
    keys = {SQLiteStore(tmp_path / f"{n}.db").get_meta("fingerprint_key") for n in "ab"}
    assert len(keys) == 2 and all(k and len(k) == 64 for k in keys)
    assert os.path.getsize(tmp_path / "a.db") > 0


# -- what a step itself journals: messages, blackboard values, the goal ----------------
REDACTED_ALL = Redactor({"ticket_token": "tok_[a-z0-9]{24}"}).redact(ALL)


def _swarm_store(db: Path) -> tuple[SQLiteStore, str, str]:
    """A store under a policy with a pattern of its own, and the two runs of the swarm
    (their goals and start options hold secrets too)."""
    store = SQLiteStore(db)
    apply_policy(store, parse_policy(POLICY, source="secrets.toml"), who="human:test")
    inbox = start_run(store, secretkit.inbox, agent_ref="tests.secretkit:inbox",
                      goal=f"watch for keys: {ALL}", name="inbox", swarm="s")
    leaker = start_run(store, secretkit.leaker, agent_ref="tests.secretkit:leaker",
                       goal=f"share {ALL}", swarm="s",
                       options={"api_key": SECRETS["openai_key"], "ticket": TICKET})
    return store, inbox, leaker


def _what_it_journaled(store: SQLiteStore, run: str) -> list[tuple[str, Any]]:
    """The sender's calls as journaled: kind and what it sent or wrote (ids, which differ
    between stores, left out)."""
    keep = ("topic", "body", "key", "value", "tool", "arguments")
    return [(e.kind, {k: e.payload.get(k) for k in keep if k in e.payload})
            for e in store.events(run) if e.kind in CALL_KINDS]


def _no_secret_in(db: Path) -> list[str]:
    data = _store_bytes(db)
    return [n for n, s in needles().items() if s.encode() in data]


def test_messages_board_writes_and_the_goal_are_redacted_before_the_journal(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ck.SIDE_ENV, str(tmp_path / "side.log"))
    db = tmp_path / "t.db"
    store, inbox, leaker = _swarm_store(db)
    asyncio.run(Worker(store, poll_interval=0.01).run(until_idle=True))
    assert [store.get_run(r).status for r in (inbox, leaker)] == ["done", "done"]  # type: ignore[union-attr]
    # Every secret became its marker, the policy's own one too; the text around it stayed.
    assert "[REDACTED:ticket_token]" in REDACTED_ALL and "[REDACTED:private_key]" in REDACTED_ALL
    assert all(s not in REDACTED_ALL for s in needles().values())
    # The receiver and the reader got the redacted form (read from the store).
    got = Tether(store).state(inbox).state
    assert got["got"] == [{"topic": "keys [REDACTED:github_token]",
                           "body": {"text": REDACTED_ALL, "n": 1}},
                          {"topic": None, "body": "hello"}]
    assert got["board"] == {"all": REDACTED_ALL, "region": "eu-west-1"}
    # The goal, the name and the start options: redacted at start, the state made from it.
    assert got["goal"] == f"watch for keys: {REDACTED_ALL}"
    row = store.get_run(leaker)
    assert row is not None and row.goal == f"share {REDACTED_ALL}"
    assert (row.spec["api_key"], row.spec["ticket"]) == ("[REDACTED:openai_key]",
                                                         "[REDACTED:ticket_token]")
    # A message without a secret keeps the plain fingerprint (older journals replay as
    # they were); one with a secret is fingerprinted by the store's key.
    sent = [e.payload for e in store.events(leaker) if e.kind == "message.sent"]
    assert sent[1]["fp"] == fingerprint("send", "inbox", digest([None, "hello"]))
    plain = fingerprint("send", "inbox", digest([f"keys {SECRETS['github_token']}",
                                                 {"text": ALL, "n": 1}]))
    assert sent[0]["fp"].startswith("send:inbox:") and sent[0]["fp"] != plain
    assert [m.body for m in store.messages(sender=leaker)] == [{"text": REDACTED_ALL, "n": 1},
                                                                "hello"]
    assert verify_store(store).ok
    assert _no_secret_in(db) == []  # the database and its WAL, still open
    store.close()
    assert _no_secret_in(db) == []


def test_a_sender_sigkilled_after_sending_a_secret_replays_exactly(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sender dies (SIGKILL, in its effect) after its message and board write are
    durable; the re-run step replays them from its journal: no second message or write,
    no nondeterminism, the effect runs once, and it journals what a sender never killed
    journals."""
    side = tmp_path / "side.log"
    monkeypatch.setenv(ck.SIDE_ENV, str(side))
    clean_db = tmp_path / "clean" / "c.db"
    clean_db.parent.mkdir()
    clean, _, clean_leaker = _swarm_store(clean_db)
    asyncio.run(Worker(clean, poll_interval=0.01).run(until_idle=True))
    expected = _what_it_journaled(clean, clean_leaker)
    clean.close()
    side.unlink()

    db = tmp_path / "crash.db"
    store, inbox, leaker = _swarm_store(db)
    w = ck.spawn_worker(db, side, tag="w0", lease_ttl=0.3, extra_env={secretkit.KILL_ENV: "1"})
    assert w.proc.wait(timeout=120) == -signal.SIGKILL, w.log.read_text()[-2000:]
    before = ck.snapshot(store)
    assert [e.kind for e in store.events(leaker)].count("message.sent") == 2  # durable
    assert ck.read_side(side) == []  # killed before the effect's side line
    ck.finish(store)
    ck.check_nothing_lost(before, ck.snapshot(store))
    assert [store.get_run(r).status for r in (inbox, leaker)] == ["done", "done"]  # type: ignore[union-attr]
    kinds = [e.kind for e in store.events(leaker)]
    assert "nondeterminism" not in kinds
    assert (kinds.count("message.sent"), kinds.count("blackboard.write")) == (2, 1)
    assert len(store.messages(sender=leaker)) == 2
    assert len(store.versions(run=leaker)) == 1
    assert [ln.tool for ln in ck.read_side(side)] == ["hold"]  # retried once, ran once
    assert _what_it_journaled(store, leaker) == expected
    assert Tether(store).state(inbox).state["got"][0]["body"] == {"text": REDACTED_ALL, "n": 1}
    assert verify_store(store).ok
    assert _no_secret_in(db) == []  # the database and its WAL, still open
    store.close()
    assert _no_secret_in(db) == []


def test_tether_run_redacts_the_goal_with_the_policy_given(tmp_path: Path) -> None:
    """``tether run --policy``: the goal's secrets (one only the policy's pattern knows)
    are redacted before the run exists, and its initial state is made from that goal."""
    from typer.testing import CliRunner

    from tether.cli.app import app
    db, policy = tmp_path / "t.db", tmp_path / "p.toml"
    policy.write_text(POLICY)
    goal = f"use {SECRETS['openai_key']} for ticket {TICKET}"
    res = CliRunner().invoke(app, ["--store", str(db), "run", "tests.secretkit:inbox",
                                   "--goal", goal, "--policy", str(policy), "--detach"])
    assert res.exit_code == 0, res.stderr
    store = SQLiteStore(db)
    [rid] = store.all_run_ids()
    want = "use [REDACTED:openai_key] for ticket [REDACTED:ticket_token]"
    assert Tether(store).state(rid).state == {"goal": want}
    assert store.get_run(rid).goal == want  # type: ignore[union-attr]
    store.close()
    assert _no_secret_in(db) == []
