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

MODEL_SETTINGS = ("TETHER_MODEL_TIMEOUT", "TETHER_MODEL_RETRIES", "TETHER_PRICES")
"""What `tether run/worker/demo --model-timeout/--model-retries/--prices` set in the process
environment (for the models and agents it builds later)."""


@pytest.fixture(autouse=True)
def _no_model_settings_leak() -> Iterator[None]:
    """A CLI command invoked in this process (CliRunner) may set the model settings; each
    test starts without them, and what it set is gone after it."""
    for var in MODEL_SETTINGS:
        os.environ.pop(var, None)
    yield
    for var in MODEL_SETTINGS:
        os.environ.pop(var, None)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "tether.db")
    yield s
    s.close()
