"""The CLI as people read it: listings at 80 and 200 columns, `show`, help texts."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
import typer.main
from typer.core import TyperArgument, TyperOption
from typer.testing import CliRunner

from tether.cli import common
from tether.cli.app import app

runner = CliRunner()


def tether(*args: str) -> tuple[int, str]:
    res = runner.invoke(app, list(args))
    return res.exit_code, res.output


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The demo's first night: a page waits for approval; the store's path."""
    d = tmp_path_factory.mktemp("readable") / "night"
    code, out = tether("demo", "--dir", str(d))
    assert code == 0, out
    return str(d / "tether.db")


@pytest.fixture(params=[80, 200], ids=lambda c: f"COLUMNS={c}")
def columns(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """A terminal this wide (the console read COLUMNS when it was made: set both)."""
    width = int(request.param)
    monkeypatch.setenv("COLUMNS", str(width))
    monkeypatch.setattr(common.console, "_width", width)
    yield width


def _json(store: str, *args: str) -> list[dict[str, object]]:
    code, out = tether("--store", store, *args, "--json")
    assert code == 0, out
    return [json.loads(line) for line in out.splitlines()]


def test_events_one_line_each_fits_the_terminal(night: str, columns: int) -> None:
    evs = _json(night, "events", "triage")
    code, out = tether("--store", night, "events", "triage")
    assert code == 0, out
    lines = out.splitlines()
    assert all(len(line) <= columns for line in lines), max(lines, key=len)
    body = [line for line in lines if re.match(r"\s*\d+ ", line)]
    assert len(body) == len(evs)  # one line per event, never folded
    for line, e in zip(body, evs, strict=True):
        assert line.split()[0] == str(e["seq"]) and f" {e['kind']} " in line
        assert str(e["time"])[11:19] in line
    # The summary says what happened, not 11 characters of JSON.
    assert any("fs_list(path=inbox)" in line for line in body)
    assert any(re.search(r"model\.called +scripted: '(urgent|routine)'", line) for line in body)
    run_id = str(evs[0]["run"])
    assert run_id in out  # the id whole, in the title
    wide = columns >= 120
    assert ("agent:triage" in out) == wide  # the actor goes first in a narrow terminal


def test_events_full_prints_every_payload_whole(night: str, columns: int) -> None:
    evs = _json(night, "events", "triage", "--kind", "effect.intent")
    code, out = tether("--store", night, "events", "triage", "--kind", "effect.intent",
                       "--full")
    assert code == 0, out
    for e in evs:
        payload = e["payload"]
        assert isinstance(payload, dict)
        for key, value in payload["arguments"].items():
            assert json.dumps(key) in out and json.dumps(value) in out  # nothing cut


def test_events_of_an_erased_payload_and_an_empty_run(tmp_path: Path, night: str) -> None:
    from tether.store.sqlite import SQLiteStore
    copy = tmp_path / "copy.db"
    assert tether("--store", night, "store", "backup", str(copy))[0] == 0
    (first,) = _json(str(copy), "events", "triage", "--kind", "run.started")
    s = SQLiteStore(copy)
    try:
        s.erase_payload(str(first["id"]))
    finally:
        s.close()
    code, out = tether("--store", str(copy), "events", "triage", "--limit", "2")
    assert code == 0 and "(payload erased)" in out
    code, out = tether("--store", str(copy), "events", "triage", "--after", "100000")
    assert code == 0 and "(no events)" in out


def test_approvals_readable_ids_whole(night: str, columns: int) -> None:
    (req,) = _json(night, "approvals")
    for args in (["approvals"], ["approvals", "--all"]):
        code, out = tether("--store", night, *args)
        assert code == 0, out
        lines = out.splitlines()
        assert all(len(line) <= columns for line in lines), out
        (row,) = [line for line in lines if str(req["id"]) in line]  # one line, id whole
        assert "page_oncall" in row and "triage" in row
        assert "message=Secur" in row  # arguments as key=value, cut to the room left
        assert ("page-at-night" in row) == (columns >= 150)
        assert ("pending" in row) == (columns >= 150 or "--all" in args)


def _commands() -> list[tuple[list[str], Any]]:
    """Every command and group of the app, with the words that name it."""
    out: list[tuple[list[str], Any]] = []

    def walk(path: list[str], cmd: Any) -> None:
        out.append((path, cmd))
        for name, sub in getattr(cmd, "commands", {}).items():
            walk([*path, name], sub)
    walk([], typer.main.get_command(app))
    return out


@pytest.mark.parametrize("path", [p for p, _ in _commands()], ids=lambda p: " ".join(p) or "-")
def test_help_names_values_not_python_types(path: list[str], monkeypatch: pytest.MonkeyPatch
                                            ) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    code, out = tether(*path, "--help")
    assert code == 0, out
    assert not re.findall(r"<[a-z][\w\[\], ]*>", out), out  # <str>, <bool>, <list[str]>
    assert re.search(r"^ Usage: tether", out, re.M) and len(out.split("Usage:")[1]) > 80
    (cmd,) = [c for p, c in _commands() if p == path]
    assert cmd.help and cmd.help.strip(), f"tether {' '.join(path)} has no description"
    for param in cmd.params:
        what = f"tether {' '.join(path)} {param.name}"
        assert getattr(param, "help", None), f"{what} has no help text"
        if isinstance(param, TyperArgument):
            assert param.metavar and param.metavar.isupper(), f"{what}: a metavar like RUN"
        elif isinstance(param, TyperOption) and not param.is_flag:
            assert param.metavar and param.metavar == param.metavar.upper(), \
                f"{what}: a metavar like SECONDS, KEY=NUMBER"
