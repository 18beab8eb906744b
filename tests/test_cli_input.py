"""Bad input on the command line: one ``error:`` line naming the argument, exit 2, nothing lost.

The random counterpart, over every command, is tests/test_cli_fuzz.py.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tether.cli.app import app

runner = CliRunner()


def tether(*args: str) -> tuple[int, str, str]:
    res = runner.invoke(app, list(args))
    return res.exit_code, res.stdout, res.stderr


def one_error_line(stderr: str) -> str:
    """The error, checked to be exactly one line starting ``error:``."""
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    d = tmp_path_factory.mktemp("demo") / "night"
    code, out, err = tether("demo", "--dir", str(d))
    assert code == 0, out + err
    return str(d / "tether.db")


@pytest.mark.parametrize("command", [["runs"], ["worker", "--until-idle"],
                                     ["run", "tests.sample_agents:ticker", "--goal", "g",
                                      "--detach"]])
def test_store_in_a_missing_folder_is_refused(tmp_path: Path, command: list[str]) -> None:
    missing = tmp_path / "no" / "such"
    code, out, err = tether("--store", str(missing / "x.db"), *command)
    assert code == 2, out + err
    line = one_error_line(err)
    assert str(missing) in line and "does not exist" in line
    assert not (tmp_path / "no").exists()


def test_run_still_creates_the_store_file(tmp_path: Path) -> None:
    db = tmp_path / "fresh.db"
    code, out, err = tether("--store", str(db), "run", "tests.sample_agents:ticker", "--goal", "g",
                            "--detach")
    assert code == 0, out + err
    assert db.exists()


@pytest.mark.parametrize(("args", "names"), [
    (["runs", "--bogus"], "--bogus"),
    (["show"], "RUN"),
    (["events", "x", "--after", "abc"], "--after"),
    (["no-such-command"], "no-such-command"),
    (["policy", "explain", "--tool", "t"], "--agent"),
])
def test_usage_errors_are_one_line_with_the_help_hint(args: list[str], names: str) -> None:
    """Click's own errors (unknown option, missing argument, bad value) take the same one-line
    form as tether's, and keep Click's pointer to --help."""
    code, out, err = tether(*args)
    assert code == 2, out + err
    line = one_error_line(err)
    assert names.lower() in line.lower() and "--help" in line


def test_tether_errors_are_one_line(demo_store: str) -> None:
    code, _, err = tether("--store", demo_store, "show", "no-such-run")
    assert code == 2
    assert "no run 'no-such-run'" in one_error_line(err)


NOT_UTF8 = "ingest\udcff"  # how Python decodes an argv byte 0xff: a lone surrogate escape


@pytest.mark.parametrize(("args", "label"), [
    (["show", NOT_UTF8], "RUN"), (["events", NOT_UTF8], "RUN"), (["state", NOT_UTF8], "RUN"),
    (["stop", NOT_UTF8], "RUN"), (["pause", NOT_UTF8], "RUN"), (["resume", NOT_UTF8], "RUNS"),
    (["approve", NOT_UTF8], "APPROVAL"), (["deny", NOT_UTF8], "APPROVAL"),
    (["resolve", NOT_UTF8, "--done"], "EFFECT"), (["fork", NOT_UTF8, "--at", "1"], "RUN"),
    (["rollback", NOT_UTF8, "--to", "1"], "RUN"), (["quarantine", NOT_UTF8], "RUN"),
    (["impact", NOT_UTF8 + "@1"], "ORIGIN"), (["budget", NOT_UTF8], "RUN"),
    (["messages", NOT_UTF8], "RUN"), (["approvals", "--run", NOT_UTF8], "--run"),
    (["board", NOT_UTF8], "KEY"), (["swarm", NOT_UTF8], "NAME"),
    (["events", "ingest", "--kind", "\ud800"], "--kind"),
    (["runs", "--swarm", NOT_UTF8], "--swarm"), (["stop", "--agent", NOT_UTF8], "--agent"),
    (["run", "tests.sample_agents:ticker", "--goal", NOT_UTF8, "--detach"], "--goal"),
    (["demo", "--dir", NOT_UTF8], "--dir"), (["policy", "check", NOT_UTF8], "FILE"),
])
def test_text_that_is_not_utf8_is_named(demo_store: str, args: list[str], label: str) -> None:
    code, out, err = tether("--store", demo_store, *args)
    assert code == 2, out + err
    line = one_error_line(err)
    assert f"{label} " in line and "not valid UTF-8" in line and f"({label}: " in line


DEEP = "[" * 5000 + "]" * 5000


@pytest.mark.parametrize(("args", "label"), [
    (["fork", "ingest", "--at", "1", "--set", f"hint={DEEP}"], "--set hint"),
    (["fork", "ingest", "--at", "1", "--set", "hint=\"\\ud800\""], "--set hint"),
    (["resolve", "01NOPE", "--done", "--result", DEEP], "--result"),
    (["resolve", "01NOPE", "--done", "--result", "[" * 100 + "]" * 100], "--result"),
    (["resolve", "01NOPE", "--done", "--result", "{\"k\": \"\\udfff\"}"], "--result"),
    (["approve", "01NOPE", "--args", DEEP], "--args"),
    (["policy", "explain", "--agent", "a", "--tool", "t", "--args", DEEP], "--args"),
    (["policy", "explain", "--agent", "a", "--tool", "t", "--args", "{\"a\": NaN}"], "--args"),
])
def test_json_options_refuse_deep_nesting_and_surrogates(demo_store: str, tmp_path: Path,
                                                         args: list[str], label: str) -> None:
    """One parser for every JSON option: a depth limit (not a RecursionError, nor an
    encoder failure later in the journal) and no lone surrogates."""
    (tmp_path / "tether.toml").write_text("")
    if args[0] == "policy":
        args = [*args, "--policy", str(tmp_path / "tether.toml")]
    code, out, err = tether("--store", demo_store, *args)
    assert code == 2, out + err
    line = one_error_line(err)
    assert line.startswith(f"error: {label} ") and ("JSON" in line or "deeper" in line), line


BIG = str(2**64)


@pytest.mark.parametrize(("args", "label", "problem"), [
    (["events", "ingest", "--after", BIG], "--after", "64 bits"),
    (["events", "ingest", "--limit", BIG], "--limit", "64 bits"),
    (["events", "ingest", "--after", "-" + BIG], "--after", "64 bits"),
    (["fork", "ingest", "--at", BIG], "--at", "64 bits"),
    (["state", "ingest", "--step", BIG], "--step", "64 bits"),
    (["rollback", "ingest", "--to", BIG], "--to", "64 bits"),
    (["impact", "ingest@1", "--epoch", BIG], "--epoch", "64 bits"),
    (["worker", "--until-idle", "--lease-ttl", "nan"], "--lease-ttl", "finite"),
    (["demo", "--pace", "inf"], "--pace", "finite"),
    (["demo", "--pace", "1e300"], "--pace", "from 0 to 60"),
    (["policy", "explain", "--agent", "a", "--tool", "t", "--budget", "cost_usd_per_day=nan",
      "--policy", "EMPTY.toml"], "--budget", "finite"),
    (["budget", "ingest", "--set", "steps=1e999"], "--set", "finite"),
])
def test_numbers_must_fit(demo_store: str, tmp_path: Path, args: list[str], label: str,
                         problem: str) -> None:
    (tmp_path / "EMPTY.toml").write_text("")  # an empty policy (/dev/null is no regular file)
    args = [str(tmp_path / a) if a == "EMPTY.toml" else a for a in args]
    code, out, err = tether("--store", demo_store, *args)
    assert code == 2, out + err
    line = one_error_line(err)
    assert line.startswith(f"error: {label} ") and problem in line, line


LONG = "n" * 300  # one file name of more than 255 bytes


@pytest.mark.parametrize(("args", "label"), [
    (["demo", "--dir", LONG], "--dir"), (["policy", "check", f"/tmp/{LONG}.toml"], "FILE"),
    (["--store", f"{LONG}.db", "runs"], "--store"), (["store", "backup", LONG], "PATH"),
])
def test_paths_too_long_are_named(demo_store: str, args: list[str], label: str) -> None:
    """A name the file system refuses (ENAMETOOLONG) is refused as an argument, not met as an
    OSError half-way through."""
    code, out, err = tether("--store", demo_store, *args)
    assert code == 2, out + err
    line = one_error_line(err)
    assert line.startswith(f"error: {label} ") and "255 bytes" in line, line


def test_a_corrupt_checkpoint_names_run_and_step(demo_store: str, tmp_path: Path) -> None:
    copy = tmp_path / "copy.db"
    assert tether("--store", demo_store, "store", "backup", str(copy))[0] == 0
    code, out, _ = tether("--store", str(copy), "runs", "--json")
    ingest = next(r for r in map(json.loads, out.splitlines()) if r["name"] == "ingest")
    with sqlite3.connect(copy) as c:
        cur = c.execute("UPDATE checkpoints SET body = x'00ff' WHERE rk = (SELECT rk FROM runs "
                        "WHERE id = ?) AND step = ?", (ingest["id"], ingest["step"]))
        assert cur.rowcount >= 1
    for args in (["state", "ingest"], ["fork", "ingest", "--at", str(ingest["step"])]):
        code, out, err = tether("--store", str(copy), *args)
        assert code == 2, out + err
        line = one_error_line(err)
        assert f"run {ingest['id']}" in line and f"step {ingest['step']}" in line
        assert "damaged" in line


def test_prefixes_are_literal_on_the_command_line(tmp_path: Path) -> None:
    db = str(tmp_path / "one.db")
    code, out, err = tether("--store", db, "run", "tests.sample_agents:ticker", "--goal", "g",
                            "--name", "only", "--detach")
    assert code == 0, out + err
    for ref in ("_", "%", "%" + out.split()[-1][-2:]):
        code, out2, err = tether("--store", db, "stop", ref)
        assert code == 2 and f"no run {ref!r}" in one_error_line(err), out2 + err
    code, out, err = tether("--store", db, "show", "only", "--json")
    assert json.loads(out)["status"] == "running"


@pytest.mark.timeout(10)
def test_names_of_40000_characters_render(tmp_path: Path) -> None:
    """One huge unbroken token took 28 s to print in `show` (rich's highlighter is
    quadratic on it); the timeout is far above the fixed time (0.2 s) and below the old."""
    db, huge = str(tmp_path / "long.db"), "x" * 40_000
    code, out, err = tether("--store", db, "run", "tests.sample_agents:ticker", "--goal", huge,
                            "--name", huge, "--detach")
    assert code == 0, out + err
    for args in (["runs"], ["show", huge], ["events", huge], ["messages"], ["approvals"]):
        code, out, err = tether("--store", db, *args)
        assert code == 0, out + err


@pytest.mark.parametrize("user", ["\udcff", "x\ny", "a\x1b[2J"])
def test_an_unrecordable_tether_user_is_named(demo_store: str, user: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TETHER_USER", user)
    code, out, err = tether("--store", demo_store, "pause", "librarian")
    assert code == 2, out + err
    assert "TETHER_USER" in one_error_line(err)


def test_every_command_checks_its_arguments() -> None:
    """Every command goes through handle_errors, which checks arguments before the command
    runs and turns tether's errors into the one-line form."""
    groups, i = [app], 0
    while i < len(groups):  # nested groups too (ui token)
        groups += [g.typer_instance for g in groups[i].registered_groups
                   if g.typer_instance is not None]
        i += 1
    for group in groups:
        assert group is not None
        for info in group.registered_commands:
            assert hasattr(info.callback, "__wrapped__"), f"{info.callback} lacks @handle_errors"
