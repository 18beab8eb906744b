"""Seals over a store's life: the file versions of an effect an operator resolved as
done, and a store written by release 0.1.0 (no seals) that new code keeps writing to.

Rows are changed with a plain sqlite3 connection on a copy, as an intruder would.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests import swarm_agents
from tether import Done, StepAgent, Worker, start_run
from tether.audit import VerifyReport, verify_store
from tether.control import resolve_effect
from tether.core.seals import files_digest, seal_of
from tether.errors import UsageError
from tether.provenance import rollback as rb
from tether.provenance.fork import fork
from tether.runtime.holding import holding
from tether.store.records import EffectRow
from tether.store.sqlite import SQLiteStore
from tether.tools.files import fs_move, fs_write

FIXTURE = Path(__file__).parent / "fixtures" / "store-0.1.0.db"


def forged(path: Path, sql: str, args: tuple[Any, ...]) -> VerifyReport:
    """Verify a copy of the store at ``path`` with one raw UPDATE applied."""
    copy = path.with_name("forged-" + path.name)
    shutil.copyfile(path, copy)
    raw = sqlite3.connect(copy)
    with raw:
        raw.execute(sql, args)
    raw.close()
    store = SQLiteStore(copy, create=False)
    try:
        return verify_store(store)
    finally:
        store.close()
        copy.unlink()


# -- a file effect resolved as done by an operator ----------------------------------

def _in_doubt_write(store: SQLiteStore, ws: Path) -> tuple[str, str]:
    """A run whose fs_write of r.txt happened but was left in doubt (as after a kill
    between the tool and its result), journaled the way the runtime journals it."""
    run = start_run(store, swarm_agents.swarmer, agent_ref=swarm_agents.REF, goal="g",
                    workspace=ws, state={"me": "r", "plan": []})
    (ws / "r.txt").write_text("written before the kill\n")
    with holding(store, run) as j:
        assert j is not None
        intent = j.append("effect.intent", {
            "i": 0, "fp": "f", "tool": "fs_write", "effect": "reversible", "idempotent": False,
            "arguments": {"path": "r.txt", "content": "written before the kill\n"}}, step=1)
        row = EffectRow(id=intent.id, run=run, epoch=0, step=1, idx=0, tool="fs_write",
                        effect="reversible", idempotent=False, key=intent.id, status="intent",
                        arguments=intent.payload["arguments"])
        j.append("effect.in_doubt", {"i": 0, "tool": "fs_write", "reason": "killed"}, step=1,
                 causes=(intent.id,))
        j.effect(dataclasses.replace(row, status="in_doubt"))
        j.append("run.paused", {"reason": "in doubt"}, step=1)
        j.flush_sync()
    return run, intent.id


def test_a_resolved_file_effect_journals_its_versions_and_they_are_checked(
        tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    store = SQLiteStore(path)
    try:
        run, effect = _in_doubt_write(store, tmp_path / "ws")
        resolve_effect(store, effect, "done", result="checked by hand", who="human:t")
        resolved = [e for e in store.events(run) if e.kind == "effect.resolved"]
        (version,) = store.versions(events=[effect])
        assert resolved[0].payload["files"] == {"r.txt": version.hash} and version.hash
        store.erase_payload(resolved[0].id)
        assert verify_store(store).ok
    finally:
        store.close()
    report = forged(path, "UPDATE versions SET hash = ? WHERE event = ?", ("0" * 64, effect))
    assert report.first_bad is not None and f"effect {effect}" in report.first_bad


# -- a store written by release 0.1.0 ---------------------------------------------------

def test_an_old_store_gets_sealed_events_beside_its_unsealed_ones(tmp_path: Path) -> None:
    def step(ctx: Any, state: dict[str, Any]) -> Any:
        state["n"] = state.get("n", 0) + 1
        return Done() if state["n"] >= 2 else None

    agent = StepAgent(step, name="new")
    path = tmp_path / "old.db"
    shutil.copyfile(FIXTURE, path)
    store = SQLiteStore(path, create=False)  # migrated here
    try:
        old = [e for r in store.all_run_ids() for e in store.events(r)]
        assert old and not any(e.seal for e in old)
        run = start_run(store, agent, agent_ref="new", goal="g")
        asyncio.run(Worker(store, agents={"new": agent}).run(until_idle=True))
        finished = [e for e in store.events(run) if e.kind == "step.finished"]
        assert all(e.seal for e in finished)
        store.erase_payload(finished[0].id)
        store.erase_payload(next(e for e in old if e.kind == "step.finished").id)
        assert verify_store(store).problems == []
    finally:
        store.close()
    # A forged row of the old part is found through its payload, as before seals.
    intent = next(e for e in old if e.kind == "effect.intent")
    args = orjson.dumps({**intent.payload["arguments"], "path": "elsewhere"})
    report = forged(path, "UPDATE effects SET arguments = ? WHERE id = ?", (args, intent.id))
    assert report.first_bad is not None and f"effect {intent.id}" in report.first_bad
    # A forged checkpoint of the new part is found under its erased step.finished.
    report = forged(path, "UPDATE checkpoints SET body = ? WHERE step = 1 AND rk = "
                    "(SELECT rk FROM run_keys WHERE id = ?)", (b"{}", run))
    assert report.first_bad is not None and "checkpoint epoch 0 step 1" in report.first_bad


# -- lineage links of an erased rollback or fork ------------------------------------

async def _writes(ctx: Any, state: dict[str, Any]) -> Any:
    n = state["n"] = state.get("n", 0) + 1
    await ctx.call(fs_write, path=f"step-{n}.txt", content=f"step {n}\n")
    return Done() if n >= 3 else None


WRITES = StepAgent(_writes, name="writes", tools=[fs_write])


@pytest.mark.parametrize("kind", ["epoch", "fork"])
def test_the_lineage_link_of_an_erased_rollback_or_fork_is_still_checked(
        tmp_path: Path, kind: str) -> None:
    path = tmp_path / "l.db"
    store = SQLiteStore(path)
    try:
        run = start_run(store, WRITES, agent_ref="writes", goal="g", workspace=tmp_path / "ws")
        asyncio.run(Worker(store, agents={"writes": WRITES}).run(until_idle=True))
        child = fork(store, run, 2, shared_workspace=True, who="human:t", agents={"writes": WRITES})
        rb.rollback(store, run, 1, who="human:t")
        lineage = [e for r in (run, child) for e in store.events(r)
                   if e.kind == "rollback" or (e.kind == "run.started" and r == child)]
        assert len(lineage) == 2 and all(dict(e.seal).get("links") for e in lineage)
        for e in lineage:
            store.erase_payload(e.id)
        assert verify_store(store).problems == []
    finally:
        store.close()
    report = forged(path, "UPDATE links SET src_step = src_step + 1 WHERE kind = ?", (kind,))
    assert report.first_bad is not None and "provenance index" in report.first_bad
    assert "payload erased" in report.first_bad and "seal" in report.first_bad


# -- the file versions of an effect, together ---------------------------------------------

async def _moves(ctx: Any, state: dict[str, Any]) -> Any:
    await ctx.call(fs_write, path="a.txt", content="a\n")
    await ctx.call(fs_move, src="a.txt", dst="b.txt")
    return Done()


MOVES = StepAgent(_moves, name="moves", tools=[fs_write, fs_move])


@pytest.mark.parametrize("erased", [True, False], ids=["erased", "kept"])
def test_one_file_version_removed_from_an_effect_is_found(tmp_path: Path, erased: bool) -> None:
    # b.txt's only version: the numbering cannot tell; the effect's set of files can.
    path = tmp_path / "m.db"
    store = SQLiteStore(path)
    try:
        run = start_run(store, MOVES, agent_ref="moves", goal="g", workspace=tmp_path / "ws")
        asyncio.run(Worker(store, agents={"moves": MOVES}).run(until_idle=True))
        move = next(e for e in store.events(run) if e.kind == "effect.intent"
                    and e.payload["tool"] == "fs_move")
        done = next(e for e in store.events(run) if e.kind == "effect.done"
                    and e.causes[0] == move.id)
        assert set(done.payload["after"]["files"]) == {"a.txt", "b.txt"}
        if erased:
            store.erase_payload(done.id)
        assert verify_store(store).ok
    finally:
        store.close()
    report = forged(path, "DELETE FROM versions WHERE event = ? AND key = 'b.txt'", (move.id,))
    assert report.first_bad is not None and f"effect {move.id}" in report.first_bad


# -- rollback refuses a forged effect row -------------------------------------------------

@pytest.mark.parametrize("erased", [True, False], ids=["erased", "kept"])
def test_a_rollback_refuses_to_run_an_undo_the_journal_does_not_vouch_for(
        tmp_path: Path, erased: bool) -> None:
    path = tmp_path / "r.db"
    ws = tmp_path / "ws"
    store = SQLiteStore(path)
    try:
        run = start_run(store, WRITES, agent_ref="writes", goal="g", workspace=ws)
        asyncio.run(Worker(store, agents={"writes": WRITES}).run(until_idle=True))
        last = next(e for e in store.effects(run=run) if e.step == 3)
        if erased:
            for e in store.events(run):
                if e.kind in ("effect.intent", "effect.done") and last.id in (e.id, *e.causes):
                    store.erase_payload(e.id)
        before = {p.name: p.read_bytes() for p in ws.iterdir()}
    finally:
        store.close()
    _forge_undo(path, last)
    store = SQLiteStore(path, create=False)
    try:
        with pytest.raises(UsageError, match=f"effect {last.id} .*does not match the journal"):
            rb.rollback(store, run, 1, who="human:t")
        assert {p.name: p.read_bytes() for p in ws.iterdir()} == before  # nothing undone
        row = store.get_run(run)
        assert row is not None and row.epoch == 0 and row.status == "done"
        assert not verify_store(store).ok
    finally:
        store.close()


def _forge_undo(path: Path, eff: EffectRow) -> None:
    """Point ``eff``'s stored undo at another file (step-1.txt), as a raw-SQL forger would."""
    undo = dict(eff.undo or {})
    undo["arguments"] = {"entries": [{**undo["arguments"]["entries"][0], "path": "step-1.txt"}]}
    raw = sqlite3.connect(path)
    with raw:
        raw.execute("UPDATE effects SET undo = ? WHERE id = ?", (orjson.dumps(undo), eff.id))
    raw.close()


