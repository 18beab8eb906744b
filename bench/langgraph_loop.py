"""LangGraph's side: the same loop on a StateGraph checkpointed by SqliteSaver.

The saver's connection is a real file in WAL mode at ``synchronous=FULL``,
like tether's store. The reference runs with ``durability="sync"``: every step's
checkpoint is on disk before the next step starts. tether lets a run's next step
start while the previous step's commit syncs (up to four in flight, never past
an effect), which is closest to LangGraph's ``durability="async"``: that mode is
measured too (variant ``async``).

Variants (all append the same message per step):

``plain`` (the reference)
    ``messages`` is a plain ``list`` field without a reducer, as a naive agent
    state is: the node returns the whole list, so every checkpoint and every
    pending write holds the whole conversation. The loop runs inside one graph
    (a conditional edge back to the node), one superstep per step.
``plain, invoke per step``
    The same state, but one ``invoke`` per step on a thread id. LangGraph then
    writes three checkpoints per step (input, then the input applied, then the
    node's result), so it is measured only at small N.
``add reducer``
    ``Annotated[list, operator.add]``: the node returns only the new message;
    checkpoints still hold the whole list.
``DeltaChannel`` (beta in LangGraph)
    ``Annotated[list, DeltaChannel(...)]``: checkpoints hold a snapshot every
    100 updates and the writes in between.
"""

from __future__ import annotations

import gc
import operator
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypedDict

from bench.workload import db_bytes, fresh_db, message, remove_db

try:
    from langgraph.checkpoint.sqlite import SqliteSaver
    from langgraph.graph import END, START, StateGraph
except ImportError as exc:  # pragma: no cover - the bench extra is missing
    raise SystemExit("the benchmark needs LangGraph: pip install -e '.[bench]' "
                     f"(langgraph, langgraph-checkpoint-sqlite); {exc}") from exc

try:
    from langgraph.channels import DeltaChannel
except ImportError:  # older LangGraph: the variant is skipped
    DeltaChannel = None


class PlainState(TypedDict):
    messages: list[dict[str, Any]]
    n: int


class AddState(TypedDict):
    messages: Annotated[list[dict[str, Any]], operator.add]
    n: int


def _extend(state: Sequence[Any] | None, writes: Sequence[Sequence[Any]]) -> list[Any]:
    out = list(state or ())
    for w in writes:
        out.extend(w)
    return out


if DeltaChannel is not None:
    class DeltaState(TypedDict):
        messages: Annotated[list[dict[str, Any]], DeltaChannel(_extend)]
        n: int


def plain_node(state: dict[str, Any]) -> dict[str, Any]:
    """Return the whole list with one more message (no reducer: the value is replaced)."""
    msgs = state.get("messages") or []
    return {"messages": [*msgs, message(len(msgs))]}


def append_node(state: dict[str, Any]) -> dict[str, Any]:
    """Return only the new message (a reducer appends it)."""
    return {"messages": [message(len(state.get("messages") or []))]}


def _route(state: dict[str, Any]) -> str:
    return "step" if len(state["messages"]) < state["n"] else END


@dataclass(frozen=True, slots=True)
class Variant:
    """One way of writing the loop in LangGraph."""

    key: str
    label: str
    state: type
    node: Callable[[dict[str, Any]], dict[str, Any]]
    invoke_per_step: bool = False
    durability: str = "sync"


def variants() -> list[Variant]:
    """The variants this LangGraph supports, reference first."""
    out = [Variant("plain", "plain list, loop in graph", PlainState, plain_node),
           Variant("async", "plain list, loop in graph, durability=async", PlainState,
                   plain_node, durability="async"),
           Variant("invoke", "plain list, invoke per step", PlainState, plain_node, True),
           Variant("add", "add reducer, loop in graph", AddState, append_node)]
    if DeltaChannel is not None:
        out.append(Variant("delta", "DeltaChannel (beta), loop in graph", DeltaState, append_node))
    return out


def bare_step_seconds(n: int) -> float:
    """Seconds per call of the reference node alone (it copies the list, as a naive node does)."""
    state: dict[str, Any] = {"messages": []}
    t0 = time.perf_counter()
    for _ in range(n):
        state = plain_node(state)
    return (time.perf_counter() - t0) / n


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, check_same_thread=False)
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    conn.execute("PRAGMA synchronous=FULL")
    if mode != "wal" or conn.execute("PRAGMA synchronous").fetchone()[0] != 2:
        raise RuntimeError("could not put the LangGraph database in WAL, synchronous=FULL")
    return conn


def _compile(v: Variant, saver: SqliteSaver) -> Any:
    g = StateGraph(v.state)
    g.add_node("step", v.node)
    g.add_edge(START, "step")
    if v.invoke_per_step:
        g.add_edge("step", END)
    else:
        g.add_conditional_edges("step", _route)
    return g.compile(checkpointer=saver)


@dataclass(slots=True)
class LGSample:
    """One LangGraph run of the loop at one N."""

    variant: str
    n: int
    seconds_per_step: float
    bytes_before: int
    bytes_after: int
    checkpoints: int
    load_seconds: list[float] = field(default_factory=list)
    list_seconds: list[float] = field(default_factory=list)

    @property
    def bytes_per_step(self) -> float:
        return (self.bytes_after - self.bytes_before) / self.n


def run_loop(v: Variant, n: int, workdir: Path, *, load_repeats: int = 0,
             list_repeats: int = 0) -> LGSample:
    """One thread of N steps; optionally time state loads and checkpoint listings after it."""
    path = fresh_db(workdir, f"langgraph-{v.key}-n{n}")
    conn = _connect(path)
    try:
        saver = SqliteSaver(conn)
        saver.setup()
        app = _compile(v, saver)
        config: Any = {"configurable": {"thread_id": "bench"}, "recursion_limit": n + 10}
        before = db_bytes(path, conn)
        gc.collect()
        t0 = time.perf_counter()
        if v.invoke_per_step:
            for _ in range(n):
                app.invoke({"n": n}, config, durability=v.durability)
        else:
            app.invoke({"messages": [], "n": n}, config, durability=v.durability)
        wall = time.perf_counter() - t0
        count = conn.execute("SELECT count(*) FROM checkpoints").fetchone()[0]
        sample = LGSample(v.key, n, wall / n, before, db_bytes(path, conn), count)
        _time_reads(app, saver, n, load_repeats, list_repeats, sample)
        return sample
    finally:
        conn.close()
        remove_db(path)


def _time_reads(app: Any, saver: SqliteSaver, n: int, load_repeats: int, list_repeats: int,
                sample: LGSample) -> None:
    """``get_state`` (the latest state) and ``saver.list`` (every checkpoint), each timed."""
    config: Any = {"configurable": {"thread_id": "bench"}}
    for _ in range(load_repeats):
        t0 = time.perf_counter()
        values = app.get_state(config).values
        sample.load_seconds.append(time.perf_counter() - t0)
        if len(values["messages"]) != n:
            raise RuntimeError(f"LangGraph loaded {len(values['messages'])} messages, expected {n}")
    for _ in range(list_repeats):
        t0 = time.perf_counter()
        listed = sum(1 for _ in saver.list(config))
        sample.list_seconds.append(time.perf_counter() - t0)
        if listed != sample.checkpoints:
            raise RuntimeError(f"LangGraph listed {listed} checkpoints of {sample.checkpoints}")
        gc.collect()
