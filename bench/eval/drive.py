"""Plays scenario plans as real tether runs, so the events scored are the runtime's own.

Each run is a :class:`~tether.StepAgent` whose step follows its plan: it calls the
model (a :class:`~tether.ScriptedModel` answering what the plan says, with the
plan's token counts, priced as ``gpt-4o``), then the tools the model asked for (real
tools whose world answers from the plan), sets its state, declares its progress,
messages its peer. A Worker drives each scenario's runs in a temp SQLite store on a
simulated clock. The store's policy allows every tool (nothing waits for approval)
and switches every registered monitor off: the streams are what a run does when
nobody intervenes, and the evaluation then judges them offline.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tether import (
    AwaitMessages,
    Continue,
    Done,
    FixedClock,
    ModelResponse,
    ScriptedModel,
    StepAgent,
    ToolCall,
    Usage,
    Worker,
    start_run,
)
from tether.core.events import Event
from tether.core.monitors import KINDS
from tether.core.policy import parse_policy
from tether.errors import ToolFailed
from tether.policies import apply_policy
from tether.store.sqlite import SQLiteStore
from tether.tools import Tool, current, tool

START = 1_796_378_400.0  # 2026-12-04T10:00:00Z

OUTCOMES: dict[tuple[str, int], deque[dict[str, Any]]] = {}
"""What the world answers, per (run id, step): the tools pop it in call order."""


def _answer() -> Any:
    c = current()
    out = OUTCOMES[(c.run, c.step)].popleft()
    if "error" in out:
        raise RuntimeError(out["error"])
    return out["ok"]


def _tools() -> dict[str, Tool]:
    """The scenario world's tools: each answers what the plan says for its call."""
    sig: dict[str, tuple[str, str]] = {
        "read_file": ("read", "path: str, request_id: str = ''"),
        "search": ("read", "query: str, request_id: str = ''"),
        "get_order": ("read", "order_id: str, request_id: str = ''"),
        "list_invoices": ("read", "customer: str, request_id: str = ''"),
        "open_page": ("read", "url: str, note: str = ''"),
        "read_ticket": ("read", "ticket: str"), "read_calendar": ("read", "day: str"),
        "poll_queue": ("read", "queue: str"), "fetch": ("read", "url: str"),
        "fetch_report": ("read", "ref: str, attempt_note: str = ''"),
        "search_customers": ("read", "query: str, note: str = ''"),
        "list_secrets": ("read", "vault: str, note: str = ''"),
        "update_order": ("reversible", "ref: str, attempt_note: str = ''"),
        "create_invoice": ("irreversible", "ref: str, attempt_note: str = ''"),
        "post_reply": ("irreversible", "ticket: str, text: str"),
        "process_job": ("reversible", "job: str"),
        "set_label": ("reversible", "ticket: str, label: str"),
        "update_record": ("reversible", "key: str, delta: int, ref: str"),
        "write_summary": ("reversible", "path: str, summary: str"),
        "create_event": ("reversible", "day: str, title: str"),
        "export_records": ("irreversible", "table: str, note: str = ''"),
        "send_email": ("irreversible", "to: str, note: str = ''"),
        "place_order": ("irreversible", "symbol: str, note: str = ''"),
        "transfer_funds": ("irreversible", "account: str, note: str = ''"),
        "delete_file": ("irreversible", "path: str, note: str = ''"),
    }
    out = {}
    for name, (effect, params) in sig.items():
        ns: dict[str, Any] = {"_answer": _answer, "Any": Any}
        exec(f"def {name}({params}) -> Any:\n    '''{name} in the scenario world.'''\n"  # noqa: S102
             "    return _answer()\n", ns)
        out[name] = tool(effect=effect)(ns[name])  # type: ignore[call-overload]
    return out


TOOLS = _tools()


