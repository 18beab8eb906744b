"""The tau-bench airline transcripts as tether runs (a minimal converter of our own:
no ``tether import`` parser for them is on main yet).

Each trajectory is played as a real run, the way :mod:`.drive` plays a plan: one
step per assistant message; the step asks the (scripted) model with the
conversation so far (system prompt, user and tool messages as recorded), gets the
recorded answer back, then makes each tool call it asked for, whose tool answers
what the transcript recorded. A recorded ``Error: ...`` answer is what tau-bench's
environment returns when a tool raised, so the tool raises it here (journaled as a
failed call). Token counts are not in the transcripts: the scripted model estimates
them from the text (4 characters a token) and prices them as ``gpt-4o``. Each step
takes 10 s of simulated time. The data is read from ``../shared/data`` and never
copied into the repository.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pydantic

from bench.eval.drive import START, quiet_policy
from tether import (
    Continue,
    Done,
    FixedClock,
    ModelResponse,
    ScriptedModel,
    StepAgent,
    ToolCall,
    Worker,
    start_run,
)
from tether.errors import ToolFailed
from tether.store.sqlite import SQLiteStore
from tether.tools import Tool, current

RELATIVE = "shared/data/tau-bench-airline/gpt-4o-airline.json"
"""Under the checkout's parent (``../shared/data``) or any folder above it."""
WRITES = {"book_reservation": "irreversible", "cancel_reservation": "irreversible",
          "update_reservation_baggages": "irreversible", "update_reservation_flights": "irreversible",
          "update_reservation_passengers": "irreversible", "send_certificate": "irreversible",
          "transfer_to_human_agents": "irreversible"}
ANSWERS: dict[tuple[str, int], deque[str]] = {}


def data_path() -> Path:
    """Where the transcripts are: ``../shared/data`` from the checkout (a worktree's
    checkout is deeper, so every folder above is tried); the nearest one if none has it."""
    root = Path(__file__).resolve().parents[2]
    for base in root.parents:
        if (base / RELATIVE).exists():
            return base / RELATIVE
    return root.parent / RELATIVE


def _answer(**_: Any) -> Any:
    c = current()
    out = ANSWERS[(c.run, c.step)].popleft()
    if out.startswith("Error:"):
        raise RuntimeError(out.removeprefix("Error:").strip())
    return out


def tools_for(records: Sequence[dict[str, Any]]) -> dict[str, Tool]:
    """A tool per name the transcripts call, taking the arguments they were called with
    (every key seen, optional)."""
    keys: dict[str, set[str]] = {}
    for r in records:
        for m in r["traj"]:
            for c in m.get("tool_calls") or []:
                args = _args(c["function"]["arguments"])
                keys.setdefault(c["function"]["name"], set()).update(args or {})
    out = {}
    for name, ks in keys.items():
        model = pydantic.create_model(f"{name}_args", __config__=pydantic.ConfigDict(extra="forbid"),
                                      **dict.fromkeys(sorted(ks), (Any, None)))  # type: ignore[call-overload]
        schema = model.model_json_schema()
        out[name] = Tool(name=name, fn=_answer, effect=WRITES.get(name, "read"), idempotent=False,
                         description=name, schema=schema, model=model, is_async=False)
    return out


def _args(text: str) -> dict[str, Any] | None:
    try:
        v = json.loads(text)
    except ValueError:
        return None
    return v if isinstance(v, dict) else None


def turns(traj: list[dict[str, Any]]) -> list[tuple[list[dict[str, Any]], dict[str, Any], list[str]]]:
    """Per assistant message: the conversation before it, the message, and the recorded
    answers of its tool calls (the tool messages that follow it, in order)."""
    out = []
    for n, m in enumerate(traj):
        if m.get("role") != "assistant":
            continue
        answers = []
        for later in traj[n + 1:]:
            if later.get("role") != "tool":
                break
            answers.append(str(later.get("content")))
        out.append((traj[:n], m, answers))
    return out


