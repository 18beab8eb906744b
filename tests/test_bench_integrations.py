"""bench/integrations_cost.py, the benchmark's section on framework agents under tether, end
to end at a tiny size: PydanticAI, the OpenAI Agents SDK and LangGraph (and LangGraph with
its SQLite checkpointer where the bench extra installed it), alone and under tether, each
against a real loopback FakeChatServer, tether's runs on real SQLite files driven by a real
Worker. Every run is checked for its turns, tool calls and whole history; nothing here
asserts a timing: the figures are the benchmark's, not the tests'.
"""

from __future__ import annotations

import re
from pathlib import Path

from bench.integrations_cost import cases, has_saver, measure
from bench.integrations_report import TITLE, section, turn_cpu, turn_wall, write_into

TURNS = 4


def test_every_framework_runs_its_turns_alone_and_under_tether(tmp_path: Path) -> None:
    said: list[str] = []
    samples = measure(TURNS, 1, tmp_path, said.append)

    measured = {(s.framework, s.mode) for s in samples}
    assert measured == set(cases()) and len(samples) == len(cases()) == len(said)
    assert ("langgraph", "saver") in measured or not has_saver()
    for s in samples:
        assert s.turns == TURNS and len(s.ticks) == TURNS, s
        assert s.history >= 2 * TURNS + 1  # the model was sent the whole history
        assert len(s.per_turn()) == TURNS - 1 and all(t > 0 for t in s.per_turn())
        assert turn_wall(s) > 0 and turn_cpu(s) >= 0 and s.wall >= s.ticks[-1][0] - s.ticks[0][0]
        # Under tether one step a turn (LangGraph: a superstep, two a turn), plus the answer.
        want = {"tether": 2 * TURNS + 1 if s.framework == "langgraph" else TURNS + 1}
        assert s.steps == want.get(s.mode, 0), s
    assert not list(tmp_path.iterdir()), "a database file was left behind"

    text = section(samples, loads=("1.00, 1.00, 1.00", "2.00, 1.50, 1.00"), when="2026-01-01")
    assert text.startswith(TITLE) and "PydanticAI" in text and "OpenAI Agents SDK" in text
    assert ("AsyncSqliteSaver (durable)" in text) == has_saver()
    assert "turn 2" in text and f"turn {TURNS}" in text
    assert not re.search(r"\bnan\b|\binf\b", text), "a figure is missing"

    report = tmp_path / "benchmarks.md"
    report.write_text("# Benchmarks\n\n## 12. Before\n\nx\n\n## Method\n\ny\n")
    write_into(report, text)
    write_into(report, text.replace("PydanticAI |", "PydanticAI (again) |"))
    written = report.read_text()
    assert written.count(TITLE) == 1 and "(again)" in written  # replaced in place
    assert written.index("## 12. Before") < written.index(TITLE) < written.index("## Method")


def test_a_run_without_samples_says_so() -> None:
    assert section([]) == f"{TITLE}\n\nNot run.\n"
