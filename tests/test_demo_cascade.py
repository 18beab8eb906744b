"""The demo's bad night, caught live: the router starts misrouting tickets at 01:00; the
invariant the demo's policy declares (tether.toml) breaks at the first wrong answer, the
router is quarantined before that answer leaves it, and the dispatcher's queues get
nothing more from it. The summary prints the alert, its evidence, the impact and the
cascade command, and that rollback puts the router back before its bad step, journaled,
with the audit chains intact. Without the invariant the same night reaches the
dispatcher's files (the damage the live catch saves)."""

from __future__ import annotations

import asyncio
import json
import shlex
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from tether.cli.app import app
from tether.demo import agents
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


def first_misrouted_step(store: str) -> int:
    """The router's first step whose state holds a ticket routed to the wrong team, by
    the story (the state after each step, restored from its checkpoints)."""
    (row,) = [r for r in jsonl("--store", store, "runs", "--json") if r["name"] == "router"]
    for step in range(1, row["step"] + 1):
        (state,) = jsonl("--store", store, "state", "router", "--step", str(step))
        if any(h["team"] != right_team(h["text"]) for h in state.get("history", [])):
            return step
    raise AssertionError("the router never misrouted a ticket")


def received_by_dispatcher(store: str) -> list[dict[str, Any]]:
    """The routed items the dispatcher took, with the router step that sent each batch."""
    sent = {e["id"]: e for e in jsonl("--store", store, "events", "router", "--json")
            if e["kind"] == "message.sent"}
    out = []
    for e in jsonl("--store", store, "events", "dispatcher", "--json"):
        if e["kind"] == "message.received":
            for c in e["causes"]:
                out += [{**i, "router_step": sent[c]["step"]}
                        for i in sent[c]["payload"]["body"]["routed"]]
    return out


def test_demo_catches_the_misrouting_live_and_the_cascade_undoes_it(tmp_path: Path) -> None:
    d = tmp_path / "night"
    code, out = tether("demo", "--dir", str(d))
    assert code == 0, out
    assert "chains intact" in out and "caught live" in out
    store = str(d / "tether.db")
    ws = d / "workspace"

    # The alert: the invariant the demo's tether.toml declares, at the first wrong answer's
    # step (the story's, from the router's states), with the quarantine verdict.
    bad = first_misrouted_step(store)
    router_events = jsonl("--store", store, "events", "router", "--json")
    (alert,) = [e for e in router_events if e["kind"] == "alert"]
    p = alert["payload"]
    assert (p["monitor"], p["rule"], p["verdict"]) == (
        "invariants", "routed_to_a_team_it_mentions", "quarantine")
    assert bad <= alert["step"] <= bad + 1
    step = alert["step"]
    off = p["figures"]["offending"]["t"]
    assert off["team"] != right_team(off["text"])
    kinds = {e["id"]: e["kind"] for e in router_events}
    assert {kinds[c] for c in alert["causes"]} == {"step.finished", "model.called"}
    assert all(e["step"] == step for e in router_events if e["id"] in alert["causes"])

    # The router was quarantined there; nothing it decided from then on left it.
    (quarantined,) = [e for e in router_events if e["kind"] == "run.quarantined"]
    assert quarantined["causes"] == [alert["id"]]
    assert [r["status"] for r in jsonl("--store", store, "runs", "--json")
            if r["name"] == "router"] == ["paused"]
    assert not [e for e in router_events if e["kind"] == "message.sent" and e["step"] >= step]
    got = received_by_dispatcher(store)
    assert got and all(i["router_step"] < step for i in got)
    assert all(i["team"] == right_team(i["text"]) for i in got)
    for q in (ws / "queues").glob("*.md"):  # every queued ticket is in its right queue
        if q.name != "index.md":
            assert all(right_team(ln.split("] ", 1)[1]) == q.stem
                       for ln in q.read_text().splitlines())

    # What the demo printed: the alert, its evidence, the impact and the cascade commands.
    assert f"broke at router step {step}" in flat(out) and "quarantined" in flat(out)
    assert printed(out, " events router --kind alert") == [
        "--store", store, "events", "router", "--kind", "alert", "--full"]
    assert printed(out, " impact ") == ["--store", store, "impact", f"router@{step}"]
    plan_cmd = printed(out, " rollback ", "--plan")
    real_cmd = printed(out, " rollback ", without="--plan")
    assert real_cmd == ["--store", store, "rollback", "router", "--to", str(step - 1),
                        "--cascade"]
    assert plan_cmd == [*real_cmd, "--plan"]

    # The night on one page, written beside the store: the alert, what it did, and what
    # waits for a human first (the quarantined router, the pending page).
    page = (d / "night-report.md").read_text()
    assert page.index("Waiting for a human") < page.index("Swarm night")
    assert "quarantined: router" in page and "routed\\_to\\_a\\_team\\_it\\_mentions" in page
    assert "then: run.paused, run.quarantined" in page
    html = (d / "night-report.html").read_text()
    assert "<svg" in html and 'data-kind="alert"' in html
    assert "night-report.html" in out.replace("\n", "")

    # What the bad step reached: the router alone, and no effect to undo.
    (imp,) = jsonl("--store", store, "impact", f"router@{step}", "--json")
    assert {a["name"] for a in imp["affected"]} == {"router"}
    assert [e for a in imp["affected"] for e in a["effects"]] == []

    code, out = tether(*real_cmd)
    assert code == 0 and "1 run(s) rolled back" in flat(out), out
    code, out = tether("--store", store, "audit", "verify")
    assert code == 0 and out.strip().startswith("ok:"), out

    # The demo run again says where the router stands, and finds no bad step left.
    code, out = tether("demo", "--dir", str(d))
    assert code == 0 and "chains intact" in out and "caught live" not in out, out
    assert f"router was rolled back to step {step - 1}" in flat(out)


