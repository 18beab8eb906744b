"""C2SP signed notes and tlog checkpoints against a published vector.

The keys, text and signature below are TRANSCRIBED from the package
documentation of Go's ``golang.org/x/mod/sumdb/note`` (note.go, "Here is a
well-formed signed note" and the example key ``PeterNeumann``), the reference
implementation of the signed-note format C2SP specifies. Ed25519 signatures
are deterministic, so signing that text with that key must give that
signature byte for byte; not computed by the code under test.
"""

from __future__ import annotations

import base64

import pytest

from tether.core.note import Signer, Verifier, key_id, open_note, sign_note, split_note
from tether.core.tlog import Checkpoint, parse_checkpoint
from tether.errors import VerificationFailed

SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
TEXT = ("If you think cryptography is the answer to your problem,\n"
        "then you don't know what your problem is.\n")
SIG = "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="
NOTE = TEXT + "\n\u2014 PeterNeumann " + SIG + "\n"


def test_the_go_example_signs_byte_for_byte() -> None:
    signer = Signer.decode(SKEY)
    assert signer.verifier.encode() == VKEY
    assert signer.encode() == SKEY
    assert key_id("PeterNeumann", signer.verifier.public).hex() == "c74f20a3"
    assert sign_note(TEXT, signer) == NOTE


def test_the_go_example_opens() -> None:
    assert open_note(NOTE, Verifier.decode(VKEY)) == TEXT


@pytest.mark.parametrize("change", [
    lambda n: n.replace("problem,", "problem;"),           # the text
    lambda n: n.replace(SIG, SIG[:10] + ("A" if SIG[10] != "A" else "B") + SIG[11:]),
    lambda n: n.replace(SIG, base64.b64encode(b"\x00\x00\x00\x00"
                                              + base64.b64decode(SIG)[4:]).decode()),  # key id
    lambda n: n.replace("\u2014 PeterNeumann", "\u2014 PaulNeumann"),  # the name
])
def test_a_changed_note_does_not_open(change: object) -> None:
    with pytest.raises(VerificationFailed):
        open_note(change(NOTE), Verifier.decode(VKEY))  # type: ignore[operator]


def test_another_key_does_not_open_it() -> None:
    other = Signer.generate("PeterNeumann", bytes(32))
    with pytest.raises(VerificationFailed, match="no signature by key"):
        open_note(NOTE, other.verifier)


@pytest.mark.parametrize("bad", [
    "PeterNeumann+c74f20a3",                                   # no key
    "PeterNeumann+c74f20a+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",   # short id
    "PeterNeumann+c74f20a3+AhpC2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # other type
    "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10",    # short key
    "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # space in name
])
def test_malformed_verifier_keys_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match=r"verifier key|key name"):
        Verifier.decode(bad)


def test_a_signer_key_whose_id_lies_is_refused() -> None:
    with pytest.raises(ValueError, match="key id"):
        Signer.decode(SKEY.replace("c74f20a3", "c74f20a4"))


@pytest.mark.parametrize("note", [TEXT, TEXT + "\n", TEXT + "\n\u2014 PeterNeumann\n",
                                  TEXT + "\n- PeterNeumann " + SIG + "\n",
                                  TEXT + "\n\u2014 PeterNeumann " + SIG])
def test_malformed_notes_are_refused(note: str) -> None:
    with pytest.raises(VerificationFailed):
        split_note(note)


def test_checkpoint_body_round_trip() -> None:
    root = bytes(range(32))
    body = Checkpoint("example.com/log", 12, root, ("ext one",))
    assert body.text() == f"example.com/log\n12\n{base64.b64encode(root).decode()}\next one\n"
    assert parse_checkpoint(body.text()) == body


@pytest.mark.parametrize("text", [
    "origin\n12\n", "origin\n-1\nAAAA\n", "origin\n012\n" + base64.b64encode(bytes(32)).decode()
    + "\n", "origin\n12\nAAAA\n", "\n12\n" + base64.b64encode(bytes(32)).decode() + "\n",
    "origin\n12\n" + base64.b64encode(bytes(32)).decode(),
    "origin\n12\n" + base64.b64encode(bytes(32)).decode() + "\n\n",
])
def test_malformed_checkpoints_are_refused(text: str) -> None:
    with pytest.raises(VerificationFailed):
        parse_checkpoint(text)
