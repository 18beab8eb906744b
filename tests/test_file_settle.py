"""The built-in file tools settle themselves after a crash between intent and result.

A real worker subprocess SIGKILLs itself at an exact point inside a file tool (after its
intent is durable: before the tool acts, or after it acted and before ``effect.done``),
then a worker in this process takes the run over. The tool compares the workspace with
the before- and expected after-images its intent journaled: ``after`` settles as done
(``effect.done`` with ``settled``), ``before`` runs it again (``effect.retried`` with
``settled``), and the run finishes without an operator, every line written once.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import crashkit as ck
from tests import filecrash as fc
from tether import Worker, start_run, verify_store
from tether.control import resolve_effect
from tether.core.checkpoint import restore
from tether.provenance.rollback import rollback
from tether.store.sqlite import SQLiteStore
from tether.tools.fssettle import INLINE_LIMIT, decide

pytestmark = pytest.mark.crash

OPS: list[tuple[str, dict[str, Any]]] = [
    ("fs_mkdir", {"path": "notes/deep"}),
    ("fs_write", {"path": "notes/a.txt", "content": "one\n"}),
    ("fs_append", {"path": "notes/a.txt", "content": "two\n"}),
    ("fs_move", {"src": "notes/a.txt", "dst": "notes/b.txt"}),
    ("fs_write", {"path": "notes/tmp.txt", "content": "scratch\n"}),
    ("fs_delete", {"path": "notes/tmp.txt"}),
    ("fs_append", {"path": "notes/b.txt", "content": "three\n"}),
]
RESULTS = ["created directory notes/deep (and notes)", "wrote 4 bytes to notes/a.txt",
           "appended 4 bytes to notes/a.txt (now 8 bytes)", "moved notes/a.txt to notes/b.txt",
           "wrote 8 bytes to notes/tmp.txt", "deleted notes/tmp.txt",
           "appended 6 bytes to notes/b.txt (now 14 bytes)"]
KILLS = [f"{t}:{when}" for t in ("fs_mkdir", "fs_write", "fs_append", "fs_move", "fs_delete")
         for when in ("before", "after")]


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, Path, SQLiteStore]]:
    monkeypatch.setenv(ck.SIDE_ENV, str(tmp_path / "side.log"))
    monkeypatch.delenv(fc.KILL_ENV, raising=False)
    ws = tmp_path / "ws"
    ws.mkdir()
    store = SQLiteStore(tmp_path / "crash.db")
    yield tmp_path, ws, store
    store.close()


def _crash(folder: Path, store: SQLiteStore, ws: Path, kill: str,
           ops: list[tuple[str, dict[str, Any]]], **extra_env: str) -> str:
    """Start the run, let a worker subprocess kill itself at ``kill``; return the run id."""
    run = start_run(store, fc.scribe, agent_ref="tests.filecrash:scribe", goal="scribe",
                    workspace=ws, state={"ops": ops, "log": []})
    w = ck.spawn_worker(folder / "crash.db", folder / "side.log", tag="w", lease_ttl=0.3,
                        extra_env={fc.KILL_ENV: kill, **extra_env})
    assert w.proc.wait(timeout=60) == -9, w.log.read_text()[-2000:]  # SIGKILLed itself
    tool = kill.split(":")[0]
    bare = [e for e in store.effects(run=run) if e.status == "intent"]
    assert [e.tool for e in bare] == [tool], "the kill left its intent without a result"
    return run


def _state(store: SQLiteStore, run: str) -> dict[str, Any]:
    row = store.get_run(run)
    assert row is not None
    chain = store.checkpoint_chain(run, row.epoch, row.step)
    assert chain is not None
    return restore(chain.key_body, store.chunk, chain.deltas)


@pytest.mark.parametrize("kill", KILLS)
def test_a_killed_file_effect_settles_itself(env: tuple[Path, Path, SQLiteStore],
                                             kill: str) -> None:
    folder, ws, store = env
    run = _crash(folder, store, ws, kill, OPS)
    ck.finish(store, timeout=60)
    row = store.get_run(run)
    assert row is not None and row.status == "done", (row and row.status, row and row.reason)
    events = store.events(run)
    assert not [e for e in events if e.kind in ("effect.in_doubt", "run.paused")]
    tool, when = kill.split(":")
    killed = next(e for e in events if e.kind == "effect.intent"
                  and e.payload["tool"] == tool)
    after = [e for e in events if e.causes[:1] == (killed.id,)]
    if when == "after":  # it happened: done, from the files, and not run again
        assert [e.kind for e in after] == ["effect.done"]
        assert after[0].payload["settled"]["outcome"] == "done"
        assert after[0].payload["undo"]["tool"] == "fs_restore"
    else:  # it did not happen: run again once
        assert [e.kind for e in after] == ["effect.retried", "effect.done"]
        assert after[0].payload["settled"]["outcome"] == "not_done"
        assert "settled" not in after[1].payload
    # Every line written once, every result as if nothing had happened.
    assert (ws / "notes/b.txt").read_bytes() == b"one\ntwo\nthree\n"
    assert sorted(p.name for p in (ws / "notes").iterdir()) == ["b.txt", "deep"]
    assert _state(store, run)["log"] == RESULTS
    assert verify_store(store).ok
    # The versions name the settled effect as the files' writer, as a live one would.
    versions = store.current_versions(f"file:{ws.resolve()}", ["notes/b.txt"])
    assert versions["notes/b.txt"].hash is not None
    # A settled effect's undo is the real one: rolling the whole run back empties the folder.
    rollback(store, run, 0, who="human:t")
    assert list(ws.iterdir()) == []


def test_old_intents_without_images_still_wait_for_an_operator(
        env: tuple[Path, Path, SQLiteStore]) -> None:
    # Intents journaled by tether 0.1.0 carry no before/after images: never settled by
    # the files, the effect stays in doubt and the run pauses, as before.
    folder, ws, store = env
    run = _crash(folder, store, ws, "fs_append:after", OPS[:3], **{fc.OLD_ENV: "1"})
    intent = next(e for e in store.events(run) if e.kind == "effect.intent"
                  and e.payload["tool"] == "fs_append")
    assert "prepared" not in intent.payload
    ck.finish(store, timeout=60)
    row = store.get_run(run)
    assert row is not None and row.status == "paused"
    doubt = [e for e in store.effects(run=run) if e.status == "in_doubt"]
    assert [e.id for e in doubt] == [intent.id]
    resolve_effect(store, intent.id, "done", result="appended by hand", who="human:t")
    ck.finish(store)
    assert ck.status_of(store, run) == "done"
    assert (ws / "notes/a.txt").read_bytes() == b"one\ntwo\n"


def test_a_file_changed_by_someone_else_is_left_to_a_human(
        env: tuple[Path, Path, SQLiteStore]) -> None:
    folder, ws, store = env
    run = _crash(folder, store, ws, "fs_append:after", OPS[:3])
    (ws / "notes/a.txt").write_bytes(b"one\nsomeone else\n")
    ck.finish(store, timeout=60)
    assert ck.status_of(store, run) == "paused"
    doubt = [e for e in store.events(run) if e.kind == "effect.in_doubt"]
    assert len(doubt) == 1
    assert "fs_append could not settle it: notes/a.txt is neither as before" in \
        doubt[0].payload["reason"]


def test_a_late_settled_write_cites_and_is_cited_as_the_files_were_when_they_looked(
        env: tuple[Path, Path, SQLiteStore]) -> None:
    # Between the crash and the settling another run reads the file (it sees the line, but
    # the write has no version yet) and writes the same bytes again: the settled write is
    # done, and gets no version over the later write, which stays the file's last writer.
    folder, ws, store = env
    y = _crash(folder, store, ws, "fs_append:after",
               [*OPS[:2], ("fs_append", {"path": "notes/a.txt", "content": "y\n"})])
    x = start_run(store, fc.scribe, agent_ref="tests.filecrash:scribe", goal="other",
                  workspace=ws, state={"ops": [("fs_read", {"path": "notes/a.txt"}), (
                      "fs_write", {"path": "notes/a.txt", "content": "one\ny\n"})], "log": []})
    asyncio.run(Worker(store, only={x}, poll_interval=0.01).run(until_idle=True))
    assert ck.status_of(store, x) == "done" and ck.status_of(store, y) == "running"
    ck.finish(store, timeout=60)
    assert ck.status_of(store, y) == "done"
    ys = {e.payload["tool"]: e for e in store.events(y) if e.kind == "effect.intent"}
    read = next(e for e in store.events(x) if e.kind == "tool.called")
    assert read.payload["result"] == "one\ny\n"
    assert read.causes == (ys["fs_write"].id,)  # the last version there was when it read
    done = next(e for e in store.events(y) if e.causes[:1] == (ys["fs_append"].id,))
    assert done.payload["settled"]["outcome"] == "done"
    [v] = store.current_versions(f"file:{ws.resolve()}", ["notes/a.txt"]).values()
    assert v.run == x  # not taken over by the late version of y's append
    assert ys["fs_append"].id not in {w.event for w in store.versions(
        ns=f"file:{ws.resolve()}")}
    # It says which of its paths got a version (none): the audit holds the rows to that,
    # its payload erased or not (the seal covers the recorded paths only).
    assert done.payload["recorded"] == []
    store.erase_payload(done.id)
    assert verify_store(store).problems == []


@pytest.mark.parametrize("last", ["fs_move", "fs_append"])
def test_a_large_before_image_is_a_chunk_the_undo_names(
        env: tuple[Path, Path, SQLiteStore], last: str) -> None:
    folder, ws, store = env
    big = "x" * (INLINE_LIMIT + 1) + "\n"
    ops = [("fs_mkdir", {"path": "notes"}), ("fs_write", {"path": "notes/a.txt", "content": big}),
           (last, {"src": "notes/a.txt", "dst": "notes/b.txt"} if last == "fs_move" else
            {"path": "notes/a.txt", "content": "tail\n"})]
    run = _crash(folder, store, ws, f"{last}:after", ops)
    intent = next(e for e in store.events(run) if e.kind == "effect.intent"
                  and e.payload["tool"] == last)
    image = intent.payload["prepared"]["images"][-1]
    assert image["content_b64"] is None
    if last == "fs_move":  # the whole before-image, stored once as a chunk
        assert store.chunk(image["content_sha256"]) == big.encode()
    else:  # an append's undo cuts the file back: only the length and hash are kept
        assert image["prefix"] == {"size": len(big), "sha256": hashlib.sha256(
            big.encode()).hexdigest()}
    ck.finish(store, timeout=60)
    assert ck.status_of(store, run) == "done"
    done = next(e for e in store.events(run) if e.kind == "effect.done"
                and e.causes[:1] == (intent.id,))
    assert done.payload["settled"]["outcome"] == "done"
    # The undo names what the intent named: the before-image is not copied again.
    assert done.payload["undo"]["arguments"]["entries"] == intent.payload["prepared"]["images"]
    rollback(store, run, 2)  # back to after the big write: the undo gets the bytes back
    assert (ws / "notes/a.txt").read_text() == big
    assert not (ws / "notes/b.txt").exists()


def test_the_decision_is_pure_and_strict() -> None:
    files = {"a": {"before": "h0", "after": "h1"}, "b": {"before": None, "after": "dir"}}
    assert decide(files, {"a": "h1", "b": "dir"})[0] == "done"
    assert decide(files, {"a": "h0", "b": None})[0] == "not_done"
    assert decide(files, {"a": "h1", "b": None}) == (
        "unknown", "some files are as before and others as after: it stopped halfway")
    assert decide(files, {"a": "h9", "b": None})[0] == "unknown"
    # Before == after (a write of the same bytes): done, and nothing runs again.
    assert decide({"a": {"before": "h", "after": "h"}}, {"a": "h"})[0] == "done"
