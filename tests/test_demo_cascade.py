"""The demo's bad night: the router misroutes tickets, its messages corrupt the
dispatcher's queue files, and the cascade rollback the demo prints puts every one of
those files back byte for byte, journaled, with the audit chains intact."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shlex
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from typer.testing import CliRunner

from tether.cli.app import app
from tether.demo.agents import scripted
from tether.demo.night import run_night

runner = CliRunner()

RIGHT_TEAM = {  # the story: which team each of the night's tickets is for
    "Checkout page returns 500": "infra",
    "Please change the billing address": "billing",
    "Refund request for order 1182": "billing",
    "Database outage in eu-west": "infra",
    "Typo on the pricing page": "product",
    "Password reset emails": "accounts",
    "Security: hundreds of failed logins": "security",
    "Feature request: dark mode": "product",
}


def tether(*args: str) -> tuple[int, str]:
    res = runner.invoke(app, list(args))
    return res.exit_code, res.output


def flat(out: str) -> str:
    """Output as one line (the console wraps long lines)."""
    return " ".join(out.split())


def jsonl(*args: str) -> list[Any]:
    code, out = tether(*args)
    assert code == 0, out
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def right_team(text: str) -> str:
    (team,) = [t for start, t in RIGHT_TEAM.items() if text.startswith(start)]
    return team


def printed(out: str, *must: str, without: str | None = None) -> list[str]:
    """The arguments of the one command line in the demo's output with all of ``must``
    (the program name, whatever it is, dropped)."""
    lines = [ln for ln in out.splitlines() if all(m in ln for m in must)
             and (without is None or without not in ln)]
    assert len(lines) == 1, (must, lines)
    return shlex.split(lines[0], comments=True)[1:]


def sha(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def tree(root: Path) -> dict[str, str | None]:
    return {str(p.relative_to(root)): sha(p) for p in sorted(root.rglob("*")) if p.is_file()}


def test_demo_cascade_rollback_restores_the_files(tmp_path: Path) -> None:
    d = tmp_path / "night"
    code, out = tether("demo", "--dir", str(d))
    assert code == 0, out
    assert "chains intact" in out and "a bad step" in out
    store = str(d / "tether.db")
    ws = d / "workspace"

    # The bad step, from the journal and the story: the router's first step that sent a
    # ticket to the wrong team.
    sent = [e for e in jsonl("--store", store, "events", "router", "--json")
            if e["kind"] == "message.sent"]
    bad = [e for e in sent if any(i["team"] != right_team(i["text"])
                                  for i in e["payload"]["body"]["routed"])]
    assert bad and all(i["team"] == right_team(i["text"]) for e in sent if e["step"] <
                       bad[0]["step"] for i in e["payload"]["body"]["routed"])
    step = bad[0]["step"]
    k = step - 1

    # What the demo printed: the impact and both cascade commands, with the right K.
    assert printed(out, " impact ") == ["--store", store, "impact", f"router@{step}"]
    plan_cmd = printed(out, " rollback ", "--plan")
    real_cmd = printed(out, " rollback ", without="--plan")
    assert real_cmd == ["--store", store, "rollback", "router", "--to", str(k), "--cascade"]
    assert plan_cmd == [*real_cmd, "--plan"]
    assert "--accept-irreversible" not in out  # nothing irreversible is downstream

    # What the bad step reached, as `tether impact` reports it.
    (imp,) = jsonl("--store", store, "impact", f"router@{step}", "--json")
    names = {a["name"] for a in imp["affected"]}
    assert names == {"router", "dispatcher"}
    assert all(e["effect"] == "reversible" for a in imp["affected"] for e in a["effects"])
    effects = {e["id"]: a["name"] for a in imp["affected"] for e in a["effects"]}
    paths = sorted({f["path"] for a in imp["affected"] for f in a["files"]})
    assert effects and paths and all(p.startswith("queues/") for p in paths)

    # The files as they were before the bad step: the same night, stopped just before it.
    when = datetime.fromisoformat(bad[0]["time"]).timestamp()
    before = tmp_path / "before"
    res = asyncio.run(run_night(before, model=scripted(), console=Console(quiet=True),
                                quiet=True, until=when))
    (router,) = [r for r in res.store.list_runs() if r.name == "router"]
    assert router.step == k
    snapshot = {p: sha(before / "workspace" / p) for p in paths}
    assert any(sha(ws / p) != h for p, h in snapshot.items())  # the night corrupted them
    for p in paths:  # and what is there before the bad step is right, by the story
        if (before / "workspace" / p).exists() and p != "queues/index.md":
            lines = (before / "workspace" / p).read_text().splitlines()
            assert all(right_team(ln.split("] ", 1)[1]) == Path(p).stem for ln in lines)

    # --plan changes nothing.
    files_then = tree(ws)
    code, out = tether(*plan_cmd)
    assert code == 0 and "dispatcher" in out and "undo" in out, out
    assert tree(ws) == files_then

    code, out = tether(*real_cmd)
    assert code == 0 and "2 run(s) rolled back" in flat(out), out
    assert {p: sha(ws / p) for p in paths} == snapshot
    assert tree(ws / "queues") == tree(before / "workspace" / "queues")

    undone = {}
    for name in names:
        for e in jsonl("--store", store, "events", name, "--json"):
            if e["kind"] == "effect.undone":
                undone[e["payload"]["effect"]] = name
                assert e["causes"] == [e["payload"]["effect"]]
    assert undone == effects

    code, out = tether("--store", store, "audit", "verify")
    assert code == 0 and out.strip().startswith("ok:"), out

    # A second time: nothing left to do, and nothing is journaled.
    counts = {r["name"]: len(jsonl("--store", store, "events", r["name"], "--json"))
              for r in jsonl("--store", store, "runs", "--json")}
    code, out = tether(*plan_cmd)
    assert code == 0 and "nothing downstream is left to roll back" in flat(out), out
    (again,) = jsonl(*real_cmd, "--json")
    assert again["idle"] and again["plans"] == []
    code, out = tether(*real_cmd)
    assert code == 0 and "nothing downstream is left to roll back" in flat(out), out
    assert {r["name"]: len(jsonl("--store", store, "events", r["name"], "--json"))
            for r in jsonl("--store", store, "runs", "--json")} == counts
    assert {p: sha(ws / p) for p in paths} == snapshot

    # The demo run again says where the router stands, and finds no bad step left.
    code, out = tether("demo", "--dir", str(d))
    assert code == 0 and "chains intact" in out and "a bad step" not in out, out
    assert f"router was rolled back to step {k}" in flat(out)
