"""What `tether store copy` says when it cannot copy, or copied but cannot vouch for it.

Its stores are its own arguments, SRC and DST: a path that is wrong is named as one of
them, never as the --store option the command does not read. Each store is made by the
real CLI, each copy run by it (a subprocess).
"""

from __future__ import annotations

import json
import shlex
import shutil
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


def test_a_postgresql_schema_without_a_store_is_named_as_src(pg_url: str,
                                                             tmp_path: Path) -> None:
    secret = "s3cret-pw"  # noqa: S105  # not a credential: trust auth ignores it
    src = pg_url.replace("postgresql://postgres@", f"postgresql://postgres:{secret}@", 1)
    line = refused(cli("store", "copy", src, str(tmp_path / "dst.db"), cwd=tmp_path))
    assert "no tether store in schema" in line and "fix SRC" in line, line
    assert "create the store" not in line and secret not in line, line
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


@pytest.fixture
def sealed(source: Path, tmp_path: Path) -> tuple[Path, Path, Path]:
    """The source with a signed checkpoint; the right public key, and another key's."""
    for name in ("k", "other"):
        assert cli("audit", "keygen", str(tmp_path / name), cwd=tmp_path).returncode == 0
    res = cli("--store", str(source), "audit", "seal", "--key", str(tmp_path / "k.key"),
              cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    return source, tmp_path / "k.pub", tmp_path / "other.pub"


def _failed_then_undone(src: Path, dst: str, right: Path, wrong: Path, cwd: Path) -> str:
    """Copy with the wrong key (committed, not vouched for), --json then text; each time the
    command given removes the copy (a copy again is refused until then), and at last the
    copy with the right key passes. The text message."""
    def undone(command: str) -> None:
        again = cli("store", "copy", str(src), dst, "--key", str(right), cwd=cwd)
        assert "already holds a tether store" in refused(again)
        subprocess.run(shlex.split(command), cwd=cwd, check=True, capture_output=True)

    res = cli("store", "copy", str(src), dst, "--key", str(wrong), "--json", cwd=cwd)
    assert res.returncode == 1, res.stdout + res.stderr
    command = json.loads(res.stdout)["undo"]
    undone(command)
    res = cli("store", "copy", str(src), dst, "--key", str(wrong), cwd=cwd)
    assert res.returncode == 1, res.stdout + res.stderr
    said = " ".join(res.stdout.split())
    assert "now holds the whole copy, committed, but it does not check out" in said, said
    assert "a --key other than the public key of the key that signed the source" in said, said
    assert said.endswith(f"remove the copy (a copy into a store that holds rows is refused): "
                         f"`{command}`"), said
    undone(command)
    res = cli("store", "copy", str(src), dst, "--key", str(right), cwd=cwd)
    assert res.returncode == 0 and "verify ok" in res.stdout, res.stdout + res.stderr
    return said


def test_a_copy_that_does_not_verify_says_how_to_remove_it_sqlite(
        sealed: tuple[Path, Path, Path], tmp_path: Path) -> None:
    src, right, wrong = sealed
    said = _failed_then_undone(src, "dst.db", right, wrong, tmp_path)
    assert "`rm dst.db`" in said and f"--store sqlite:///{src}" in said, said


@pytest.mark.skipif(shutil.which("psql") is None, reason="the undo command runs psql")
def test_a_copy_that_does_not_verify_says_how_to_drop_it_postgresql(
        sealed: tuple[Path, Path, Path], pg_url: str, tmp_path: Path) -> None:
    src, right, wrong = sealed
    secret = "s3cret-pw"  # noqa: S105  # not a credential: trust auth ignores it
    dst = pg_url.replace("postgresql://postgres@", f"postgresql://postgres:{secret}@", 1)
    assert secret in dst, pg_url
    said = _failed_then_undone(src, dst, right, wrong, tmp_path)
    assert "-c 'DROP SCHEMA " in said and secret not in said, said
