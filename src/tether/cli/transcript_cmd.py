"""``tether import`` and ``tether analyze``: transcripts recorded elsewhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import orjson
import typer

from tether.cli.args import check_value
from tether.cli.common import console, handle_errors, store
from tether.core.monitors import MonitorSettings
from tether.core.policy import load_policy
from tether.core.transcripts import FORMATS
from tether.errors import UsageError
from tether.ops import Tether
from tether.policies import in_force
from tether.system_clock import SYSTEM_CLOCK
from tether.transcripts import Analysis, analyze_file, analyze_run, import_file

FormatOpt = Annotated[str, typer.Option(
    "--format", metavar="FORMAT",
    help=f"{'|'.join(FORMATS)}: OpenAI chat messages (JSON or JSONL), tau-bench "
         "trajectories, OpenTelemetry GenAI spans (OTLP/JSON or the Python SDK's span "
         "JSON); auto tells them apart per record.")]
ModelOpt = Annotated[str | None, typer.Option(
    "--model", metavar="NAME",
    help="The model's name where the transcript does not record it (chat lists and "
         "tau-bench trajectories do not; e.g. gpt-4o).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for tools.")]


@handle_errors
def import_(file: Annotated[Path, typer.Argument(help="The transcript file.", metavar="FILE")],
            fmt: FormatOpt = "auto", model: ModelOpt = None, json: JsonOpt = False) -> None:
    """Import agent transcripts recorded elsewhere as read-only runs.

    Each run of the file becomes a run in the store (done, or failed when the transcript
    says so) whose events are the transcript's model and tool calls, so `show`, `events`,
    `impact`, `audit verify` and `analyze` work on it; no worker drives it and commands
    that change runs refuse it. All runs of the file are imported in one transaction:
    a record that cannot be read is named with its field, and nothing is imported."""
    s = store(create=True)
    made = import_file(s, file, fmt=fmt, model=model, now=SYSTEM_CLOCK.now)
    if json:
        for m in made:
            print(orjson.dumps(m.to_json()).decode())
        return
    for m in made:
        out = f" reward {m.outcome['reward']:g}" if "reward" in m.outcome else ""
        console.print(f"record {m.record}: {m.name} ({m.run}) {m.steps} steps, "
                      f"{m.events} events{out}", markup=False)
    console.print(f"imported {len(made)} run(s) from {file} into {s.url}", markup=False)


@handle_errors
def analyze(target: Annotated[str, typer.Argument(
                help="A transcript file (analyzed without importing it), or a run in the "
                     "store (id, name or id prefix).", metavar="FILE|RUN")],
            fmt: FormatOpt = "auto", model: ModelOpt = None,
            policy: Annotated[Path | None, typer.Option(
                "--policy", metavar="FILE",
                help="Configure the monitors by this policy file's [monitors] tables "
                     "(default: for a run, the policy in force for it; for a file, every "
                     "monitor on its defaults).")] = None,
            json: JsonOpt = False) -> None:
    """Run the registered monitors over a transcript file or a stored run, offline.

    Prints each run's flags by step, with the monitor, rule, verdict and the events
    that show it. With --json: one object per run, `record` (its 0-based position in
    the file, or its run id), `flags` (monitor, rule, step, verdict, message, evidence)
    and the transcript's outcome (e.g. tau-bench's reward) when it has one."""
    settings = load_policy(policy).monitors if policy is not None else None
    path = Path(target)
    check_value(path, "TARGET", "a transcript file or a run")  # a name no file system takes
    if path.is_file():
        results = analyze_file(path, settings or MonitorSettings(), fmt=fmt, model=model)
    elif path.suffix in (".json", ".jsonl") or "/" in target:
        raise UsageError(f"no transcript file {target}: give a file that exists, or a run")
    else:
        s = store(readonly=True)
        row = Tether(s).run(target)
        chosen = settings or in_force(s, row.swarm).policy.monitors
        results = iter([analyze_run(s, row, chosen)])
    runs = flagged = 0
    for a in results:
        runs, flagged = runs + 1, flagged + bool(a.flags)
        if json:
            print(orjson.dumps(a.to_json()).decode())
        else:
            _print(a)
    if not json:
        console.print(f"{flagged} of {runs} run(s) flagged", markup=False)


def _print(a: Analysis) -> None:
    out = ""
    if a.outcome:
        out = " " + " ".join(f"{k}={v}" for k, v in a.outcome.items())
    where = f"record {a.record}" if isinstance(a.record, int) else f"run {a.record}"
    console.print(f"{where}: {a.name}, {a.steps} steps, {len(a.flags)} flag(s){out}",
                  markup=False)
    if a.skipped:
        asks = ", ".join(f"{n} {k}" for k, n in sorted(a.skipped.items()))
        console.print(f"  {sum(a.skipped.values())} monitor ask(s) skipped ({asks}): the run "
                      "holds no journaled answer to them (an imported transcript has none) "
                      "and analyze never calls a model", markup=False)
    for f in a.flags:
        cites = ", ".join(_cite(a, i) for i in f.evidence) or "no events"
        console.print(f"  step {f.step}: {f.verdict} {f.monitor}/{f.rule} (stage {f.stage}): "
                      f"{f.message} [evidence: {cites}]", markup=False)


def _cite(a: Analysis, eid: str) -> str:
    e = a.events.get(eid)
    if e is None:
        return eid
    tool = e.payload.get("tool") if isinstance(e.payload, dict) else None
    return f"#{e.seq} {e.kind}{' ' + str(tool) if tool else ''} (step {e.step})"
