"""The report's section on framework agents under tether (``bench/integrations_cost.py``).

``section`` renders the samples of one run; ``write_into`` puts it into an existing
report in place of its previous version, so ``make bench-int`` refreshes this section
alone without rerunning (and rewriting) every other one.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence
from pathlib import Path

from bench.integrations_cost import MODES, IntSample, cases
from bench.stats import Summary, table

TITLE = "## 13. Framework agents under tether: cost per turn"
_LABEL = {"pydantic-ai": "PydanticAI", "openai-agents": "OpenAI Agents SDK",
          "langgraph": "LangGraph"}


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms"


NOISY = 0.2
"""A figure whose repeats range over more than this fraction of its median is marked noisy."""


def _spread(values: Sequence[float]) -> str:
    s = Summary.of(values)
    mark = " †" if s.n > 1 and (s.high - s.low) > NOISY * s.median else ""
    return f"{ms(s.median)} ({s.low * 1e3:.2f}–{s.high * 1e3:.2f}, n={s.n}){mark}"


def _busy(loads: tuple[str, str]) -> str:
    """What the load averages say of the figures (other work on the 2 cores)."""
    try:
        first = max(float(loads[0].split(",")[0]), float(loads[1].split(",")[0]))
    except ValueError:
        return ""
    if first < 1.5:
        return ""
    return (" The machine was busy with other work (a 1-minute load of "
            f"{first:.1f} on 2 cores): wall times include waiting for a core and are noisier "
            "than CPU times, which are the figures to compare.")


def _of(samples: Sequence[IntSample], fw: str, mode: str) -> list[IntSample]:
    return [s for s in samples if s.framework == fw and s.mode == mode]


def turn_wall(s: IntSample) -> float:
    """The run's median seconds per turn (turns 2..N)."""
    return statistics.median(s.per_turn())


def turn_cpu(s: IntSample) -> float:
    """The run's process CPU seconds per turn (turns 2..N)."""
    return (s.ticks[-1][1] - s.ticks[0][1]) / (len(s.ticks) - 1)


def probes(turns: int) -> tuple[int, int]:
    """The turns the growth table reads: 10 and the last (half-way on a short run)."""
    return (10 if turns >= 20 else max(turns // 2, 2)), turns


def _main_rows(samples: Sequence[IntSample]) -> list[list[str]]:
    rows = []
    for fw, mode in cases():
        got = _of(samples, fw, mode)
        if not got:
            continue
        wall = statistics.median(turn_wall(s) for s in got)
        cpu = statistics.median(turn_cpu(s) for s in got)
        base = _of(samples, fw, "plain")
        extra = ["—", "—"]
        if mode != "plain" and base:
            extra = [f"{(wall - statistics.median(turn_wall(s) for s in base)) * 1e3:+.2f} ms",
                     f"{(cpu - statistics.median(turn_cpu(s) for s in base)) * 1e3:+.2f} ms"]
        rows.append([_LABEL[fw], MODES[mode], _spread([turn_wall(s) for s in got]),
                     _spread([turn_cpu(s) for s in got]), *extra,
                     str(got[0].steps) if got[0].steps else "—"])
    return rows


def _growth_rows(samples: Sequence[IntSample], turns: int) -> list[list[str]]:
    early, late = probes(turns)
    rows = []
    for fw, mode in cases():
        got = _of(samples, fw, mode)
        if not got:
            continue
        cells = [statistics.median(s.window(t, cpu=c) for s in got)
                 for c in (False, True) for t in (early, late)]
        rows.append([_LABEL[fw], MODES[mode], *(ms(x) for x in cells),
                     f"{cells[1] / cells[0]:.2f}"])
    return rows


def section(samples: Sequence[IntSample], *, loads: tuple[str, str] | None = None,
            when: str | None = None) -> str:
    """The section's Markdown from one run's samples (``loads``: the load average at its
    start and end, when it ran alone; ``when``: its date, likewise)."""
    if not samples:
        return f"{TITLE}\n\nNot run.\n"
    turns = samples[0].turns
    reps = len(_of(samples, *cases()[0]))
    early, late = probes(turns)
    alone = ""
    if loads is not None:
        alone = (f" Run alone (`make bench-int`){f' on {when} UTC' if when else ''}; load average "
                 f"(1, 5, 15 min) {loads[0]} at its start and {loads[1]} at its end on this "
                 f"2-core machine.{_busy(loads)}")
    return (f"{TITLE}\n\n`bench/integrations_cost.py`, the agent in `bench/int_agents.py`: the "
            f"same small tool-calling agent in each framework, {turns} turns, each one model "
            "call asking the read tool `lookup` once (its ~200-character answer stays in the "
            "history, which grows by two messages a turn), then a final answer. The model is "
            "the framework's own OpenAI client against a loopback `FakeChatServer`, the same "
            "server for all. *Alone* is the framework's own loop with nothing durable; "
            "LangGraph is also run with its own durable checkpointer (`AsyncSqliteSaver`, the "
            "async `SqliteSaver`, WAL, `synchronous=FULL`, `durability=\"sync\"`). *Under "
            "tether* is the integration's agent (`TetherAgent`, `TetherGraph`) started with "
            "`start_run` on a `SQLiteStore` (`synchronous=FULL`) and driven by one "
            "`Worker(...).run(until_idle=True)`: every model call journaled (`ctx.model_call`), "
            "every tool call through the policy and the journal (`ctx.call`), the framework's "
            "state checkpointed after every tether step (a turn; a superstep for LangGraph, two "
            "a turn).\n\nA turn is timed from one `lookup` call to the next (turns 2 to "
            f"{turns}; the first holds start-up): the tool result into the history, what the "
            "framework and tether do between turns, the next request and its answer. CPU is "
            "the process's, every thread (the server's included, the same in every mode). "
            f"Medians over {reps} repeats that interleave every row (min–max over the repeats' "
            f"own medians; † marks a range wider than {NOISY:.0%} of the median: noisy); *more than "
            "alone* is this row's median less the framework alone's."
            f"{alone}\n\n"
            + table(["framework", "run", "wall per turn", "CPU per turn", "wall more than alone",
                     "CPU more than alone", "tether steps"], _main_rows(samples))
            + f"\nAs the history grows: mean per turn over the 5 turns ending at turn {early} "
              f"and at turn {late} (the request then carries about {2 * early + 2} and "
              f"{2 * late + 2} messages), medians over the repeats. Each cell rests on 5 turns "
              "a repeat, so a garbage collection or a busy core weighs more here than above: "
              "these are the noisiest figures. (The median per turn above is about the cost at "
              "mid-history.)\n\n"
            + table(["framework", "run", f"wall, turn {early}", f"wall, turn {late}",
                     f"CPU, turn {early}", f"CPU, turn {late}", "wall growth"],
                    _growth_rows(samples, turns)))


_HEADING = re.compile(r"^## ", re.M)


def write_into(path: Path, text: str) -> None:
    """Put ``text`` into the report at ``path`` in place of the section it replaces (found by
    its title), or before "## Why targets are missed" (or "## Method") when it has none."""
    report = path.read_text(encoding="utf-8")
    body = text.rstrip("\n") + "\n\n"
    start = report.find(TITLE)
    if start >= 0:
        nxt = _HEADING.search(report, start + len(TITLE))
        end = nxt.start() if nxt else len(report)
    else:
        anchors = [report.find(a) for a in ("## Why targets are missed", "## Method")]
        start = end = next((a for a in anchors if a >= 0), len(report))
    path.write_text(report[:start] + body + report[end:], encoding="utf-8")
