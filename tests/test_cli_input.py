"""Bad input on the command line: one ``error:`` line naming the argument, exit 2, nothing lost.

The random counterpart, over every command, is tests/test_cli_fuzz.py.
"""

from __future__ import annotations

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
