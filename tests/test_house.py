"""The house rules that a reader can count: files of at most 400 lines, functions of at
most 40, in ``src/``, unless the file or function says why at its top.

The reason is a comment line ``# long: WHY`` (at least three words of why) at the top
of the function, right after its ``def`` line or right after its docstring::

    def render(rows):
        # long: one table, one pass; split, its columns would be computed twice
        ...

and, for a file, among the comment lines before its first import (after the module
docstring). A function counts from its ``def`` line to its last line, decorators not
included; a nested function counts inside its parent and on its own.

``ALLOWED`` lists what exceeded the limits when the check was written and is being split
by issue #9's helpers. It only shrinks: once a function is short, its entry goes.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "tether"
MAX_FILE = 400
MAX_FUNCTION = 40
REASON = re.compile(r"^\s*# long: (\S+\s+){2,}\S")

ALLOWED: dict[str, str] = {
    # file (relative to src/tether) or file::Function.qualname -> who is shortening it
}


@dataclass(frozen=True)
class Long:
    """A file or function over its limit with no reason written at its top."""

    name: str  # "path" or "path::Qualified.name"
    lines: int
    limit: int

    def __str__(self) -> str:
        return f"{self.name}: {self.lines} lines (limit {self.limit})"


def _has_reason(lines: list[str], first: int, last: int) -> bool:
    """Whether a ``# long:`` line is among ``lines[first:last]`` (0-based, end excluded)."""
    return any(REASON.match(line) for line in lines[first:last])


def _reason_zone(node: ast.FunctionDef | ast.AsyncFunctionDef) -> tuple[int, int]:
    """The 0-based line range where a reason may stand: from the ``def`` line to the first
    statement that is not the docstring."""
    body = node.body
    rest = body[1:] if body and ast.get_docstring(node, clean=False) is not None else body
    return node.lineno - 1, rest[0].lineno - 1 if rest else node.end_lineno or node.lineno


def long_functions(source: str, name: str = "<source>") -> list[Long]:
    """Every function in ``source`` longer than the limit without a reason at its top."""
    lines = source.splitlines()
    found: list[Long] = []

    def walk(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                qual = prefix + child.name
                size = (child.end_lineno or child.lineno) - child.lineno + 1
                if size > MAX_FUNCTION and not _has_reason(lines, *_reason_zone(child)):
                    found.append(Long(f"{name}::{qual}", size, MAX_FUNCTION))
                walk(child, qual + ".")
            elif isinstance(child, ast.ClassDef):
                walk(child, prefix + child.name + ".")
            else:
                walk(child, prefix)

    walk(ast.parse(source), "")
    return found


def long_file(source: str, name: str = "<source>") -> Long | None:
    """The file itself, if longer than the limit without a reason before its first import."""
    lines = source.splitlines()
    if len(lines) <= MAX_FILE:
        return None
    tree = ast.parse(source)
    first = next((s.lineno - 1 for s in tree.body
                  if isinstance(s, ast.Import | ast.ImportFrom)), len(lines))
    if _has_reason(lines, 0, first):
        return None
    return Long(name, len(lines), MAX_FILE)


def house_report(root: Path = SRC) -> list[Long]:
    """Everything under ``root`` over its limit without a reason."""
    found: list[Long] = []
    for path in sorted(root.rglob("*.py")):
        name = path.relative_to(root).as_posix()
        source = path.read_text(encoding="utf-8")
        whole = long_file(source, name)
        found += [whole] if whole else []
        found += long_functions(source, name)
    return found


# -- the house itself -----------------------------------------------------------------------

def test_no_file_or_function_over_its_limit_without_a_reason() -> None:
    unexplained = [str(x) for x in house_report() if x.name not in ALLOWED]
    assert not unexplained, (
        "over the limit, with no `# long: WHY` at its top (split it, or say why):\n  "
        + "\n  ".join(unexplained))


# -- the checker, on sources written here -----------------------------------------------------

def test_the_allowance_only_names_what_is_still_over() -> None:
    over = {x.name for x in house_report()}
    stale = sorted(set(ALLOWED) - over)
    assert not stale, f"now within the limits, remove from ALLOWED: {stale}"


def _function(name: str, body_lines: int, head: str = "", indent: str = "") -> str:
    """A function of exactly ``1 + len(head lines) + body_lines`` lines."""
    body = "".join(f"{indent}    x{i} = {i}\n" for i in range(body_lines))
    return f"{indent}def {name}() -> None:\n{head}{body}"


def test_a_function_of_41_lines_is_long_and_one_of_40_is_not() -> None:
    src = _function("short", 39) + "\n\n" + _function("long", 40)
    assert [(x.name, x.lines) for x in long_functions(src, "m.py")] == [("m.py::long", 41)]


def test_a_reason_at_the_top_excuses_a_long_function() -> None:
    after_def = _function("f", 45, head="    # long: one pass over the rows, kept whole\n")
    after_doc = _function("g", 45, head='    """Doc.\n\n    More."""\n'
                                        "    # long: one pass over the rows, kept whole\n")
    assert long_functions(after_def) == [] and long_functions(after_doc) == []


@pytest.mark.parametrize("head", [
    "    # long:\n",  # no reason given
    "    # long: why\n",  # not a reason, a word
    "    # it is long: one pass over the rows\n",  # not the convention
    "    x = 0\n    # long: one pass over the rows, kept whole\n",  # not at its top
])
def test_a_missing_empty_or_misplaced_reason_does_not(head: str) -> None:
    assert [x.name for x in long_functions(_function("f", 45, head=head))] == ["<source>::f"]


def test_methods_nested_and_async_functions_are_named_by_their_qualified_name() -> None:
    src = ("class C:\n" + _function("m", 41, indent="    ")
           + "\n\nasync def outer() -> None:\n" + _function("inner", 41, indent="    "))
    names = sorted(x.name for x in long_functions(src))
    assert names == ["<source>::C.m", "<source>::outer", "<source>::outer.inner"]


def test_a_long_file_needs_a_reason_before_its_imports() -> None:
    body = "".join(f"x{i} = {i}\n" for i in range(MAX_FILE))
    assert long_file('"""Doc."""\nimport os\n' + body) == Long("<source>", MAX_FILE + 2, MAX_FILE)
    assert long_file('"""Doc."""\n# long: one table of codes, read top to bottom\nimport os\n'
                     + body) is None
    assert long_file(body) is None  # exactly 400 lines
