"""Malformed input to every command: never a traceback, never a hang.

Commands and their parameters are read from the Typer app itself, so a new command or
option is fuzzed without touching this file. Each example runs in-process (typer's
CliRunner) against one small real store made by the demo; mutating commands (stop,
approve, rollback, fork...) may change that store as the examples go, which is fine: any
state it reaches must be handled as well.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tether.cli.app import app

runner = CliRunner()
ROOT = typer.main.get_command(app)


def _commands(cmd: Any = ROOT, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """Every leaf command of the app, by its path (``("policy", "explain")``)."""
    subs = getattr(cmd, "commands", None)
    if not subs:
        return {path: cmd}
    out: dict[tuple[str, ...], Any] = {}
    for name, sub in sorted(subs.items()):
        out.update(_commands(sub, (*path, name)))
    return out


# `tether metrics` and `tether ui serve` serve until interrupted, by design
# (tests/test_telemetry_metrics.py scrapes one, tests/test_ui_live.py drives the other);
# every other command must end, whatever its input.
COMMANDS = {path: cmd for path, cmd in _commands().items()
            if path not in (("metrics",), ("ui", "serve"))}

# What people (and scripts gone wrong) type: not UTF-8 (a byte 0xff arrives as a surrogate
# escape, as Python decodes argv), lone surrogates, LIKE/GLOB metacharacters, huge or odd
# numbers, JSON nested far too deep, names of 40,000 characters, control characters.
HOSTILE = ["\udcff", "run\udcfe", "\ud800", "x\udfff", "", " ", "_", "%", "%FE", "*", "\\",
           "0", "-1", "1" * 25, "-" + "9" * 25, "18446744073709551616", "9223372036854775808",
           "1e309", "1e300", "86400", "nan", "inf", "-inf", "0x10", "1.5", "[" * 5000, "{\"a\":" * 3000,
           "[" * 100 + "]" * 100, "\"\\ud800\"", "{\"k\": \"\\udfff\"}", "x" * 40000,
           "a\nb", "\x00", "\x1b[31mred", "[bold]x[/", "@", "x@", "@1", "x@-1", "x@" + "9" * 30,
           "k=" + "[" * 5000, "k=\"\\ud800\"", "k=1e999", "=", "steps=nan", "steps=-1"]
PLAUSIBLE_TEXT = ["ingest", "router", "night-shift", "send_email", "librarian", "{}", "\"ok\"",
                  "{\"to\": \"a@example.com\"}", "steps=5", "hint=\"x\"", "irreversible",
                  "pending", "2025-03-30T02:30", "model.called", "tests.sample_agents:nope",
                  "tests.sample_agents:putter"]


def _values(param: Any, ids: list[str], tmp: Path) -> st.SearchStrategy[str]:
    desc = getattr(param, "type_descriptor", None)  # typer >= 0.2x; older ones: click's type
    kind = str(desc.annotation if desc is not None else param.type).lower()
    if "int" in kind:
        plausible = ["0", "1", "2", "3"]
    elif "float" in kind:
        plausible = ["0"]  # a real pace or TTL would make an example slow, not more telling
    elif "path" in kind:
        plausible = [str(tmp / "none.toml"), str(tmp), str(tmp / "garbage.toml"),
                     str(tmp / "ok.toml"), str(tmp / "backup.db")]
    else:
        plausible = PLAUSIBLE_TEXT + ids + [i[:8] for i in ids] + [f"{i}@1" for i in ids[:3]] \
            + [f"{i}@{'9' * 25}" for i in ids[:2]]
    return st.sampled_from(HOSTILE + plausible) | st.text(max_size=12)


@st.composite
def invocations(draw: st.DrawFn, ids: list[str], tmp: Path, store: str) -> list[str]:
    path = draw(st.sampled_from(sorted(COMMANDS)), label="command")
    argv: list[str] = ["--store", draw(st.sampled_from(
        [store] * 8 + [str(tmp / "no" / "such" / "x.db"), str(tmp / "x\udcff.db"), str(tmp)]))]
    argv += list(path)
    for param in COMMANDS[path].params:
        if param.name == "help" or not draw(st.booleans()):
            continue
        if path == ("demo",) and param.name == "model":
            continue  # a real model server, by design: retried with backoff, slow to fail
        if param.param_type_name == "argument":
            argv += draw(st.lists(_values(param, ids, tmp), min_size=1, max_size=2)
                         if param.nargs == -1 else st.lists(_values(param, ids, tmp),
                                                            min_size=1, max_size=1))
        elif getattr(param, "is_flag", False):
            argv.append(draw(st.sampled_from(param.opts + param.secondary_opts)))
        else:
            argv += [param.opts[0], draw(_values(param, ids, tmp))]
    if path == ("worker",) and "--until-idle" not in argv:
        argv.append("--until-idle")  # a worker without it serves forever, by design
    return argv


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[str]]]:
    tmp = tmp_path_factory.mktemp("fuzz")
    res = runner.invoke(app, ["demo", "--dir", str(tmp / "night")])
    assert res.exit_code == 0, res.output
    db = tmp / "night" / "tether.db"
    with sqlite3.connect(db) as c:
        ids = [r[0] for r in c.execute("SELECT id FROM runs")]
        ids += [r[0] for r in c.execute("SELECT id FROM approvals")]
    (tmp / "garbage.toml").write_bytes(b"\xff\xfe not toml [[[")
    (tmp / "ok.toml").write_text("[[rules]]\nid = \"r\"\ntool = \"*\"\nverdict = \"allow\"\n")
    cwd = os.getcwd()
    os.chdir(tmp)  # `tether demo` without --dir writes ./tether-demo
    try:
        yield tmp, ids
    finally:
        os.chdir(cwd)


def _check(argv: list[str]) -> None:
    res = runner.invoke(app, argv)
    shown = " ".join(a if len(a) < 60 else a[:57] + "..." for a in argv)
    assert res.exception is None or isinstance(res.exception, SystemExit), (
        f"tether {shown!r} raised {res.exception!r}")
    assert res.exit_code in (0, 1, 2), f"tether {shown!r} exited {res.exit_code}"
    if res.exit_code == 2:
        lines = res.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (
            f"tether {shown!r} printed {res.stderr[:500]!r}")


EXAMPLES = int(os.environ.get("TETHER_FUZZ_EXAMPLES", "200"))


# About 0.07 s an example here: the bound is ten times that and more, so only a hang trips it.
@pytest.mark.timeout(120 + EXAMPLES)
def test_no_input_crashes_or_hangs_any_command(night: tuple[Path, list[str]]) -> None:
    tmp, ids = night
    store = str(tmp / "night" / "tether.db")

    @settings(max_examples=EXAMPLES, deadline=None,
              database=None, suppress_health_check=list(HealthCheck))
    @given(invocations(ids, tmp, store))
    def fuzz(argv: list[str]) -> None:
        _check(argv)

    fuzz()
