"""The curated public API: everything in ``__all__`` exists and every public name is in it."""

from __future__ import annotations

import tether


def test_all_names_resolve() -> None:
    for name in tether.__all__:
        assert getattr(tether, name) is not None, name


def test_public_names_are_exported() -> None:
    public = {n for n in vars(tether) if not n.startswith("_") and n[0].isupper()}
    assert public <= set(tether.__all__), sorted(public - set(tether.__all__))
