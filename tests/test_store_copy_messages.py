"""What `tether store copy` says when it cannot copy, or copied but cannot vouch for it.

Its stores are its own arguments, SRC and DST: a path that is wrong is named as one of
them, never as the --store option the command does not read. Each store is made by the
real CLI, each copy run by it (a subprocess).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.pgworkers import cli

ALLOW = '[[rule]]\nid = "allow-all"\ndecide = "allow"\n'


def refused(res: subprocess.CompletedProcess[str]) -> str:
    """The one ``error:`` line of a refused command (exit 2), never a traceback."""
    assert res.returncode == 2, res.stdout + res.stderr
    (line,) = res.stderr.splitlines()
    assert line.startswith("error: "), res.stderr
    return line


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A real store (a policy applied by the CLI, which creates it)."""
    policy, db = tmp_path / "allow.toml", tmp_path / "src.db"
    policy.write_text(ALLOW)
    res = cli("--store", str(db), "policy", "apply", str(policy), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    return db


def test_a_missing_source_is_named_as_src(tmp_path: Path) -> None:
    line = refused(cli("store", "copy", str(tmp_path / "none.db"), str(tmp_path / "dst.db"),
                       cwd=tmp_path))
    assert "no tether store at" in line and "none.db" in line and "SRC" in line, line
    assert "--store" not in line and "TETHER_STORE" not in line, line
    assert not (tmp_path / "dst.db").exists()


def test_a_missing_destination_folder_is_named_as_dst(source: Path, tmp_path: Path) -> None:
    dst = tmp_path / "no-such-folder" / "dst.db"
    line = refused(cli("store", "copy", str(source), str(dst), cwd=tmp_path))
    assert f"the folder {dst.parent}" in line and "fix DST" in line, line
    assert "--store" not in line and "TETHER_STORE" not in line, line
    assert not dst.parent.exists()


def test_a_folder_given_as_either_store_is_named(source: Path, tmp_path: Path) -> None:
    line = refused(cli("store", "copy", str(source), str(tmp_path), cwd=tmp_path))
    assert "is a folder; DST names a SQLite file" in line, line
    line = refused(cli("store", "copy", str(tmp_path), str(tmp_path / "dst.db"), cwd=tmp_path))
    assert "is a folder; SRC names a SQLite file" in line, line
