"""`tether audit verify --witness FILE`: a store checked against the copy of its signed
checkpoints a witness keeps (`tether audit export`), on real SQLite stores through the CLI.
Each way of going behind the witness's back is named; a good witness passes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests import test_audit_signed as signed
from tests.test_audit_signed import _target, add_events, app, raw, rewrite, runner, seal, tether

# The signed-checkpoint tests' store (three runs, sealed nowhere yet) and key, shared.
base, db, key = signed.base, signed.db, signed.key

pytestmark = pytest.mark.raw_rows  # the intruder writes rows itself


@pytest.fixture
def witness(db: Path, key: str, tmp_path: Path) -> Path:
    """Three seals, exported to a witness file after the last."""
    seal(db, key)
    add_events(db, 0, 3)
    seal(db, key)
    add_events(db, 1, 2)
    seal(db, key)
    out = tmp_path / "witness.jsonl"
    code, text = tether("--store", str(db), "audit", "export", "--out", str(out))
    assert code == 0, text
    return out


def check(db: Path, witness: Path, key: str | None = None, *, as_json: bool = True
          ) -> tuple[int, Any]:
    args = ["--store", str(db), "audit", "verify", "--witness", str(witness)]
    if key:
        args += ["--key", key + ".pub"]
    if as_json:
        res = runner.invoke(app, [*args, "--json"])
        code, out = res.exit_code, res.output
        assert out.strip(), (code, out, res.exc_info)
        return code, json.loads(out)
    code, out = tether(*args)
    return code, " ".join(out.split())


def sizes(witness: Path) -> list[int]:
    return [json.loads(x)["size"] for x in witness.read_text().splitlines()]


def test_a_good_witness_passes_and_later_seals_still_extend_it(db: Path, key: str,
                                                                witness: Path) -> None:
    code, rep = check(db, witness, key)
    assert code == 0 and rep["ok"] and rep["witnessed"] == 3, rep
    add_events(db, 2, 4)
    seal(db, key)
    code, out = check(db, witness, key, as_json=False)
    assert code == 0 and "extends all 3 of the witness's" in out, out


def test_a_rewritten_and_resealed_history_is_named_by_the_witness(db: Path, key: str,
                                                                  witness: Path) -> None:
    """The thorough intruder: one event rewritten with its chains and batches, the signed
    checkpoints dropped and the store sealed again with the key. The store alone verifies;
    the witness names its first checkpoint, and the event."""
    run, seq = _target(db)
    rewrite(db, run, seq, {"text": "nothing to see", "tokens": 41})
    raw(db, "DELETE FROM signed_checkpoints")
    seal(db, key)
    code, out = tether("--store", str(db), "audit", "verify", "--key", key + ".pub")
    assert code == 0, out  # without the witness, nothing to see
    code, rep = check(db, witness, key)
    assert code == 1 and len(rep["problems"]) == 1
    p = rep["problems"][0]
    assert p.startswith(f"witness checkpoint 1 (size {sizes(witness)[0]}, root ")
    assert "is not extended by this store" in p
    # Checkpoint 1's number now holds the new seal: the signed checkpoints were replaced.
    assert "signed checkpoints were replaced" in p


def test_a_rewritten_event_is_named_exactly(db: Path, key: str, witness: Path) -> None:
    """Rewritten with chains and batches, the store's own checkpoints left: the witness's
    roots and proofs narrow the first difference down to the one event."""
    run, seq = _target(db)
    rewrite(db, run, seq, {"text": "nothing to see", "tokens": 41})
    code, rep = check(db, witness, key)
    assert code == 1
    p = next(x for x in rep["problems"] if x.startswith("witness checkpoint"))
    assert p.startswith(f"witness checkpoint 1 (size {sizes(witness)[0]}")
    assert "hash to another root" in p
    number = raw_commit_order(db).index((run, seq)) + 1
    m = re.search(r"an event among numbers (\d+) to (\d+) in commit order differs \(the "
                  r"first of them: run (\S+) #(\d+)\)", p)
    assert m, p
    lo, hi = int(m[1]), int(m[2])
    # The witness's later proofs hash parts of checkpoint 1's tree: narrower than all of it.
    assert lo <= number <= hi and hi - lo + 1 < sizes(witness)[0], p
    assert (m[3], int(m[4])) == raw_commit_order(db)[lo - 1]


def raw_commit_order(db: Path) -> list[tuple[str, int]]:
    """(run, seq) of every run event in the order the batch chain names them (the store
    chain's events as ('@store', n))."""
    names = dict(raw(db, "SELECT rk, id FROM run_keys"))
    out: list[tuple[str, int]] = []
    for (entries,) in raw(db, "SELECT entries FROM batches ORDER BY n"):
        for rk, first, last in json.loads(entries):
            out.extend((names.get(rk, "@store"), s) for s in range(first, last + 1))
    return out


def test_a_truncated_store_is_named(db: Path, key: str, witness: Path) -> None:
    """The last commit removed with its batch and the newest checkpoint: the store's own
    checks pass (its last checkpoint still matches); the witness's does not."""
    n, entries = raw(db, "SELECT n, entries FROM batches ORDER BY n DESC LIMIT 1")[0]
    rk, first, last = json.loads(entries)[0]
    raw(db, "DELETE FROM events WHERE rk = ? AND seq BETWEEN ? AND ?", (rk, first, last))
    raw(db, "DELETE FROM batches WHERE n = ?", (n,))
    raw(db, "UPDATE runs SET head = (SELECT hex(hash) FROM events WHERE rk = ? "
            "ORDER BY seq DESC LIMIT 1) WHERE id = (SELECT id FROM run_keys WHERE rk = ?)",
        (rk, rk))
    raw(db, "DELETE FROM signed_checkpoints WHERE n = 3")
    code, rep = check(db, witness, key)
    assert code == 1
    p = next(x for x in rep["problems"] if x.startswith("witness checkpoint"))
    assert p.startswith("witness checkpoint 3 (size ") and "none numbered 3" in p, p


def test_a_truncation_under_kept_checkpoints_names_the_missing_events(
        db: Path, key: str, witness: Path) -> None:
    raw(db, "DELETE FROM batches WHERE n = (SELECT max(n) FROM batches)")
    code, rep = check(db, witness, key)
    p = next(x for x in rep["problems"] if x.startswith("witness checkpoint"))
    assert code == 1 and p.startswith("witness checkpoint 3 ")
    assert "holds only" in p and "were removed" in p, p


def test_the_witness_signatures_are_checked_with_the_key(db: Path, key: str, witness: Path,
                                                         tmp_path: Path) -> None:
    code, out = tether("audit", "keygen", str(tmp_path / "other"), "--name", "other/t")
    assert code == 0, out
    code, rep = check(db, witness, str(tmp_path / "other"))
    assert code == 1
    assert any(p.startswith("witness checkpoint 1 ") and "other/t" in p
               for p in rep["problems"]), rep["problems"]


def test_a_changed_witness_copy_is_named(db: Path, key: str, witness: Path) -> None:
    lines = witness.read_text().splitlines()
    cp = json.loads(lines[1])
    cp["root"] = "00" * 32
    lines[1] = json.dumps(cp)
    witness.write_text("\n".join(lines) + "\n")
    code, rep = check(db, witness, key)
    assert code == 1
    assert any(p.startswith("witness checkpoint 2 ") and "line 2" in p and
               "signed note says" in p for p in rep["problems"]), rep["problems"]


@pytest.mark.parametrize(("content", "says"), [
    (b"", "holds no signed checkpoints"),
    (b"not json\n", "line 1: not a JSON object"),
    (b'{"n": 1, "size": 3, "root": "zz", "note": "x", "proof": []}\n',
     "line 1: root is not a 32-byte hex hash"),
    (b'{"n": 1, "size": -1, "root": "", "note": "x", "proof": []}\n',
     "line 1: size -1 is not a number of events"),
    (b"\xff\xfe\n", "line 1: not a JSON object"),
])
def test_a_malformed_witness_file_is_one_clear_error(db: Path, key: str, tmp_path: Path,
                                                     content: bytes, says: str) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(content)
    res = runner.invoke(app, ["--store", str(db), "audit", "verify", "--witness", str(bad),
                              "--key", key + ".pub"])
    err = res.stderr.strip()
    assert res.exit_code == 2 and says in " ".join(err.split()), err
    assert err.startswith("error: witness file") and "Traceback" not in res.output
    assert res.stdout == "" and len(err.splitlines()) == 1, err


def test_a_missing_witness_file_is_one_clear_error(db: Path, tmp_path: Path) -> None:
    code, out = check(db, tmp_path / "nope.jsonl", as_json=False)
    assert code == 2 and "cannot read it" in out and "Traceback" not in out, out



def test_checkpoints_dropped_and_sealed_again_are_named(db: Path, key: str,
                                                        witness: Path) -> None:
    """The events untouched, the signed series replaced by one new seal: the store alone
    verifies; the witness's first checkpoint is no longer the store's."""
    raw(db, "DELETE FROM signed_checkpoints")
    seal(db, key)
    code, out = tether("--store", str(db), "audit", "verify", "--key", key + ".pub")
    assert code == 0, out
    code, rep = check(db, witness, key)
    assert code == 1 and len(rep["problems"]) == 1, rep
    p = rep["problems"][0]
    assert p.startswith(f"witness checkpoint 1 (size {sizes(witness)[0]}, root ")
    assert f"the store's signed checkpoint 1 says size {sizes(witness)[-1]}" in p, p
