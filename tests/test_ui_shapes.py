"""The CLI's ``--json`` and the JSON API agree on the reads they share: ``runs``, ``show``,
``approvals``, ``alerts`` and ``events``, over the same real store (the API's events carry
two more keys for the timeline: ``lane`` and ``summary``; both give approvals
``requested_run_time``, the run's clock)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient
from typer.testing import CliRunner

from tests.uikit import alerting_world
from tether.cli.app import app as cli
from tether.identity import create_token
from tether.store.sqlite import SQLiteStore
from tether.ui.app import create_app


def _cli(db: Path, *args: str) -> Any:
    res = CliRunner().invoke(cli, ["--store", str(db), *args])
    assert res.exit_code == 0, res.output
    text = res.output.strip()
    if args[0] == "show":
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_the_clis_json_and_the_apis_agree_on_the_shared_reads(tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path / "t.db")
    ids = alerting_world(s, tmp_path)
    _, secret = create_token(s, "eve", "viewer", who="human:root")
    with TestClient(create_app(s, port=8765), base_url="http://127.0.0.1:8765",
                    headers={"Authorization": f"Bearer {secret}"}) as c:
        def api(path: str) -> Any:
            resp = c.get(path)
            assert resp.status_code == 200, resp.text
            return resp.json()
        pairs = {
            "runs": (_cli(s.path, "runs", "--json"), api("/api/runs")),
            "approvals": (_cli(s.path, "approvals", "--json"), api("/api/approvals")),
            "approvals --all": (_cli(s.path, "approvals", "--all", "--json"),
                                api("/api/approvals?all=true")),
            "alerts": (_cli(s.path, "alerts", "--json"), api("/api/alerts")),
        }
        for run in (ids["pay"], ids["wr"], ids["loop"]):
            pairs[f"show {run}"] = (_cli(s.path, "show", run, "--json"), api(f"/api/runs/{run}"))
        for name, (from_cli, from_api) in pairs.items():
            assert from_cli, name  # something to compare: each read has rows here
            if name.startswith("approvals"):
                # Both say when each was asked on its run's clock (requested_at is wall
                # time): its approval.requested event's time.
                for a in from_api:
                    asked = s.event(a["id"])
                    assert asked is not None and a["requested_run_time"] == asked.time, a
            assert from_cli == from_api, name
        for run in (ids["wr"], ids["loop"]):
            from_cli = _cli(s.path, "events", run, "--json")
            from_api = api(f"/api/runs/{run}/events")
            assert len(from_cli) == len(from_api) > 3
            for line, obj in zip(from_cli, from_api, strict=True):
                assert set(obj) - set(line) == {"lane", "summary"}, obj
                assert {k: obj[k] for k in line} == line
    s.close()
