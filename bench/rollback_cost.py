"""Rollback cost: undo every file effect of a run of N steps and restore its step-0 state.

A run on a SQLite file (``synchronous=FULL``) is driven by a real
:class:`tether.runtime.worker.Worker` (``run(until_idle=True)``): its
:class:`~tether.runtime.agent.StepAgent` has an async step that writes one
~200-byte file per step with the built-in reversible tool
:func:`tether.tools.files.fs_write` (``notes/step-NNNN.txt`` in the run's
workspace, whose ``notes`` folder exists, empty, before the run starts), so N
steps leave N reversible effects, each with its ``fs_restore`` undo.

Timed, in this order, on the finished run:

* ``plan(store, run, 0)``: reading the effects and the journal and checking
  every file's hash against its after-image (changes nothing);
* ``rollback(store, run, 0)``: the plan again under the lease, then per effect,
  newest first, ``effect.undoing`` made durable, the undo run (the file
  removed), ``effect.undone`` made durable; then the step-0 state restored as
  a keyframe in a new epoch.

Each repeat builds a fresh run on a fresh database and workspace. After the
rollback the benchmark checks the result, so the timing is of a correct
rollback: the workspace holds only the empty ``notes`` folder, as at step 0;
every effect is ``undone``; the run is paused at step 0 in epoch 1.
"""

from __future__ import annotations

import asyncio
import gc
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.workload import fresh_db, remove_db
from tether.provenance.rollback import plan, rollback
from tether.runtime.agent import StepAgent
from tether.runtime.outcome import Continue, Done
from tether.runtime.runs import start_run
from tether.runtime.worker import Worker
from tether.store.sqlite import SQLiteStore
from tether.tools.files import fs_write

AGENT_REF = "bench.rollback_cost:WRITER"
"""Importable, so the rollback loads the agent's tools as it would in production."""
WHO = "human:bench"
FILE_BYTES = 200
_FILLER = "A note the agent wrote while it worked; the rollback must take it away again. " * 4


def note(n: int) -> str:
    """The content of step ``n``'s file: exactly :data:`FILE_BYTES` bytes, naming its step."""
    head = f"step {n:06d}: "
    return head + _FILLER[: FILE_BYTES - len(head) - 1] + "\n"


assert len(note(1).encode()) == FILE_BYTES


async def _write(ctx: Any, state: dict[str, Any]) -> Continue | Done:
    n = state["n"] + 1
    state["n"] = n
    await ctx.call(fs_write, path=f"notes/step-{n:06d}.txt", content=note(n))
    return Done() if n >= state["steps"] else Continue()


WRITER = StepAgent(_write, name="writer", tools=[fs_write])


@dataclass(frozen=True, slots=True)
class RollbackSample:
    """One fresh run of ``steps`` steps, rolled back to step 0."""

    steps: int
    effects: int
    """Reversible effects the rollback undid."""
    build: float
    """Seconds the worker took to run the ``steps`` steps (not part of the target)."""
    plan: float
    """Seconds of ``plan(store, run, 0)`` alone."""
    rollback: float
    """Seconds of ``rollback(store, run, 0)``: every undo plus the state restore."""
    events: int
    """Events the rollback journaled."""

    @property
    def per_effect(self) -> float:
        return self.rollback / self.effects if self.effects else float("nan")


def build_run(store: SQLiteStore, ws: Path, steps: int) -> str:
    """Start a run of ``steps`` file-writing steps in ``ws`` and drive it to the end."""
    (ws / "notes").mkdir(parents=True)
    run = start_run(store, WRITER, agent_ref=AGENT_REF, goal="write notes", workspace=ws,
                    state={"n": 0, "steps": steps})
    asyncio.run(Worker(store, agents={AGENT_REF: WRITER}).run(until_idle=True))
    row = store.get_run(run)
    if row is None or row.status != "done" or row.step != steps:
        raise RuntimeError(f"the run did not finish its {steps} steps: {row}")
    written = len(list((ws / "notes").iterdir()))
    if written != steps:
        raise RuntimeError(f"the run wrote {written} files, not {steps}")
    return run


def check_rolled_back(store: SQLiteStore, run: str, ws: Path, steps: int) -> None:
    """Raise unless the workspace and the run are as at step 0."""
    left = sorted(p.relative_to(ws).as_posix() for p in ws.rglob("*"))
    if left != ["notes"]:
        raise RuntimeError(f"after the rollback the workspace holds {left[:5]} "
                           f"({len(left)} paths), not just the empty notes folder")
    statuses = [e.status for e in store.effects(run=run)]
    if len(statuses) != steps or set(statuses) != {"undone"}:
        raise RuntimeError(f"after the rollback {statuses.count('undone')} of {len(statuses)} "
                           f"effects are undone ({steps} expected)")
    row = store.get_run(run)
    if row is None or (row.epoch, row.step, row.status) != (1, 0, "paused"):
        raise RuntimeError(f"after the rollback the run is {row}, not paused at step 0 in epoch 1")


def run_rollback(steps: int, workdir: Path) -> RollbackSample:
    """Build a fresh run of ``steps`` steps, then time ``plan`` and ``rollback`` to step 0."""
    path = fresh_db(workdir, f"tether-rollback{steps}")
    ws = workdir / f"rollback-ws-{uuid.uuid4().hex[:8]}"
    store = SQLiteStore(path, synchronous="FULL")
    try:
        t0 = time.perf_counter()
        run = build_run(store, ws, steps)
        build = time.perf_counter() - t0
        before = len(store.events(run))
        gc.collect()
        t0 = time.perf_counter()
        p = plan(store, run, 0)
        t_plan = time.perf_counter() - t0
        if len(p.undo) != steps or p.irreversible or p.in_doubt or p.missing_undo:
            raise RuntimeError(f"the plan undoes {len(p.undo)} effects, not {steps}")
        t0 = time.perf_counter()
        done = rollback(store, run, 0, who=WHO)
        t_roll = time.perf_counter() - t0
        check_rolled_back(store, run, ws, steps)
        events = len(store.events(run)) - before
        return RollbackSample(steps, len(done.undo), build, t_plan, t_roll, events)
    finally:
        store.close()
        remove_db(path)
        shutil.rmtree(ws, ignore_errors=True)


def profile_rollback(steps: int, workdir: Path, top: int = 25) -> str:
    """cProfile of one rollback of a fresh ``steps``-step run, by cumulative time."""
    import cProfile
    import io
    import pstats

    path = fresh_db(workdir, f"tether-rollback-prof{steps}")
    ws = workdir / f"rollback-ws-{uuid.uuid4().hex[:8]}"
    store = SQLiteStore(path, synchronous="FULL")
    try:
        run = build_run(store, ws, steps)
        prof = cProfile.Profile()
        prof.enable()
        rollback(store, run, 0, who=WHO)
        prof.disable()
        check_rolled_back(store, run, ws, steps)
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(top)
        out.write("\n")
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
        return out.getvalue()
    finally:
        store.close()
        remove_db(path)
        shutil.rmtree(ws, ignore_errors=True)


if __name__ == "__main__":
    import sys
    import tempfile

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    with tempfile.TemporaryDirectory(prefix="tether-rollback-") as d:
        s = run_rollback(n, Path(d))
        print(s, f"{s.per_effect * 1e3:.2f} ms/effect")
        if len(sys.argv) > 2:
            print(profile_rollback(n, Path(d)))