def test_without_the_invariant_the_same_night_reaches_the_dispatchers_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The damage the live catch saves: the same night with the router's invariant off."""
    off = agents.POLICY.replace('[monitors.agent.router.invariants]\nstages = ["quarantine"]',
                                '[monitors.agent.router.invariants]\nenabled = false')
    assert off != agents.POLICY
    monkeypatch.setattr(agents, "POLICY", off)
    d = tmp_path / "night"
    res = asyncio.run(run_night(d, model=agents.scripted(), console=Console(quiet=True),
                                quiet=True))
    res.store.close()
    store = str(d / "tether.db")
    bad = first_misrouted_step(store)
    (imp,) = jsonl("--store", store, "impact", f"router@{bad}", "--json")
    assert {a["name"] for a in imp["affected"]} == {"router", "dispatcher"}
    undo = [e for a in imp["affected"] for e in a["effects"]]
    assert len(undo) == 7  # 4 fs_append and 3 fs_write on the queues: what the catch saves
    assert any(i["team"] != right_team(i["text"]) for i in received_by_dispatcher(store))


@pytest.mark.parametrize("drift_after", [agents.DRIFT_AFTER, 100])
def test_a_run_of_the_same_right_team_is_not_a_signal(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, drift_after: int) -> None:
    """The negative control: every ticket of the night is for billing, so the router
    answers "billing" every time; with the parroting model too (its repeated answer is
    right). No invariant breaks, nothing is quarantined, every ticket reaches its queue."""
    monkeypatch.setattr(agents, "TICKETS", {
        0: ["Please change the billing address on invoice 2231",
            "Refund request for order 1182, the parcel arrived damaged"],
        1: ["Invoice 77 was charged twice"], 2: ["Refund for a cancelled plan"],
        4: ["Billing email goes to the wrong person", "Invoice PDF is blank"],
        6: ["Refund status for order 1190?"]})
    monkeypatch.setattr(agents, "DRIFT_AFTER", drift_after)
    d = tmp_path / "night"
    res = asyncio.run(run_night(d, model=agents.scripted(), console=Console(quiet=True),
                                quiet=True))
    res.store.close()
    store = str(d / "tether.db")
    runs = {r["name"]: r["status"] for r in jsonl("--store", store, "runs", "--json")}
    assert runs["router"] == "done" and runs["dispatcher"] == "done"
    assert [e for name in ("router", "dispatcher")
            for e in jsonl("--store", store, "events", name, "--json") if e["kind"] == "alert"] \
        == []
    got = received_by_dispatcher(store)
    assert len(got) == 7 and {i["team"] for i in got} == {"billing"}
