"""ULID text: ``ulid_str`` against an independent encoder (RFC 4648 base32 with the
Crockford alphabet, as the ULID spec defines the text), and round trips."""

from __future__ import annotations

import base64

from hypothesis import given
from hypothesis import strategies as st

from tether.core.ids import UlidSource, ulid_bytes, ulid_str, ulid_time

_CROCKFORD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567",
                             b"0123456789ABCDEFGHJKMNPQRSTVWXYZ")


def oracle(value: bytes) -> str:
    """130 bits (the 128 right-aligned) as 26 base32 characters, by the standard library."""
    n = int.from_bytes(value, "big")
    return base64.b32encode((n << 6).to_bytes(17, "big"))[:26].translate(_CROCKFORD).decode()


@given(st.binary(min_size=16, max_size=16))
def test_ulid_text_matches_base32_and_round_trips(value: bytes) -> None:
    text = ulid_str(value)
    assert text == oracle(value) == ulid_str(int.from_bytes(value, "big"))
    assert len(text) == 26 and ulid_bytes(text) == value


def test_edges_and_a_known_id() -> None:
    assert ulid_str(bytes(16)) == "0" * 26
    assert ulid_str(b"\xff" * 16) == "7" + "Z" * 25  # the largest ULID
    # The ULID spec's example timestamp 1469918176385 ms (2016-07-30T22:36:16.385Z).
    text = ulid_str((1469918176385 << 80).to_bytes(16, "big"))
    assert text.startswith("01ARYZ6S41") and ulid_time(text) == 1469918176.385


def test_ids_sort_by_time_as_text() -> None:
    t = [1_700_000_000.0]
    src = UlidSource(lambda: t[0])
    ids = []
    for _ in range(50):
        ids.append(src.new())
        t[0] += 0.0005
    assert ids == sorted(ids) and len(set(ids)) == 50