class TauPlayer:
    def __init__(self, record: dict[str, Any], tools: dict[str, Tool], clock: FixedClock) -> None:
        self.turns = turns(record["traj"])
        self.tools, self.clock = tools, clock
        self.next: ModelResponse | None = None
        self.agent = StepAgent(self.step, name="airline", tools=list(tools.values()),
                               model=ScriptedModel(lambda m, t: self._reply(), name="gpt-4o"))

    def _reply(self) -> ModelResponse:
        assert self.next is not None
        return self.next

    async def step(self, ctx: Any, state: dict[str, Any]) -> Any:
        k = ctx.step
        before, msg, answers = self.turns[k - 1]
        self.clock.advance(10.0)
        calls = tuple(ToolCall(c.get("id") or f"call_{k}_{i}", c["function"]["name"],
                               c["function"]["arguments"])
                      for i, c in enumerate(msg.get("tool_calls") or []))
        self.next = ModelResponse(msg.get("content"), calls)
        await ctx.model([_plain(m) for m in before], list(self.tools.values()))
        ANSWERS[(ctx.run_id, k)] = deque(answers + [""] * (len(calls) - len(answers)))
        for c in calls:
            args = _args(c.arguments)
            if args is None or set(args) - set(self.tools[c.name].model.model_fields):
                ANSWERS[(ctx.run_id, k)].popleft()
                ctx.reject(c.name, c.arguments, f"error: tool {c.name}: invalid arguments")
                continue
            with contextlib.suppress(ToolFailed):
                await ctx.call(self.tools[c.name], **args)
        return Done(msg.get("content")) if k == len(self.turns) else Continue()


def _plain(m: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in m.items() if k in ("role", "content", "tool_calls", "tool_call_id", "name")}


def load(path: Path | None = None) -> list[dict[str, Any]] | None:
    p = path or data_path()
    return json.loads(p.read_text()) if p.exists() else None


def play(records: Sequence[dict[str, Any]], db: Path) -> list[dict[str, Any]]:
    """Every record as a run; per record: its index, task, trial, reward and events."""
    store = SQLiteStore(db)
    quiet_policy(store)
    tools = tools_for(records)
    out = []
    try:
        for n, r in enumerate(records):
            clock = FixedClock(START + n * 86_400.0)
            p = TauPlayer(r, tools, clock)
            rid = start_run(store, p.agent, agent_ref="tau", goal=_goal(r), clock=clock,
                            state={})
            asyncio.run(Worker(store, agents={"tau": p.agent}, clock=clock, poll_interval=0.001,
                               only={rid}).run(until_idle=True))
            row = store.get_run(rid)
            out.append({"record": n, "task_id": r["task_id"], "trial": r["trial"],
                        "reward": float(r["reward"]), "id": rid, "events": list(store.events(rid)),
                        "status": row.status if row else "?", "turns": len(p.turns)})
    finally:
        store.close()
    return out


def _goal(r: dict[str, Any]) -> str:
    first = next((m for m in r["traj"] if m.get("role") == "user"), {})
    return str(first.get("content") or "")


def split(records: Sequence[dict[str, Any]], seed: int) -> tuple[set[int], set[int]]:
    """Two halves of the task ids (seeded): tune on the first, report on the second."""
    tasks = sorted({int(r["task_id"]) for r in records})
    random.Random(seed).shuffle(tasks)
    half = len(tasks) // 2
    return set(tasks[:half]), set(tasks[half:])


def runs_of(records: Sequence[dict[str, Any]], path: Path, db: Path) -> tuple[list[dict[str, Any]], str]:
    """The transcripts as runs' events, and how they were made: through ``tether import``'s
    own reader (``tether.transcripts``) when this commit has it, else played by
    :func:`play` (this module's minimal converter)."""
    try:
        from tether.transcripts import events_of, read  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        return play(records, db), "own"
    out = []
    for t in read(path, "tau-bench"):
        r = records[t.record]
        out.append({"record": t.record, "task_id": r["task_id"], "trial": r["trial"],
                    "reward": float(r["reward"]), "events": events_of(t, f"tau-{t.record}", path.name),
                    "status": "imported", "turns": len(t.turns)})
    return out, "import"
