"""Model timeout, retries and prices from the CLI and the environment; a cost cap on a
model without a price is refused, never counted as $0. Models are a loopback server."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tether import (
    Agent,
    Continue,
    ModelResponse,
    PriceTable,
    ScriptedModel,
    SQLiteStore,
    StepAgent,
    Usage,
    UsageError,
    Worker,
    start_run,
)
from tether.cli.app import app
from tether.control import record_swarm_setting
from tether.models.openai import OpenAIModel
from tether.runtime.prices import load_price_file, price_table
from tether.testing.openai_server import FakeChatServer, completion, error

ROOT = Path(__file__).resolve().parents[1]
TETHER = str(Path(sys.executable).with_name("tether"))
runner = CliRunner()


@pytest.fixture(autouse=True)
def _hermetic_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # Real credentials, proxies or model settings must never steer a test off the loopback.
    for var in ("TETHER_MODEL", "OPENAI_BASE_URL", "OPENAI_API_KEY", "HTTP_PROXY",
                "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy",
                "TETHER_MODEL_TIMEOUT", "TETHER_MODEL_RETRIES", "TETHER_PRICES"):
        monkeypatch.delenv(var, raising=False)


def cli(tmp_path: Path, server: FakeChatServer, *args: str, **env: str
        ) -> subprocess.CompletedProcess[str]:
    """``tether`` in a subprocess (it imports the agent module afresh), on the loopback."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "TETHER_"))}
    full.update(OPENAI_BASE_URL=server.base_url, OPENAI_API_KEY="sk-test",
                PYTHONPATH=str(ROOT), COLUMNS="200", **env)
    return subprocess.run([TETHER, "--store", str(tmp_path / "t.db"), *args], cwd=tmp_path,
                          env=full, capture_output=True, text=True, timeout=120)


def _runs(tmp_path: Path) -> list[dict[str, Any]]:
    res = runner.invoke(app, ["--store", str(tmp_path / "t.db"), "runs", "--json"])
    return [json.loads(line) for line in res.output.splitlines()]


# -- timeout and retries ---------------------------------------------------------------------

def test_run_takes_model_timeout_and_retries_from_the_cli(tmp_path: Path) -> None:
    with FakeChatServer([completion("late", delay=3)] * 3) as server:
        res = cli(tmp_path, server, "run", "tests.model_agents:chat", "--goal", "hi",
                  "--model-timeout", "0.3", "--model-retries", "1")
        assert len(server.requests) == 2, res.stdout + res.stderr  # the first and one retry
    assert res.returncode == 0, res.stderr
    assert "is paused" in res.stdout and "timed out after 0.3 s" in res.stdout


def test_worker_takes_model_retries_from_the_environment(tmp_path: Path) -> None:
    def here(*args: str) -> None:  # in this process: no model call, no subprocess to start
        res = runner.invoke(app, ["--store", str(tmp_path / "t.db"), *args])
        assert res.exit_code == 0, res.output

    with FakeChatServer([error(500, "boom")] * 2 + [completion("fine")]) as server:
        here("run", "tests.model_agents:chat", "--goal", "hi", "--detach")
        res = cli(tmp_path, server, "worker", "--until-idle", TETHER_MODEL_RETRIES="0")
        assert len(server.requests) == 1, res.stdout  # no retry at all
        assert "paused" in res.stdout and "boom" in res.stdout
        here("resume", "chat")
        res = cli(tmp_path, server, "worker", "--until-idle", TETHER_MODEL_RETRIES="1")
        assert len(server.requests) == 3, res.stdout  # a 500 again, one retry, the answer
    assert ": done [1 step, 0 effects]" in res.stdout


@pytest.mark.parametrize(("args", "says"), [
    (["--model-timeout", "0"], "--model-timeout (or TETHER_MODEL_TIMEOUT) must be a number "
                               "of seconds > 0, got 0.0"),
    (["--model-timeout", "nan"], "--model-timeout nan is not a finite number"),
    (["--model-retries", "-1"], "--model-retries (or TETHER_MODEL_RETRIES) must be 0 or more"),
])
def test_bad_model_options_are_one_error_line(tmp_path: Path, args: list[str], says: str
                                              ) -> None:
    res = runner.invoke(app, ["--store", str(tmp_path / "t.db"), "worker", "--until-idle",
                              *args])
    assert res.exit_code == 2 and res.output.startswith("error: ") and says in res.output, \
        res.output
    assert len(res.output.strip().splitlines()) == 1


