"""The Python operations example in docs/guide.md runs, and prints what the guide says.

It is run as the guide shows it: a script in a fresh folder, in its own process,
against a real SQLite store.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "guide.md"


def _example() -> tuple[str, str]:
    """The section's Python block and the ``text`` block of what it prints."""
    text = GUIDE.read_text()
    section = text[text.index("## Operating runs from Python\n"):]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    out = re.search(r"```text\n(.*?)```", section, re.S)
    assert code is not None and out is not None, "the section lost its example"
    return code.group(1), out.group(1)


def test_the_operations_example_in_the_guide_runs_as_documented(tmp_path: Path) -> None:
    code, printed = _example()
    (tmp_path / "operate.py").write_text(code)
    done = subprocess.run([sys.executable, "operate.py"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout == printed
