"""C2SP signed notes with Ed25519 keys (https://c2sp.org/signed-note).

A note is UTF-8 text ending in a newline; a signed note is the text, a blank
line, and one signature line per signer::

    — <key name> <base64(key id || signature)>

where the em dash is U+2014, the key id is the first four bytes of
``SHA-256(key name || 0x0A || 0x01 || public key)`` (0x01: the Ed25519
signature type) and the signature is Ed25519 over the note's text. Keys are
written as in Go's ``golang.org/x/mod/sumdb/note``, so other tools read them:
a verifier key ``<name>+<hex key id>+<base64(0x01 || public key)>`` and a
signer key ``PRIVATE+KEY+<name>+<hex key id>+<base64(0x01 || seed)>``.

Pure: the caller brings the random seed of a new key (``os.urandom(32)``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tether.errors import VerificationFailed

ED25519 = 0x01
"""The signature type byte of Ed25519 in key ids and key encodings."""
DASH = "\u2014"
_PRIVATE = "PRIVATE+KEY+"


def key_id(name: str, public: bytes) -> bytes:
    """The 4-byte id of key ``name`` with Ed25519 public key ``public``."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([ED25519]) + public).digest()[:4]


def check_name(name: str) -> str:
    """A key name: non-empty, no spaces, no ``+`` (the spec's rule), else ValueError."""
    if not name or "+" in name or any(c.isspace() for c in name) or not name.isprintable():
        raise ValueError(f"key name {name!r}: must be non-empty, printable, without spaces "
                         "or '+'")
    return name


@dataclass(frozen=True, slots=True)
class Verifier:
    """An Ed25519 public key under a name: checks signature lines of that name."""

    name: str
    public: bytes

    @property
    def id(self) -> bytes:
        return key_id(self.name, self.public)

    def encode(self) -> str:
        """``name+hexid+base64(0x01||public)``: what ``PREFIX.pub`` holds."""
        return (f"{self.name}+{self.id.hex()}+"
                f"{base64.b64encode(bytes([ED25519]) + self.public).decode()}")

    @classmethod
    def decode(cls, text: str) -> Verifier:
        """Read a verifier key; ValueError saying what is wrong."""
        name, key = _split_key(text.strip(), "verifier key")
        return cls(name, key)

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public).verify(signature, message)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True, slots=True, repr=False)
class Signer:
    """An Ed25519 private key under a name (its repr never shows the key)."""

    name: str
    seed: bytes

    def __repr__(self) -> str:
        return f"Signer(name={self.name!r})"

    @property
    def verifier(self) -> Verifier:
        pub = Ed25519PrivateKey.from_private_bytes(self.seed).public_key()
        return Verifier(self.name, pub.public_bytes(Encoding.Raw, PublicFormat.Raw))

    def encode(self) -> str:
        """``PRIVATE+KEY+name+hexid+base64(0x01||seed)``: what ``PREFIX.key`` holds."""
        return (f"{_PRIVATE}{self.name}+{self.verifier.id.hex()}+"
                f"{base64.b64encode(bytes([ED25519]) + self.seed).decode()}")

    @classmethod
    def decode(cls, text: str) -> Signer:
        """Read a signer key; ValueError saying what is wrong."""
        text = text.strip()
        if not text.startswith(_PRIVATE):
            raise ValueError(f"a signer key starts with {_PRIVATE!r}")
        name, seed = _split_key(text[len(_PRIVATE):], "signer key")
        signer = cls(name, seed)
        if text.split("+", 4)[3] != signer.verifier.id.hex():
            raise ValueError("signer key: its key id does not match its key")
        return signer

    @classmethod
    def generate(cls, name: str, seed: bytes) -> Signer:
        """A new key named ``name`` from 32 random bytes."""
        if len(seed) != 32:
            raise ValueError("an Ed25519 seed is 32 bytes")
        return cls(check_name(name), seed)

    def sign(self, message: bytes) -> bytes:
        return Ed25519PrivateKey.from_private_bytes(self.seed).sign(message)


def _split_key(text: str, what: str) -> tuple[str, bytes]:
    parts = text.split("+", 2)
    if len(parts) != 3:
        raise ValueError(f"{what}: expected NAME+KEYID+KEY")
    name, hexid, b64 = parts
    check_name(name)
    try:
        raw = base64.b64decode(b64, validate=True)
    except binascii.Error:
        raise ValueError(f"{what}: the key is not base64") from None
    if len(raw) != 33 or raw[0] != ED25519:
        raise ValueError(f"{what}: not an Ed25519 key (type byte and 32 bytes expected)")
    if len(hexid) != 8 or any(c not in "0123456789abcdef" for c in hexid):
        raise ValueError(f"{what}: the key id is not 8 lowercase hex digits")
    return name, raw[1:]


def sign_note(text: str, signer: Signer) -> str:
    """``text`` (ending in a newline) signed by ``signer``: the signed note."""
    if not text.endswith("\n") or "\n\n" in text:
        raise ValueError("a note's text ends in a newline and has no blank line")
    sig = signer.sign(text.encode())
    line = base64.b64encode(signer.verifier.id + sig).decode()
    return f"{text}\n{DASH} {signer.name} {line}\n"


@dataclass(frozen=True, slots=True)
class Signature:
    """One signature line of a signed note."""

    name: str
    id: bytes
    signature: bytes


def split_note(note: str) -> tuple[str, list[Signature]]:
    """The text and the signature lines of a signed note.

    Raises:
        VerificationFailed: the note is not in the signed-note form.
    """
    text, sep, sigs = note.rpartition("\n\n")
    if not sep or not sigs.endswith("\n"):
        raise VerificationFailed("not a signed note: no blank line before signature lines, "
                                 "or no final newline")
    text += "\n"
    out = []
    for line in sigs[:-1].split("\n"):
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != DASH:
            raise VerificationFailed(f"not a signature line: {line[:60]!r}")
        try:
            raw = base64.b64decode(parts[2], validate=True)
        except binascii.Error:
            raise VerificationFailed(f"signature of {parts[1]!r} is not base64") from None
        if len(raw) < 5:
            raise VerificationFailed(f"signature of {parts[1]!r} is too short")
        out.append(Signature(parts[1], raw[:4], raw[4:]))
    return text, out


def open_note(note: str, verifier: Verifier) -> str:
    """The text of ``note`` once a signature by ``verifier`` checks.

    Raises:
        VerificationFailed: no signature line of that key, or its signature is bad.
    """
    text, sigs = split_note(note)
    mine = [s for s in sigs if s.name == verifier.name and s.id == verifier.id]
    if not mine:
        names = ", ".join(sorted({f"{s.name}+{s.id.hex()}" for s in sigs})) or "none"
        raise VerificationFailed(f"no signature by key {verifier.name}+{verifier.id.hex()} "
                                 f"(signed by: {names})")
    for s in mine:
        if not verifier.verify(text.encode(), s.signature):
            raise VerificationFailed(f"bad signature by key {verifier.name}+"
                                     f"{verifier.id.hex()} (the note was changed after it "
                                     "was signed, or signed by another key)")
    return text