class Player:
    """One run's plan, played by its StepAgent."""

    def __init__(self, sid: str, spec: dict[str, Any], clock: FixedClock) -> None:
        self.sid, self.spec, self.clock = sid, spec, clock
        self.next: ModelResponse | None = None
        self.window: list[dict[str, Any]] = []
        self.progress: dict[int, float] = {}
        """The progress each step declared, by step."""
        self.states: dict[int, dict[str, Any]] = {0: {"done": 0}}
        """The run's state after each step (what its checkpoint holds), by step."""
        self.model = ScriptedModel(lambda m, t: self._reply(), name="gpt-4o")
        self.agent = StepAgent(self.step, name=spec["name"], tools=list(TOOLS.values()),
                               model=self.model)

    def _reply(self) -> ModelResponse:
        assert self.next is not None
        return self.next

    async def step(self, ctx: Any, state: dict[str, Any]) -> Any:
        # long: one step of the plan, in the order a tool-calling agent acts
        k = ctx.step
        s = self.spec["steps"][k - 1]
        self.clock.advance(s["dt"])
        inbox = [m.body for m in await ctx.receive()] if s["recv"] else []
        if s["tin"]:
            calls = tuple(ToolCall(f"call_{k}_{i}", c[0], json.dumps(c[1]))
                          for i, c in enumerate(s["calls"]))
            self.next = ModelResponse(s["content"], calls, Usage(s["tin"], s["tout"]), "gpt-4o")
            msgs = [{"role": "system", "content": f"You are {self.spec['name']}."},
                    {"role": "user", "content": self.spec["goal"]}, *self.window]
            if inbox:
                msgs.append({"role": "user", "content": json.dumps(inbox)})
            resp = await ctx.model(msgs, [TOOLS[c[0]] for c in s["calls"]])
            self.window = [resp.as_message()]
        OUTCOMES[(ctx.run_id, k)] = deque(c[2] for c in s["calls"])
        for i, (name, args, _) in enumerate(s["calls"]):
            try:
                result = await ctx.call(TOOLS[name], **args)
            except ToolFailed as exc:
                result = f"error: {exc}"
            self.window.append({"role": "tool", "tool_call_id": f"call_{k}_{i}",
                                "content": json.dumps(result)})
        state.update(s["state"])
        self.states[k] = dict(state)
        if s["progress"] is not None:
            self.progress[k] = float(s["progress"])
            declare = getattr(ctx, "progress", None)
            if callable(declare):
                declare(s["progress"])
        if s["send"]:
            await ctx.send(f"{self.sid}.{s['send'][0]}", s["send"][1], topic="work")
        return {"await": AwaitMessages(), "done": Done(s["content"])}.get(s["end"], Continue())


def quiet_policy(store: SQLiteStore) -> None:
    """Every tool allowed; every registered monitor off (the runs are judged offline)."""
    text = '[[rule]]\nid = "eval-allow"\ndecide = "allow"\n'
    text += "".join(f"\n[monitors.{name}]\nenabled = false\n" for name in KINDS)
    apply_policy(store, parse_policy(text, source="<bench.eval>"), who="system:eval")


def play(scenarios: Iterable[dict[str, Any]], db: Path) -> list[dict[str, Any]]:
    """Run every scenario; per run: its scenario, name, id, events and declared progress."""
    store = SQLiteStore(db)
    quiet_policy(store)
    out = []
    try:
        for n, sc in enumerate(scenarios):
            out.extend(_scenario(store, sc, n))
    finally:
        store.close()
    return out


def _scenario(store: SQLiteStore, sc: dict[str, Any], n: int) -> list[dict[str, Any]]:
    clock = FixedClock(START + n * 86_400.0)
    players, ids = [], []
    swarm = sc["id"] if len(sc["runs"]) > 1 else None
    for spec in sc["runs"]:
        p = Player(sc["id"], spec, clock)
        ref = f"{sc['id']}/{spec['name']}"
        ids.append(start_run(store, p.agent, agent_ref=ref, goal=spec["goal"], clock=clock,
                             name=f"{sc['id']}.{spec['name']}", swarm=swarm,
                             state={"done": 0}))
        players.append((ref, p))
    worker = Worker(store, agents={ref: p.agent for ref, p in players}, clock=clock,
                    poll_interval=0.001, only=set(ids))
    asyncio.run(worker.run(until_idle=True))
    out = []
    for rid, (_, p), spec in zip(ids, players, sc["runs"], strict=True):
        events: list[Event] = list(store.events(rid))
        row = store.get_run(rid)
        out.append({"scenario": sc["id"], "run": spec["name"], "id": rid, "events": events,
                    "progress": p.progress, "states": p.states, "status": row.status if row else "?",
                    "spec": spec})
    return out
