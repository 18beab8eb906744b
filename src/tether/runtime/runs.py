"""Starting runs and finding the agent behind a run."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tether.core import budget as budgets
from tether.core.checkpoint import CheckpointEncoder, checkpoint_info
from tether.core.clock import Clock
from tether.core.ids import UlidSource
from tether.core.pausepoints import PausePoints
from tether.core.pricing import PriceTable, cost_caps, refuse_unpriced
from tether.core.redaction import DEFAULT as BUILTIN_REDACTION
from tether.core.redaction import Redactor
from tether.core.text import refuse_nul
from tether.errors import UsageError
from tether.runtime.agent import AgentLike
from tether.runtime.journal import RunJournal
from tether.runtime.policybook import PolicyBook
from tether.runtime.prices import price_table
from tether.store.protocol import Store
from tether.store.records import RunRow
from tether.system_clock import SYSTEM_CLOCK


def load_agent(ref: str, registry: Mapping[str, AgentLike] | None = None) -> AgentLike:
    """The agent named ``ref``: from ``registry`` by name, else imported as ``module:attr``."""
    if registry and ref in registry:
        return registry[ref]
    if ":" not in ref:
        raise UsageError(f"agent {ref!r} is not registered with this worker and is not a "
                         "module:attr reference (e.g. mypkg.agents:triage)")
    mod_name, _, attr = ref.partition(":")
    # Like uvicorn and celery: a module in the current folder is found without PYTHONPATH.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as exc:
        raise UsageError(f"cannot import module {mod_name!r} for agent {ref!r}: {exc}; "
                         "run tether from the folder that holds it, set PYTHONPATH, or install it") from exc
    except Exception as exc:  # the module itself raised while importing
        raise UsageError(f"module {mod_name!r} (agent {ref!r}) raised while importing: "
                         f"{type(exc).__name__}: {exc}") from exc
    obj: Any = mod
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise UsageError(f"module {mod_name} has no attribute {attr!r} (agent {ref!r})")
    if not isinstance(obj, AgentLike):
        raise UsageError(f"{ref} is a {type(obj).__name__}, not an agent; wrap a step "
                         "function with tether.step_agent or build a tether.Agent")
    return obj


def validate_run(agent: AgentLike, *, goal: str, budget: Mapping[str, float] | None = None,
                 pause_points: Mapping[str, Any] | None = None,
                 state: dict[str, Any] | None = None,
                 prices: PriceTable | None = None,
                 redactor: Redactor = BUILTIN_REDACTION) -> dict[str, Any]:
    """Check what :func:`start_run` would refuse, without writing anything: the budget (a
    cost cap needs the model's price), the pause points and the initial state (it must
    checkpoint; made from the goal as ``redactor`` redacts it). Raises UsageError.

    Returns:
        The initial state it checked: pass it to :func:`start_run` as ``state`` so the run
        starts from exactly that state (``initial_state`` is not called twice), unless the
        store's policy redacts the goal otherwise (:func:`start_redactor`).
    """
    _priced(agent, budgets.validate({**(agent.budget or {}), **(budget or {})}), prices)
    points = pause_points if pause_points is not None else getattr(agent, "pause_points", None)
    if points:
        PausePoints.parse(points)
    init = state if state is not None else agent.initial_state(redactor.redact(goal))
    CheckpointEncoder(run="validate").encode(0, init, force_key=True)
    return init


def _priced(agent: AgentLike, budget: Mapping[str, float], prices: PriceTable | None) -> None:
    """A cost cap on a model without a price would count its calls as $0: refuse it."""
    if agent.model is not None and cost_caps(budget):
        refuse_unpriced(agent.model.name, budget, prices or price_table(),
                        f"a run of agent {agent.name}")


def _spec(agent: AgentLike, agent_ref: str, workspace: str | Path | None,
          options: Mapping[str, Any] | None,
          pause_points: Mapping[str, Any] | None) -> dict[str, Any]:
    """A new run's spec: how to load its agent, its workspace (made, as an absolute path),
    its pause points and the caller's options."""
    ws = str(Path(workspace).resolve()) if workspace is not None else None
    if ws is not None:
        Path(ws).mkdir(parents=True, exist_ok=True)
    spec: dict[str, Any] = {"agent": agent_ref, "agent_name": agent.name, "workspace": ws,
                            "definition": agent.definition_hash(), **(options or {})}
    points = pause_points if pause_points is not None else getattr(agent, "pause_points", None)
    if points:
        spec["pause_points"] = PausePoints.parse(points).to_json()
    return spec