def test_openai_model_reads_its_defaults_from_the_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TETHER_MODEL_RETRIES", "2")
    monkeypatch.setenv("TETHER_MODEL_TIMEOUT", "7.5")
    m = OpenAIModel("m", base_url="http://127.0.0.1:9/v1")
    assert (m._timeout, m._max_retries) == (7.5, 2)
    assert OpenAIModel("m", timeout=1.0, max_retries=0)._max_retries == 0  # given wins
    monkeypatch.setenv("TETHER_MODEL_RETRIES", "two")
    with pytest.raises(UsageError, match="TETHER_MODEL_RETRIES='two' is not a whole number"):
        OpenAIModel("m")
    monkeypatch.setenv("TETHER_MODEL_RETRIES", "1")
    monkeypatch.setenv("TETHER_MODEL_TIMEOUT", "-3")
    with pytest.raises(UsageError, match=r"timeout must be > 0 seconds, got -3\.0"):
        OpenAIModel("m")


# -- prices ----------------------------------------------------------------------------------

def test_price_file_in_toml_and_json_prices_calls(tmp_path: Path) -> None:
    toml = tmp_path / "prices.toml"
    toml.write_text('"served-model" = { input = 2.0, output = 8.0 }\n["local-llm"]\n'
                    "input = 0\noutput = 0\n")
    table = load_price_file(toml)
    assert table.price("served-model-2026-01-01") == (2.0, 8.0)
    assert table.knows("local-llm") and table.knows("gpt-4o-mini")  # the built-in ones stay
    js = tmp_path / "prices.json"
    js.write_text(json.dumps({"gpt-4o-mini": {"input": 1, "output": 2}}))
    assert load_price_file(js).price("gpt-4o-mini") == (1.0, 2.0)  # overrides the built-in
    with FakeChatServer([completion("hello", usage=(1000, 500))]) as server:
        res = cli(tmp_path, server, "run", "tests.model_agents:chat", "--goal", "hi",
                  "--budget", "cost_usd=1", "--prices", str(toml))
    assert res.returncode == 0, res.stderr
    (run,) = _runs(tmp_path)
    assert run["status"] == "done" and run["cost_usd"] == pytest.approx(0.006)  # 2e-3 + 4e-3


@pytest.mark.parametrize(("text", "says"), [
    ('"m" = { input = 1 }', "model 'm': needs exactly input and output (USD per million "
                            "tokens); missing output"),
    ('"m" = { input = 1, output = 2, cached = 0.5 }', "unknown 'cached'"),
    ('"m" = { input = -1, output = 2 }', "input must be a number of USD per million tokens, "
                                         ">= 0, got -1"),
    ('"m" = { input = "cheap", output = 2 }', "got 'cheap'"),
    ('"m" = 3', "model 'm': expected { input = USD, output = USD } (per million tokens), got int"),
    ("", "expected a table of models"),
    ('"m" = { input = 1, output = ', "is not valid TOML"),
    ("x = " + "[" * 600 + "]" * 600, "is nested too deeply"),
])
def test_price_file_errors_name_the_file_and_the_fix(tmp_path: Path, text: str, says: str
                                                     ) -> None:
    bad = tmp_path / "prices.toml"
    bad.write_text(text)
    with pytest.raises(UsageError) as info:
        load_price_file(bad)
    assert f"price file {bad}" in str(info.value) and says in str(info.value), str(info.value)


def test_broken_or_missing_price_file_from_the_cli_and_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "bad.json").write_text("{not json")
    for args, env in ((["--prices", str(tmp_path / "bad.json")], None),
                      ([], str(tmp_path / "missing.toml"))):
        if env:
            monkeypatch.setenv("TETHER_PRICES", env)
        res = runner.invoke(app, ["--store", str(tmp_path / "t.db"), "worker", "--until-idle",
                                  *args])
        assert res.exit_code == 2 and res.output.startswith("error: price file "), res.output
        assert ("is not valid JSON" in res.output) != bool(env)
    monkeypatch.delenv("TETHER_PRICES")
    assert price_table(None).knows("scripted")  # no file: the built-in table


# -- a cost cap on a model without a price ------------------------------------------------

