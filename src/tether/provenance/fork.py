"""Fork a run at step K: a new run from that checkpoint, optionally with edited state.

"What if it had known X": the child starts from the parent's state at K (in
the parent's current epoch), with ``--set KEY=JSON`` edits applied, in its own
copy of the workspace by default. The copy is put back to how it was at K by
running, on the copy only, the undos of the parent's reversible effects after
K (newest first); irreversible effects happened in the world and stay. The
lineage (parent run, epoch, step, edits) is recorded in the child's
``run.started`` event and spec, and in its ``parent`` column.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tether.errors import UsageError
from tether.provenance import rollback as rb
from tether.provenance.plan import refuse_forged
from tether.runtime.agent import AgentLike
from tether.runtime.operator import actor, run_state
from tether.runtime.runs import load_agent, start_run
from tether.store.protocol import Store
from tether.tools.base import ToolContext
from tether.tools.running import run_tool_blocking


def fork(store: Store, run_ref: str, at: int, *, edits: Mapping[str, Any] | None = None,
         shared_workspace: bool = False, name: str | None = None,
         who: str | None = None, agents: Mapping[str, AgentLike] | None = None) -> str:
    """Start the child run; return its id. ``agents``: agents by reference (the parent's
    agent, whose undo tools rewind the copy, is found there before it is imported)."""
    parent, _, state = run_state(store, run_ref, at)
    for key, value in (edits or {}).items():
        if not key:
            raise UsageError("--set needs KEY=JSON with a non-empty key")
        state[key] = value
    ws = parent.spec.get("workspace")
    child_ws: str | None = ws
    undone: list[str] = []
    if ws and not shared_workspace:
        child_ws, undone = _rewound_copy(store, parent.id, Path(ws), at, agents)
    agent = load_agent(parent.agent, agents)
    lineage = {"run": parent.id, "epoch": parent.epoch, "step": at, "edits": dict(edits or {}),
               "workspace_undone": undone, "shared_workspace": shared_workspace}
    return start_run(store, agent, agent_ref=parent.agent, goal=parent.goal,
                     name=name or f"{parent.name}-fork{at}", swarm=parent.swarm,
                     budget=parent.budget, workspace=child_ws, state=state,
                     actor=who or actor(store=store), options={"forked_from": lineage}, parent=parent.id)


def _rewound_copy(store: Store, parent: str, ws: Path, at: int,
                  agents: Mapping[str, AgentLike] | None) -> tuple[str, list[str]]:
    """A copy of the parent's workspace put back to step ``at``: its path and the effects
    undone on it. If that fails, the copy (half rewound, nobody's) is removed again, so the
    fork can simply be tried again once the cause is fixed."""
    p = rb.plan(store, parent, at)
    refuse_forged(p)  # the undos to run on the copy come from the effect rows
    child = ws.with_name(f"{ws.name}-fork-{parent[-6:].lower()}-{at}")
    if child.exists():
        raise UsageError(f"{child} exists already; remove it or fork at another step")
    shutil.copytree(ws, child, symlinks=True)
    try:
        return str(child), _rewind_copy(p, child, store, agents)
    except BaseException:
        shutil.rmtree(child, ignore_errors=True)
        raise


def fork_plan(store: Store, run_ref: str, at: int) -> list[str]:
    """What forking ``run_ref`` at step ``at`` would let the child do again, in words.

    The child re-runs the steps after ``at`` from the parent's state, so it may repeat the
    parent's irreversible effects after ``at``; each such call of the child is gated like
    any other, by the policy in force for its swarm, named here too.
    """
    from tether.policies import in_force
    parent, _, _ = run_state(store, run_ref, at)
    p = rb.plan(store, parent.id, at)
    repeat = [e for e in p.irreversible + p.in_doubt if e.effect == "irreversible"]
    gate = in_force(store, parent.swarm)
    out = [f"fork of run {parent.name} ({parent.id}) at step {at}: the child starts from the "
           f"state of step {at} and re-runs what came after"]
    if repeat:
        out.append(f"the child may repeat {len(repeat)} irreversible effect(s) of the parent "
                   f"after step {at}:")
        out += [f"  REPEAT? step {e.step} {e.tool} {_args(e.arguments)} ({e.id}, {e.status})"
                for e in repeat]
    else:
        out.append(f"no irreversible effect of the parent after step {at}")
    out.append(f"its actions are gated by the {gate.describe()}")
    out.append("nothing was changed; leave out --plan to fork")
    return out


def _args(arguments: Mapping[str, Any]) -> str:
    text = ", ".join(f"{k}={v!r}" for k, v in arguments.items())
    return f"({text[:80]}...)" if len(text) > 80 else f"({text})"


def _rewind_copy(p: rb.RollbackPlan, root: Path, store: Store,
                 agents: Mapping[str, AgentLike] | None) -> list[str]:
    """Undo the parent's reversible effects after the step on the copy only."""
    registry = rb.undo_tools(p.run, None, agents)
    done = []
    for u in p.undo:
        tool = registry.get(u.tool)
        if tool is None:
            raise UsageError(f"cannot rewind the workspace copy: the undo of effect "
                             f"{u.effect.id} needs tool {u.tool!r}; use --shared-workspace")
        tc = ToolContext(p.run.id, p.to_step, None, None, root, chunk=store.chunk)
        try:
            run_tool_blocking(tool, tool.validate(u.arguments), tc)
        except UsageError:
            raise
        except Exception as exc:
            raise UsageError(f"cannot rewind the workspace copy: the undo of effect "
                             f"{u.effect.id} ({u.effect.tool}) with {u.tool} failed: "
                             f"{type(exc).__name__}: {exc}; fix the cause and fork again, or "
                             "use --shared-workspace") from exc
        done.append(u.effect.id)
    return done
