"""A swarm's shared budget and pause points are journaled in the store chain (issue 11:
"no setting that governs agents can change without a trace").

Before, ``tether budget --swarm`` and ``tether swarm --pause-...`` wrote the
``swarms`` row directly: who changed a swarm's cap, and when, was nowhere, and an
``UPDATE swarms`` went unnoticed by ``tether audit verify``.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tether import verify_store
from tether.cli.app import app
from tether.control import record_swarm_setting, set_swarm_budget, set_swarm_pause_points
from tether.errors import UsageError
from tether.store.sqlite import SQLiteStore


def cli(db: Path, *args: str) -> tuple[int, str]:
    res = CliRunner().invoke(app, ["--store", str(db), *args])
    return res.exit_code, res.output


def test_budget_and_pause_point_changes_are_in_the_store_chain_with_their_actor(
        tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    SQLiteStore(db).close()
    code, out = cli(db, "budget", "--swarm", "crew", "--set", "steps=50", "--as", "ada")
    assert code == 2 and "tether settings allow-as on" in out, out  # refused by default
    code, out = cli(db, "settings", "allow-as", "on")
    assert code == 0, out
    code, out = cli(db, "budget", "--swarm", "crew", "--set", "steps=50", "--as", "ada")
    assert code == 0, out
    code, out = cli(db, "swarm", "crew", "--pause-every-steps", "4", "--as", "bob")
    assert code == 0, out
    code, out = cli(db, "budget", "--swarm", "crew", "--set", "cost_usd_per_day=2",
                    "--unset", "steps", "--as", "ada")
    assert code == 0, out
    store = SQLiteStore(db)
    chain = [(e.kind, e.scope, e.actor, e.payload) for e in store.store_events()]
    assert chain[0][:2] == ("store.allow_as", "store")
    assert chain[1:] == [
        ("swarm.budget", "swarm:crew", "human:ada", {"budget": {"steps": 50.0}}),
        ("swarm.pause_points", "swarm:crew", "human:bob", {"pause_points": {
            "every_steps": 4, "every_minutes": None, "before_irreversible": False,
            "on_alert": False}}),
        ("swarm.budget", "swarm:crew", "human:ada", {"budget": {"cost_usd_per_day": 2.0}}),
    ]
    assert store.swarm_budget("crew") == {"cost_usd_per_day": 2.0}
    assert store.swarm_pause_points("crew")["every_steps"] == 4
    assert verify_store(store).ok


def test_setting_the_same_value_again_writes_nothing(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "t.db")
    assert record_swarm_setting(store, "crew", "budget", {"steps": 5.0}, who="human:a")
    assert not record_swarm_setting(store, "crew", "budget", {"steps": 5.0}, who="human:a")
    set_swarm_budget(store, "crew", {"steps": 5.0}, [], who="human:a")
    assert len(store.store_events()) == 1


@pytest.mark.parametrize(("sql", "named"), [
    ("UPDATE swarms SET budget = x'7b7d' WHERE name = 'crew'", "budget: stored {}"),
    ("UPDATE swarms SET pause_points = NULL WHERE name = 'crew'", "pause_points: stored None"),
    ("DELETE FROM swarms WHERE name = 'crew'", "its row is missing"),
    ("INSERT INTO swarms VALUES('ghost', x'7b227374657073223a317d', 0, NULL)",
     "swarm ghost: its settings"),
])
def test_a_swarm_row_changed_outside_the_chain_is_named(tmp_path: Path, sql: str,
                                                        named: str) -> None:
    db = tmp_path / "t.db"
    store = SQLiteStore(db)
    set_swarm_budget(store, "crew", {"steps": 5.0}, [], who="human:a")
    set_swarm_pause_points(store, "crew", {"every_steps": 2}, who="human:a")
    assert verify_store(store).ok
    with sqlite3.connect(db) as c:
        c.execute(sql)
    rep = verify_store(store)
    assert not rep.ok
    assert named in rep.problems[0], rep.problems
    assert "tether budget --swarm" in rep.problems[0]  # says how to fix it
    code, out = cli(db, "audit", "verify")
    assert code != 0 and f"swarm {'ghost' if 'ghost' in sql else 'crew'}" in out
    assert "Traceback" not in out


def test_a_bad_pause_point_writes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    SQLiteStore(db).close()
    code, out = cli(db, "swarm", "crew", "--pause-every-steps", "0")
    assert code != 0 and "Traceback" not in out
    assert SQLiteStore(db).store_events() == []
    with pytest.raises(UsageError):
        record_swarm_setting(SQLiteStore(db), "", "budget", {}, who="human:a")


def test_an_older_stores_swarm_rows_are_journaled_by_the_migration(tmp_path: Path) -> None:
    """The 0.1.0 fixture (the demo's store) has the night-shift's budget in a row written
    directly; opening it journals that row, by the migration, and verify holds it."""
    import shutil
    db = tmp_path / "old.db"
    shutil.copy(Path(__file__).parent / "fixtures" / "store-0.1.0.db", db)
    store = SQLiteStore(db)
    got = [(e.kind, e.scope, e.actor) for e in store.store_events()
           if e.kind.startswith("swarm.")]
    assert got == [("swarm.budget", "swarm:night-shift", "system:migration")]
    assert verify_store(store).ok
    store.close()
    assert len(SQLiteStore(db).store_events()) == len(got)  # once, not at every open
