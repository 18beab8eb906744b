"""Files that are not files, folders that cannot be made, numbers out of range, Ctrl-C and a
closed pipe: each one `error:` line naming the argument (or a quiet, documented exit), never a
traceback, never a hang."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_cli_input import one_error_line, tether

BIG = str(2**70)
TETHER = [str(Path(sys.executable).with_name("tether"))]


def _limit_memory() -> None:
    """A regression that reads /dev/zero to the end fails the test, not the machine."""
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """The real command in a subprocess: a read that blocks (a FIFO) times out instead of
    hanging the suite."""
    return subprocess.run([*TETHER, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, preexec_fn=_limit_memory, check=False)


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "policy.fifo"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("command", [["policy", "check"], ["policy", "apply"],
                                     ["worker", "--until-idle", "--policy"]])
@pytest.mark.parametrize("special", ["/dev/zero", "fifo"])
def test_a_policy_that_is_not_a_regular_file_is_refused(tmp_path: Path, fifo: Path,
                                                       command: list[str], special: str) -> None:
    path = str(fifo) if special == "fifo" else special
    res = run_cli(["--store", str(tmp_path / "t.db"), *command, path], tmp_path)
    assert res.returncode == 2, res.stdout + res.stderr
    line = one_error_line(res.stderr)
    assert path in line and "not a regular file" in line, line


def test_a_tether_toml_beside_the_store_that_is_a_fifo_is_refused(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "tether.toml")
    res = run_cli(["--store", str(tmp_path / "t.db"), "run", "tests.sample_agents:ticker",
                   "--goal", "g", "--detach"], Path.cwd())
    assert res.returncode == 2, res.stdout + res.stderr
    assert "tether.toml" in one_error_line(res.stderr)


def test_a_demo_whose_tether_toml_is_a_fifo_is_refused_before_any_run(tmp_path: Path) -> None:
    (tmp_path / "night").mkdir()
    os.mkfifo(tmp_path / "night" / "tether.toml")
    res = run_cli(["demo", "--dir", str(tmp_path / "night")], tmp_path)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "tether.toml" in one_error_line(res.stderr)
    assert not (tmp_path / "night" / "tether.db").exists()


def test_a_policy_file_over_1_mib_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.toml"
    big.write_text("# filler\n" * 200_000)  # 1.8 MB of comments: valid TOML
    code, out, err = tether("policy", "check", str(big))
    assert code == 2, out + err
    line = one_error_line(err)
    assert str(big) in line and "MiB" in line, line


@pytest.mark.parametrize("where", ["file", "file/x", "/proc/x"])
def test_demo_dir_that_cannot_be_made_is_one_error_line(tmp_path: Path, where: str) -> None:
    (tmp_path / "file").write_text("not a folder")
    target = where if where.startswith("/") else str(tmp_path / where)
    code, out, err = tether("demo", "--dir", target)
    assert code == 2, out + err
    line = one_error_line(err)
    assert line.startswith("error: --dir ") and target in line, line


def test_demo_dir_empty_is_refused() -> None:
    code, out, err = tether("demo", "--dir", "")
    assert code == 2, out + err
    assert one_error_line(err).startswith("error: --dir ")


def test_demo_dir_in_a_missing_folder_is_refused_not_created(tmp_path: Path) -> None:
    code, out, err = tether("demo", "--dir", str(tmp_path / "no" / "such" / "night"))
    assert code == 2, out + err
    line = one_error_line(err)
    assert str(tmp_path / "no" / "such") in line and "does not exist" in line, line
    assert not (tmp_path / "no").exists()


def test_run_workspace_in_a_missing_folder_is_refused_not_created(tmp_path: Path) -> None:
    code, out, err = tether("--store", str(tmp_path / "t.db"), "run", "tests.sample_agents:ticker",
                            "--goal", "g", "--detach", "--workspace", str(tmp_path / "no" / "ws"))
    assert code == 2, out + err
    line = one_error_line(err)
    assert line.startswith("error: --workspace ") and "does not exist" in line, line
    assert not (tmp_path / "no").exists()
    code, out, err = tether("--store", str(tmp_path / "t.db"), "run", "tests.sample_agents:ticker",
                            "--goal", "g", "--detach", "--workspace", str(tmp_path / "ws"))
    assert code == 0, out + err
    assert (tmp_path / "ws").is_dir()  # the last folder is still created


@pytest.mark.parametrize(("args", "label", "accepts"), [
    (["events", "x", "--limit", BIG], "--limit", "from 0 to 9223372036854775807"),
    (["events", "x", "--limit", "-1"], "--limit", "from 0 to"),
    (["worker", "--until-idle", "--concurrency", BIG], "--concurrency", "from 1 to"),
    (["worker", "--until-idle", "--concurrency", "0"], "--concurrency", "from 1 to"),
    (["worker", "--until-idle", "--pipeline", "-1"], "--pipeline", "from 0 to"),
    (["worker", "--until-idle", "--lease-ttl", "0"], "--lease-ttl", "more than 0"),
    (["worker", "--until-idle", "--give-up-after", "-1"], "--give-up-after", "0 or more"),
    (["state", "x", "--step", "-5"], "--step", "from 0 to"),
    (["fork", "x", "--at", "-1"], "--at", "from 0 to"),
    (["run", "tests.sample_agents:ticker", "--goal", "g", "--pause-every-steps", "0"],
     "--pause-every-steps", "from 1 to"),
    (["run", "tests.sample_agents:ticker", "--goal", "g", "--pause-every-minutes", "0"],
     "--pause-every-minutes", "more than 0"),
    (["demo", "--pace", "1e400"], "--pace", "from 0 to 60"),
])
def test_numbers_out_of_range_name_the_flag_and_its_range(tmp_path: Path, args: list[str],
                                                          label: str, accepts: str) -> None:
    code, out, err = tether("--store", str(tmp_path / "t.db"), *args)
    assert code == 2, out + err
    line = one_error_line(err)
    typed = args[args.index(label) + 1]
    assert line.startswith(f"error: {label} {typed} ") and accepts in line, line
    assert "-9223372036854775808" not in line and "_" not in line.split("(")[0], line


def test_give_up_after_without_until_idle_is_refused(tmp_path: Path) -> None:
    code, out, err = tether("--store", str(tmp_path / "t.db"), "worker", "--give-up-after", "5")
    assert code == 2, out + err
    line = one_error_line(err)
    assert "--give-up-after" in line and "--until-idle" in line, line


def test_swarm_unknown_or_empty_is_refused(tmp_path: Path) -> None:
    db = str(tmp_path / "t.db")
    code, out, err = tether("--store", db, "run", "tests.sample_agents:ticker", "--goal", "g",
                            "--detach", "--swarm", "crew")
    assert code == 0, out + err
    code, out, err = tether("--store", db, "swarm", "nosuch")
    assert code == 2, out + err
    line = one_error_line(err)
    assert "'nosuch'" in line and "crew" in line, line
    code, out, err = tether("--store", db, "swarm", "")
    assert code == 2, out + err
    assert "NAME" in one_error_line(err)
    code, out, err = tether("--store", db, "swarm", "crew")
    assert code == 0 and "1 runs" in out, out + err
    # Setting a pause point on a swarm with no runs yet is how one prepares it.
    code, out, err = tether("--store", db, "swarm", "later", "--pause-every-steps", "5")
    assert code == 0, out + err


def test_demo_piped_into_head_exits_quietly_and_finishes_the_night(tmp_path: Path) -> None:
    """`tether demo | head -2`: a real pipe whose reader goes away after two lines."""
    with subprocess.Popen([*TETHER, "demo", "--dir", str(tmp_path / "night")],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        first = [proc.stdout.readline() for _ in range(2)]
        proc.stdout.close()  # as head does after its two lines
        err = proc.stderr.read()
        code = proc.wait(timeout=120)
    assert all(first), first
    assert "Traceback" not in err and "exception" not in err, err
    assert code == 1 and err == "", err
    # The night went on to its end without a reader: a rerun has nothing left to do.
    res = run_cli(["demo", "--dir", str(tmp_path / "night")], tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Resuming" in res.stdout and "model said" not in res.stdout, res.stdout


def test_ctrl_c_on_demo_says_how_to_resume(tmp_path: Path) -> None:
    # SIGINT as a terminal delivers it: a parent that ignores SIGINT (nohup, some CI
    # runners) would pass that on to the child.
    with subprocess.Popen([*TETHER, "demo", "--dir", str(tmp_path / "night"), "--pace", "0.5"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)
                          ) as proc:
        assert proc.stdout is not None
        # Past "Starting the night shift ..." (wrapped over lines at 80 columns) to the first
        # thing an agent did: the night is running.
        while not proc.stdout.readline().startswith("21:00 "):
            pass
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    assert err.strip().splitlines() == ["interrupted; run the same command again to resume"], err