def test_a_settled_effect_seals_only_the_paths_that_got_a_version() -> None:
    files = {"a.txt": "1" * 64, "b.txt": "2" * 64}
    done = {"i": 0, "result": "moved", "undo": None, "after": {"files": files}}
    assert dict(seal_of("effect.done", done))["files"] == files_digest(files)
    late = {**done, "settled": {"outcome": "done"}, "recorded": ["b.txt"]}
    assert dict(seal_of("effect.done", late))["files"] == files_digest({"b.txt": "2" * 64})


def test_a_fork_refuses_to_rewind_its_copy_with_a_forged_undo(
        tmp_path: Path) -> None:
    path = tmp_path / "f.db"
    store = SQLiteStore(path)
    try:
        run = start_run(store, WRITES, agent_ref="writes", goal="g", workspace=tmp_path / "ws")
        asyncio.run(Worker(store, agents={"writes": WRITES}).run(until_idle=True))
        last = next(e for e in store.effects(run=run) if e.step == 3)
        runs = len(store.list_runs())
    finally:
        store.close()
    _forge_undo(path, last)
    store = SQLiteStore(path, create=False)
    try:
        with pytest.raises(UsageError, match=f"effect {last.id} .*does not match the journal"):
            fork(store, run, 1, who="human:t", agents={"writes": WRITES})
        assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == ["ws"]  # no copy made
        assert len(store.list_runs()) == runs
    finally:
        store.close()