def test_run_refuses_a_cost_cap_on_an_unpriced_model_and_writes_nothing(tmp_path: Path) -> None:
    with FakeChatServer([completion("never")]) as server:
        res = cli(tmp_path, server, "run", "tests.model_agents:chat", "--goal", "hi",
                  "--budget", "cost_usd_per_day=5")
        assert server.requests == []
    assert res.returncode == 2 and res.stderr.startswith("error: a run of agent chat: budget "
                                                         "cost_usd_per_day caps cost in USD, "
                                                         "but model 'served-model' has no "
                                                         "price"), res.stderr
    assert "--prices FILE or TETHER_PRICES" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "t.db").exists()  # refused before the store is even created


def test_an_agent_with_a_cost_cap_on_an_unpriced_model_is_refused_when_built(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UsageError, match="agent pricey: budget cost_usd caps cost in USD, but "
                                         "model 'mystery' has no price"):
        Agent("pricey", model=ScriptedModel(_answer, name="mystery"), instructions="x",
              budget={"cost_usd": 1})
    with pytest.raises(UsageError, match="agent step: budget cost_usd_per_hour"):
        StepAgent(_spend, name="step", model=ScriptedModel(_answer, name="mystery"),
                  budget={"cost_usd_per_hour": 1})
    Agent("capped", model=ScriptedModel(_answer, name="mystery"), instructions="x",
          budget={"tokens": 1000})  # a token cap needs no price
    prices = tmp_path / "p.toml"
    prices.write_text('mystery = { input = 1, output = 1 }')
    monkeypatch.setenv("TETHER_PRICES", str(prices))
    Agent("pricey", model=ScriptedModel(_answer, name="mystery"), instructions="x",
          budget={"cost_usd": 1})


CALLS: list[int] = []


def _answer(messages: Any, tools: Any) -> ModelResponse:
    CALLS.append(1)
    return ModelResponse("ok", usage=Usage(100, 0), model="mystery")


async def _spend(ctx: Any, state: dict[str, Any]) -> Any:
    await ctx.model([{"role": "user", "content": "go"}])
    return Continue()


@pytest.mark.parametrize("where", ["run", "swarm"])
def test_a_worker_without_the_price_pauses_before_the_call(tmp_path: Path, where: str) -> None:
    """The run was started where the model had a price; the worker has none: the run
    pauses before any call, rather than spending with the cap counting $0."""
    agent = StepAgent(_spend, name="spender", model=ScriptedModel(_answer, name="mystery"))
    known = PriceTable(prices={"mystery": (1.0, 1.0)})
    store = SQLiteStore(tmp_path / "t.db")
    cap = {"cost_usd_per_day": 1.0}
    if where == "swarm":
        record_swarm_setting(store, "crew", "budget", cap, who="human:t", now=0.0)
    rid = start_run(store, agent, agent_ref="spender", goal="g", prices=known,
                    budget=cap if where == "run" else None,
                    swarm="crew" if where == "swarm" else None)
    CALLS.clear()
    asyncio.run(Worker(store, agents={"spender": agent}, prices=PriceTable(),
                       poll_interval=0.01).run(until_idle=True))
    row = store.get_run(rid)
    assert row is not None and row.status == "paused" and CALLS == []
    assert "model 'mystery' has no price" in row.reason and f"tether resume {rid}" in row.reason
    (paused,) = [e for e in store.events(rid) if e.kind == "run.paused"]
    assert paused.payload["unpriced_model"] == "mystery"
    store.close()


def test_cli_options_reach_models_built_later_in_the_process(tmp_path: Path) -> None:
    """In-process (as a worker imports agent modules after parsing its options)."""
    prices = tmp_path / "p.toml"
    prices.write_text('late = { input = 1, output = 1 }')
    res = runner.invoke(app, ["--store", str(tmp_path / "t.db"), "worker", "--until-idle",
                              "--model-timeout", "2.5", "--model-retries", "0",
                              "--prices", str(prices)])
    assert res.exit_code == 0, res.output
    m = OpenAIModel("late", base_url="http://127.0.0.1:9/v1")
    assert (m._timeout, m._max_retries) == (2.5, 0)
    Agent("late", model=m, instructions="x", budget={"cost_usd": 1})  # priced by the file


def test_a_price_file_is_read_once_until_it_changes(tmp_path: Path) -> None:
    from tether.runtime.prices import price_table
    f = tmp_path / "prices.toml"
    f.write_text('"house-model" = { input = 1, output = 2 }\n')
    first = price_table(f)
    assert price_table(f) is first  # not read and parsed again
    f.write_text('"house-model" = { input = 10, output = 20 }\n')
    assert price_table(f).price("house-model") == (10, 20)
