"""`tether import`: transcripts recorded elsewhere become read-only runs whose events are
tether's own kinds; a broken record is named with its field and nothing is imported.

Fixtures are small transcripts built here by hand in the shapes of the real formats
(OpenAI chat messages, tau-bench trajectories); one test reads the real tau-bench file
when it is present beside the repository.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tether import verify_store
from tether.cli.app import app
from tether.core.transcripts import READ_ONLY_KEY
from tether.store.sqlite import SQLiteStore

runner = CliRunner()
TAU = Path(__file__).resolve().parents[3] / "shared" / "data" / "tau-bench-airline" / "gpt-4o-airline.json"


def tether(db: Path, *args: str) -> tuple[int, str]:
    res = runner.invoke(app, ["--store", str(db), *args])
    return res.exit_code, res.output


def call(cid: str, name: str, args: dict[str, Any] | str) -> dict[str, Any]:
    raw = args if isinstance(args, str) else json.dumps(args)
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": raw}}


def conversation(city: str = "Paris") -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": "You answer weather questions."},
        {"role": "user", "content": f"Weather in {city}?"},
        {"role": "assistant", "content": None, "tool_calls": [call("c1", "get_weather", {"city": city})]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny, 21C"},
        {"role": "assistant", "content": f"It is sunny in {city}."},
    ]


def tau_record(task: int, reward: float, *, error: bool = False) -> dict[str, Any]:
    result = "Error: flight HAT030 not available" if error else '{"status": "booked"}'
    return {"task_id": task, "trial": 0, "reward": reward,
            "info": {"task": {"user_id": "mia_li_3668", "actions": []}},
            "traj": [
                {"role": "system", "content": "# Airline Agent Policy"},
                {"role": "user", "content": "Book me a flight."},
                {"content": None, "role": "assistant",
                 "tool_calls": [call("call_a", "book_reservation", {"flight": "HAT030"})]},
                {"role": "tool", "tool_call_id": "call_a", "name": "book_reservation",
                 "content": result},
                {"content": "Done.", "role": "assistant"},
                {"role": "user", "content": "Thanks ###STOP###"}]}


def write_jsonl(path: Path, records: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def kinds(store: SQLiteStore, run: str) -> list[str]:
    return [e.kind for e in store.events(run)]


def test_openai_jsonl_imports_as_read_only_runs_of_tethers_own_events(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    src = write_jsonl(tmp_path / "chats.jsonl", [conversation("Paris"), conversation("Oslo")])
    code, out = tether(db, "import", str(src), "--json")
    assert code == 0, out
    made = [json.loads(line) for line in out.splitlines()]
    assert [m["record"] for m in made] == [0, 1]
    s = SQLiteStore(str(db))
    run = made[1]["run"]
    assert kinds(s, run) == ["run.started", "checkpoint", "step.started", "model.called",
                             "tool.called", "step.finished", "step.started", "model.called",
                             "step.finished", "run.done"]
    ev = s.events(run)
    model, tool = ev[3].payload, ev[4].payload
    assert model["request"]["messages"][1]["content"] == "Weather in Oslo?"
    assert model["response"]["tool_calls"] == [{"id": "c1", "name": "get_weather",
                                                "arguments": '{"city": "Oslo"}'}]
    assert tool["tool"] == "get_weather" and tool["arguments"] == {"city": "Oslo"}
    assert tool["result"] == "sunny, 21C" and tool["i"] == 1
    assert ev[7].payload["request"]["messages"] == [conversation()[3]]  # only what was new
    row = s.get_run(run)
    assert row is not None and row.status == "done" and row.step == 2
    assert row.goal == "Weather in Oslo?" and row.spec[READ_ONLY_KEY]["record"] == 1
    assert verify_store(s).ok
    code, out = tether(db, "events", run)
    assert code == 0 and "tool.called" in out


@pytest.mark.parametrize("command", [["pause"], ["resume"], ["stop"], ["rollback", "--to", "1"],
                                     ["fork", "--at", "1"], ["quarantine"],
                                     ["budget", "--set", "steps=5"]])
def test_commands_that_change_runs_refuse_an_imported_one(tmp_path: Path,
                                                          command: list[str]) -> None:
    db = tmp_path / "t.db"
    src = tmp_path / "one.json"
    src.write_text(json.dumps(conversation()))
    assert tether(db, "import", str(src))[0] == 0
    code, out = tether(db, *command[:1], "one-0", *command[1:])
    assert code != 0
    assert "was imported from one.json (record 0) and is read-only" in " ".join(out.split())


def test_tau_bench_errors_and_reward_are_kept(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    src = tmp_path / "tau.json"
    src.write_text(json.dumps([tau_record(3, 1.0), tau_record(4, 0.0, error=True)]))
    code, out = tether(db, "import", str(src), "--json")
    assert code == 0, out
    made = [json.loads(line) for line in out.splitlines()]
    assert made[1]["outcome"] == {"reward": 0.0, "success": False}
    s = SQLiteStore(str(db))
    ev = s.events(made[1]["run"])
    tool = next(e.payload for e in ev if e.kind == "tool.called")
    assert tool["error"] == "tool book_reservation failed: flight HAT030 not available"
    done = ev[-1].payload["result"]
    assert done["outcome"]["reward"] == 0.0 and done["after"][0]["content"] == "Thanks ###STOP###"
    row = s.get_run(made[1]["run"])
    assert row is not None and row.spec[READ_ONLY_KEY]["task_id"] == 4


def test_model_names_the_model_a_transcript_does_not_and_show_says_imported(
        tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    src = write_jsonl(tmp_path / "tau.jsonl", [tau_record(3, 1.0)])
    assert tether(db, "import", str(src), "--model", "gpt-4o")[0] == 0
    s = SQLiteStore(str(db))
    run = s.list_runs()[0]
    model = next(e.payload for e in s.events(run.id) if e.kind == "model.called")
    assert model["model"] == "gpt-4o" and model["fp"].startswith("model:gpt-4o:")
    code, out = tether(db, "show", "tau-0")
    assert code == 0 and "imported (read-only) from tau.jsonl, record 0" in " ".join(out.split())


BROKEN = [
    ([{"role": "user", "content": "hi"}, {"role": "wizard", "content": "x"}],
     "record 1: messages[1].role: 'wizard' is not a chat role"),
    ([{"role": "user", "content": "hi"},
      {"role": "assistant", "content": None, "tool_calls": [call("c9", "f", {})]}],
     "record 1: messages[1].tool_calls[0]: tool call 'c9' (f) has no tool message"),
    ([{"role": "user", "content": "hi"},
      {"role": "assistant", "content": None, "tool_calls": [call("c1", "f", {})]},
      {"role": "tool", "tool_call_id": "c2", "content": "x"}],
     "record 1: messages[2].tool_call_id: 'c2' is not one of the open tool calls (c1)"),
    ([{"role": "user", "content": "hi"},
      {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "function": {}}]}],
     "record 1: messages[1].tool_calls[0].function.name: missing"),
    ([{"role": "user", "content": "hi"}], "record 1: messages: has no assistant message"),
]


@pytest.mark.parametrize(("second", "error"), BROKEN)
def test_a_broken_record_is_named_and_nothing_is_imported(tmp_path: Path, second: Any,
                                                          error: str) -> None:
    db = tmp_path / "t.db"
    src = write_jsonl(tmp_path / "mixed.jsonl", [conversation(), second, conversation()])
    code, out = tether(db, "import", str(src))
    assert code == 2
    assert error in " ".join(out.split())
    assert "Traceback" not in out
    s = SQLiteStore(str(db))
    assert s.list_runs() == []


def test_a_tau_bench_record_without_traj_is_named(tmp_path: Path) -> None:
    src = tmp_path / "tau.json"
    src.write_text(json.dumps([tau_record(1, 1.0), {"task_id": 2, "reward": 1.0, "traj": 3}]))
    code, out = tether(tmp_path / "t.db", "import", str(src), "--format", "tau-bench")
    assert code == 2 and "record 1: traj: must be a list of chat messages" in " ".join(out.split())


def test_a_line_that_is_not_json_is_named(tmp_path: Path) -> None:
    src = tmp_path / "bad.jsonl"
    src.write_text(json.dumps(conversation()) + "\n{not json\n")
    code, out = tether(tmp_path / "t.db", "import", str(src))
    assert code == 2 and "record 1: " in out and "not JSON" in out


@pytest.mark.skipif(not TAU.exists(), reason="the tau-bench file is not beside the repository")
def test_the_real_tau_bench_file_imports_and_verifies(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    code, out = tether(db, "import", str(TAU), "--json")
    assert code == 0, out[-500:]
    made = [json.loads(line) for line in out.splitlines()]
    assert len(made) == 200
    assert sum(1 for m in made if m["outcome"]["reward"] < 1.0) == 116
    s = SQLiteStore(str(db))
    assert verify_store(s).ok
