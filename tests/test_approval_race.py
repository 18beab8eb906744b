"""Deciders racing for one approval (two browsers, a browser and the CLI): exactly one
decision is journaled, and every loser is told it was decided, never a lease's internals."""

from __future__ import annotations

import threading
from pathlib import Path

from tests.uikit import alerting_world
from tether.approvals import decide
from tether.errors import TetherError
from tether.store.sqlite import SQLiteStore


def test_racing_deciders_get_one_decision_and_a_plain_answer(tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path / "t.db")
    ids = alerting_world(s, tmp_path)
    gate = threading.Barrier(5)
    won: list[str] = []
    lost: list[str] = []

    def go(k: int) -> None:
        gate.wait()
        try:
            row = decide(s, ids["approval"], approve=k != 4, who=f"human:op{k}",
                         note="racing" if k == 4 else None)
            won.append(row.status)
        except TetherError as exc:  # anything but a TetherError fails the test
            lost.append(str(exc))

    threads = [threading.Thread(target=go, args=(k,)) for k in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(lost) == 4, (won, lost)
    assert all(("made once" in m or "decided meanwhile" in m) and "lease" not in m
               for m in lost), lost
    decided = [e for e in s.events(ids["pay"]) if e.kind == "approval.decided"]
    assert len(decided) == 1
