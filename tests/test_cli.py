"""The CLI as a user meets it: the demo, listings, errors, audit, help on every command."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from tether.cli.app import app

runner = CliRunner()


def tether(*args: str) -> tuple[int, str]:
    res = runner.invoke(app, list(args))
    return res.exit_code, res.output


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("demo") / "night"
    code, out = tether("demo", "--dir", str(d))
    assert code == 0, out
    assert "chains intact" in out
    return d


def _all_commands(top: typer.Typer = app, prefix: tuple[str, ...] = ()) -> list[list[str]]:
    """Every command, nested groups included (``ui token create``)."""
    out: list[list[str]] = []
    for info in top.registered_commands:
        out.append([*prefix, info.name or info.callback.__name__])  # type: ignore[union-attr]
    for group in top.registered_groups:
        assert isinstance(group.typer_instance, typer.Typer)
        out += _all_commands(group.typer_instance, (*prefix, group.name or ""))
    return out


def _count(db: Path, sql: str) -> int:
    con = sqlite3.connect(db)
    try:
        return int(con.execute(sql).fetchone()[0])
    finally:
        con.close()


def test_demo_quiet_hours_approval_then_resume(demo_dir: Path) -> None:
    """The first night ends with the page waiting for approval and the digest deferred to
    07:00; after `tether approve`, the rerun pages exactly once and finishes the night."""
    ws, db = demo_dir / "workspace", demo_dir / "tether.db"
    store = str(db)
    assert (ws / "outbox" / "sent.mbox").read_text().count("From tether-demo") == 1
    assert not (ws / "outbox" / "pages.log").exists()
    code, out = tether("--store", store, "approvals", "--json")
    (req,) = [json.loads(line) for line in out.splitlines()]
    assert req["tool"] == "page_oncall" and req["rule"] == "page-at-night"
    code, out = tether("--store", store, "events", "reporter", "--json")
    sleeps = [json.loads(line) for line in out.splitlines()
              if json.loads(line)["kind"] == "run.sleeping"]
    assert any(e["payload"].get("deferred") for e in sleeps)
    before = _count(db, "SELECT count(*) FROM effects")
    code, out = tether("demo", "--dir", str(demo_dir))  # nothing new while it waits
    assert code == 0 and "Resuming" in out and "approval pending" in out
    assert _count(db, "SELECT count(*) FROM effects") == before
    code, out = tether("--store", store, "approve", req["id"])
    assert code == 0, out
    code, out = tether("demo", "--dir", str(demo_dir))
    assert code == 0 and "chains intact" in out
    code, out = tether("demo", "--dir", str(demo_dir))
    assert (ws / "outbox" / "pages.log").read_text().count("PAGE:") == 1
    assert (ws / "outbox" / "sent.mbox").read_text().count("From tether-demo") == 1
    assert len(list((ws / "done").iterdir())) == 8
    assert list((ws / "inbox").iterdir()) == []


def test_runs_and_events_json(demo_dir: Path) -> None:
    store = str(demo_dir / "tether.db")
    code, out = tether("--store", store, "runs", "--json")
    assert code == 0
    runs = [json.loads(line) for line in out.splitlines()]
    assert {r["name"] for r in runs} == {"librarian", "ingest", "triage", "reporter", "router",
                                         "dispatcher"}
    for r in runs:
        assert {"id", "name", "agent", "swarm", "status", "step", "tokens", "cost_usd"} <= set(r)
        assert r["swarm"] == "night-shift"
    code, out = tether("--store", store, "events", "triage", "--json")
    evs = [json.loads(line) for line in out.splitlines()]
    assert [e["seq"] for e in evs] == list(range(1, len(evs) + 1))
    for e in evs:
        # "seal" only on events that make rows (docs/events.md#seals), as in the hash.
        assert set(e) - {"seal"} == {"id", "run", "seq", "epoch", "step", "kind", "time",
                                     "actor", "causes", "payload", "hash"}
    assert {e["kind"] for e in evs if "seal" in e} >= {"step.finished", "effect.intent"}
    assert not any("seal" in e for e in evs if e["kind"] in ("step.started", "model.called"))
    done = [e for e in evs if e["kind"] == "effect.done"]
    intents = {e["id"] for e in evs if e["kind"] == "effect.intent"}
    assert done and all(e["causes"][0] in intents for e in done)


def test_state_show_budget(demo_dir: Path) -> None:
    store = str(demo_dir / "tether.db")
    code, out = tether("--store", store, "state", "triage", "--step", "2")
    assert code == 0 and json.loads(out)["handled"]
    code, out = tether("--store", store, "state", "triage", "--step", "999")
    assert code == 2 and "in the future" in out
    code, out = tether("--store", store, "show", "reporter")
    assert code == 0 and "send_digest" in out
    code, out = tether("--store", store, "budget", "ingest", "--set", "bogus=3")
    assert code == 2 and "unknown budget key" in out
    code, out = tether("--store", store, "budget", "ingest", "--json")
    assert code == 0 and json.loads(out)["budget"] == {"steps": 200.0}


def test_bad_input_is_named(tmp_path: Path, demo_dir: Path) -> None:
    store = str(demo_dir / "tether.db")
    code, out = tether("--store", store, "show", "no-such-run")
    assert code == 2 and "no run 'no-such-run'" in out
    code, out = tether("--store", store, "resolve", "01NOPE", "--done")
    assert code == 2 and "no effect" in out
    code, out = tether("--store", store, "resolve", "01NOPE")
    assert code == 2 and "exactly one of" in out
    code, out = tether("--store", str(tmp_path / "missing.db"), "runs")
    assert code == 2 and "no tether store" in out
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    code, out = tether("--store", str(bad), "runs")
    assert code == 2 and "not a tether store" in out


def test_audit_verify_detects_tampering(tmp_path: Path, demo_dir: Path) -> None:
    copy = tmp_path / "copy.db"
    code, out = tether("--store", str(demo_dir / "tether.db"), "store", "backup", str(copy))
    assert code == 0
    code, out = tether("--store", str(copy), "audit", "verify")
    assert code == 0 and "ok" in out
    with sqlite3.connect(copy) as c:
        c.execute("UPDATE events SET payload = CAST(replace(CAST(payload AS TEXT), 'urgent', "
                  "'routine') AS BLOB) WHERE kind = 'model.called' "
                  "AND CAST(payload AS TEXT) LIKE '%urgent%'")
        assert c.total_changes > 0
    code, out = tether("--store", str(copy), "audit", "verify")
    assert code == 1 and "hash mismatch" in out and "model.called" in out


# Each command's one-line summary (its start) and an option or argument that sets it apart,
# as `--help` must show them. A new command fails here until its help is written down here.
HELP = {
    "alerts ack": ("Record that you looked at an alert", "--note"),
    "analyze": ("Run the registered monitors over a transcript file or a stored run, offline",
                "--policy"),
    "approvals": ("List approval requests (pending ones unless --all)", "--all"),
    "approve": ("Approve a proposed action; the run goes on and runs it", "--always"),
    "audit verify": ("Walk every run's hash chain, its checkpoints and the batch chain", "--json"),
    "audit query": ("The journal's events in a time window", "--alert"),
    "report": ("What happened overnight: what waits for a human first", "--format"),
    "audit keygen": ("Make an Ed25519 key pair for signed checkpoints", "--name"),
    "audit seal": ("Seal the store now: sign a checkpoint of every event", "--key"),
    "audit prove": ("Write an inclusion proof of an event in the newest signed checkpoint",
                    "--out"),
    "audit check-proof": ("Check an inclusion-proof bundle offline", "--key"),
    "audit export": ("Write the signed checkpoints (JSON lines) for a witness", "--since"),
    "audit erase": ("Erase an event's payload and every copy of it", "--reason"),
    "board": ("Show the swarms' blackboards: each key's value and who wrote it", "--swarm"),
    "budget": ("Show a run's (or swarm's) budget and usage, or change it", "--unset"),
    "checkpoints": ("List a run's checkpoints, one line each", "--json"),
    "demo": ("Run a small team of agents through a simulated night on real files", "--pace"),
    "deny": ("Deny a proposed action; the model is told why", "--reason"),
    "events": ("List a run's journal events in order, one line each", "--kind"),
    "export-otel": ("Replay a run's history (or every run's since TIME) as OpenTelemetry spans",
                    "--resource"),
    "fork": ("Start a new run from a step of another", "--shared-workspace"),
    "import": ("Import agent transcripts recorded elsewhere as read-only runs", "--format"),
    "impact": ("Show everything downstream of a step, in every run", "--epoch"),
    "messages": ("List messages between runs, oldest first", "--status"),
    "metrics": ("Serve Prometheus metrics read from the store", "--port"),
    "pause": ("Pause runs at their next safe point", "--agent"),
    "policy apply": ("Check a policy file, then put it in force for the store", "--swarm"),
    "policy check": ("Validate a policy file: print its rule count and hash", "--tool"),
    "policy clear": ("Take the applied policy out of force (journaled)", "--swarm"),
    "policy explain": ("Show which rule decides an action and why", "--effect"),
    "policy show": ("Show the policy in force: its hash, who applied it and when", "--history"),
    "quarantine": ("Contain a run: pause it, hold its messages, mark its writes suspect",
                   "--release"),
    "resolve": ("Settle an in-doubt effect, or a half-done undo", "--not-undone"),
    "resume": ("Resume paused or failed runs", "--accept-change"),
    "rollback": ("Roll a run (--cascade: and everything it reached) back to a step",
                 "--accept-irreversible"),
    "run": ("Start a run of an agent and drive it here until it sleeps, pauses or ends",
            "--detach"),
    "runs": ("List runs, newest first", "--status"),
    "settings allow-as": ("Allow --as NAME and $TETHER_USER on this store, or refuse them",
                          "ON|OFF"),
    "ui token create": ("Create an API token and print it once, as the last line", "--role"),
    "ui token list": ("List API tokens, oldest first", "--json"),
    "ui token revoke": ("Revoke an API token: from now on it authenticates no one", "NAME"),
    "show": ("Show one run: status, its result or last error, what it waits for", "--json"),
    "state": ("Print a run's state (JSON) after a step, restored from its checkpoints",
              "--step"),
    "stop": ("Stop runs now, for good", "--all"),
    "store copy": ("Copy a whole store into a new one", "--key"),
    "store backup": ("Write a consistent online copy of the store",
                     "Where to write the copy (must not exist)"),
    "swarm": ("Show a swarm (runs, shared budget, pause points), or set its pause points",
              "--pause-every-minutes"),
    "ui serve": ("Serve the dashboard over the store until Ctrl-C", "--host"),
    "worker": ("Drive every runnable run until interrupted", "--until-idle"),
}


def test_the_help_table_names_every_command() -> None:
    assert sorted(HELP) == sorted(" ".join(c) for c in _all_commands())


@pytest.mark.parametrize("command", _all_commands(), ids=lambda c: " ".join(c))
def test_every_command_has_help_and_docs(command: list[str]) -> None:
    name = " ".join(command)
    res = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    # Rich draws boxes and wraps long lines: compare words, not layout.
    text = " ".join(res.output.replace("│", " ").split())
    assert f"Usage: tether {name} " in text, res.output
    summary, option = HELP[name]
    assert summary in text, f"tether {name} --help lacks its summary {summary!r}:\n{res.output}"
    assert option in text, f"tether {name} --help lacks {option}:\n{res.output}"
    cmd = typer.main.get_command(app)
    for word in command:
        cmd = cmd.commands[word]  # type: ignore[attr-defined]
    for param in cmd.params:  # every option it takes, each with its help
        for opt in param.opts if param.param_type_name == "option" else ():
            assert opt in text, f"tether {name} --help lacks {opt}"
    guide = (Path(__file__).resolve().parents[1] / "docs" / "guide.md").read_text()
    assert f"### tether {name}" in guide, f"docs/guide.md lacks tether {command}"


def test_console_script_runs() -> None:
    exe = Path(sys.executable).with_name("tether")
    res = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "demo" in res.stdout
