"""docs/integrations/openai-agents.md: its example runs as written (built, not run: no
model is called) and leaves nothing to OpenAI's trace export; its limits say what a
re-run turn repeats."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "integrations" / "openai-agents.md"


def _example() -> str:
    (code,) = re.findall(r"```python\n(# travel\.py\n.*?)```", DOC.read_text(), re.S)
    return code


def test_the_examples_agent_builds_with_the_sdks_tracing_export_off() -> None:
    # The SDK's tracing exports model input and output to OpenAI before tether redacts it.
    names: dict[str, object] = {"__name__": "travel"}
    exec(compile(_example(), str(DOC), "exec"), names)  # noqa: S102 - the doc's own example
    travel = names["travel"]
    assert travel._config.tracing_disabled is True  # type: ignore[attr-defined]
    assert travel._config.workflow_name == "travel"  # type: ignore[attr-defined]


def test_the_limits_say_on_handoff_runs_again_for_a_re_run_turn() -> None:
    limits = DOC.read_text().split("## Limits", 1)[1]
    said = " ".join(limits.split())
    assert "`on_handoff` callback: a turn re-run after a crash, an approval or a resume " \
           "invokes the handoff again, and with it `on_handoff`" in said
    assert "RunConfig(tracing_disabled=True)" in said
