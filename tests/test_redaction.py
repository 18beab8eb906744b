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
from pathlib import Path
from typing import Any

import pytest

from tether import Done, ScriptedModel, StepAgent, Worker, start_run, tool, verify_store
from tether.control import set_budget
from tether.core.policy import parse_policy
from tether.core.policy_match import PolicyError
from tether.core.redaction import BUILTIN, DEFAULT, Redactor, compile_redaction
from tether.models.base import ModelResponse, Usage
from tether.runtime.operator import send_command
from tether.store.sqlite import SQLiteStore
from tether.testing import allow_tools

# Real-looking, made up: the shapes providers issue (none of these is a live credential).
SECRETS = {
    "openai_key": "sk-proj-Zq7Tg2mW9xLr4VbN8cK1pQ3sY6dF0hJ5aE2uI7oR",
    "openai_legacy": "sk-4fKq9ZtW2mXr7VbN1cLp3sY8dG6hJ0aE5uI2oRkT",
    "anthropic_key": "sk-ant-api03-Xk2pLm9QrT4vWz7bN1cY5dF8gH3jK6aS0eU-9qQ",
    "aws_access_key_id": "AKIAQ3EGRT7VXW2MBN4P",
    "aws_secret_access_key": "aws_secret_access_key = wJalrXUtnFEMIK7MDENGbPxRfiCYzEXAMPLEKEY1",
    "github_token": "ghp_R4nd0mLo0k1ngT0kenV4lue0123456789abcd",
    "github_pat": "github_pat_11ABCDEFG0abcdefghijkl_MNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz012345",
    "slack_token": "xoxb-2048123456-5012345678901-Qh7bT2nV8mK3pL9sR4wX1cZ6",
    "slack_webhook": "https://hooks.slack.com/services/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",
    "jwt": ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6Ik"
            "pvaG4ifQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"),
    "private_key": ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUA"
                    "AAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n-----END OPENSSH PRIVATE KEY-----"),
    "bearer_token": "Authorization: Bearer 8f2KqZ7tW1mXr9VbN3cLp5sY0dG4hJ6aE",
}
"""The part of each value that must not reach the store: all of it but a label."""


def _needle(text: str) -> str:
    """The secret inside a sample (the label before it may stay)."""
    for lead in ("aws_secret_access_key = ", "Authorization: Bearer "):
        text = text.removeprefix(lead)
    return text.splitlines()[1] if "PRIVATE KEY" in text else text


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
