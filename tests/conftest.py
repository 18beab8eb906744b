"""Shared fixtures. Tests use real SQLite files and real loopback servers."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tether.store.sqlite import SQLiteStore

# No test may reach a real model provider: point the OpenAI client at the discard
# port on loopback and drop any real key, so a stray call fails at once, locally.
os.environ.pop("OPENAI_API_KEY", None)
os.environ["OPENAI_BASE_URL"] = "http://127.0.0.1:9/v1"
os.environ.pop("TETHER_STORE", None)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "tether.db")
    yield s
    s.close()