def start_redactor(store: Store, swarm: str | None) -> Redactor:
    """The secret patterns a new run of ``swarm`` is started under: those of the policy in
    force for it on ``store`` (the built-ins at least)."""
    book = PolicyBook()
    book.refresh(store)
    return book.for_swarm(swarm).policy.redaction


def start_run(store: Store, agent: AgentLike, *, agent_ref: str, goal: str,
              name: str | None = None, budget: Mapping[str, float] | None = None,
              swarm: str | None = None, workspace: str | Path | None = None,
              state: dict[str, Any] | None = None, clock: Clock | None = None,
              ids: UlidSource | None = None, actor: str = "system",
              options: Mapping[str, Any] | None = None,
              pause_points: Mapping[str, Any] | None = None, parent: str | None = None,
              prices: PriceTable | None = None, redactor: Redactor | None = None) -> str:
    """Create a run: its ``run.started`` event, projection row and step-0 checkpoint.

    Secrets are redacted from the goal, the name and ``options`` before anything is
    written, with ``redactor`` (default: the patterns of the policy in force for ``swarm``,
    :func:`start_redactor`): the run's goal *is* the redacted one, so the initial state
    made from it, ``ctx.goal`` and every later read agree, live and on replay. A ``state``
    given here is the caller's and is not redacted (checkpoints never are: see
    docs/audit.md, "Secrets in a run's state").

    A budget that caps cost (``cost_usd``, ``cost_usd_per_day``...) is refused when the
    agent's model has no price in ``prices`` (default: ``$TETHER_PRICES``, else the built-in
    table): its calls would otherwise count as $0.

    Returns:
        The new run's id.
    """
    clk = clock or SYSTEM_CLOCK
    src = ids or UlidSource(clk.now)
    run_id = src.new()
    b = budgets.validate({**(agent.budget or {}), **(budget or {})})
    _priced(agent, b, prices)
    red = redactor or start_redactor(store, swarm)
    goal, name = red.redact(goal), red.redact(name)
    init = state if state is not None else agent.initial_state(goal)
    spec = _spec(agent, agent_ref, workspace, red.redact(dict(options or {})), pause_points)
    now = clk.now()
    row = RunRow(id=run_id, name=name or f"{agent.name}-{run_id[-6:].lower()}", agent=agent_ref,
                 swarm=swarm, goal=goal, status="running", epoch=0, step=0, seq=0, head="",
                 spec=spec, budget=b, usage={}, wake_at=None, created=now, updated=now,
                 parent=parent)
    _journal_start(store, row, init, src, clk, actor)
    return run_id


def _check_texts(**texts: str | None) -> None:
    """A new run's names and goal as a store can keep them: no NUL (PostgreSQL's text
    cannot hold it; refused on every backend, so both keep the same runs)."""
    for field, value in texts.items():
        refuse_nul("cannot start the run", f"its {field}", value)


def _journal_start(store: Store, row: RunRow, init: dict[str, Any], src: UlidSource,
                   clk: Clock, actor: str) -> None:
    """``run.started`` and the step-0 checkpoint, in one commit."""
    _check_texts(goal=row.goal, name=row.name, swarm=row.swarm, parent=row.parent,
                 agent=row.agent, agent_name=row.spec.get("agent_name"), actor=actor)
    j = RunJournal(store, row, None, src, clk.now)
    j.append("run.started", {"name": row.name, "agent": row.agent, "goal": row.goal,
                             "swarm": row.swarm, "budget": row.budget, "spec": row.spec,
                             "parent": row.parent}, step=0, actor=actor)
    ck = CheckpointEncoder(run=row.id).encode(0, init, force_key=True)
    j.checkpoint(ck)
    j.append("checkpoint", checkpoint_info(ck), step=0, actor=actor)
    j.flush_sync()
