"""docs/design.md's layer tables say what the import contract in pyproject.toml checks.

`make lint` runs the contract itself (`lint-imports`); this keeps its prose twin
honest: the same layers in the same order, every module of a layer named in its
row, and every exception the contract still ignores listed (and no other).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "tether"


def _contracts() -> dict[str, dict[str, Any]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    return {c["id"]: c for c in config["contracts"]}


def _section() -> str:
    text = (ROOT / "docs" / "design.md").read_text()
    return text[text.index("## Layering\n"):text.index("## Storage\n")]


def _rows(table: str) -> list[list[str]]:
    """Cells of the numbered rows of a markdown table (``\\|`` inside a cell is kept)."""
    rows = []
    for line in table.splitlines():
        if re.match(r"\| \d+ \|", line):
            rows.append([c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]])
    return rows


def _tables() -> tuple[list[list[str]], list[list[str]]]:
    packages, rest = _section().split("**Runtime's modules**")
    return _rows(packages), _rows(rest.split("**Forbidden imports**")[0])


def _norm(layer: str) -> str:
    return " | ".join(part.strip() for part in layer.strip("`").split("|"))


def test_the_package_table_is_the_contracts_layers_in_order() -> None:
    packages, _ = _tables()
    assert [_norm(r[1]) for r in packages] == [_norm(x) for x in _contracts()["layers"]["layers"]]


def test_the_runtime_table_is_the_runtime_contracts_layers_in_order() -> None:
    _, runtime = _tables()
    want = [_norm(x) for x in _contracts()["runtime-layers"]["layers"]]
    assert [_norm(r[1]) for r in runtime] == want


def test_every_module_is_named_in_its_layers_row() -> None:
    packages, _ = _tables()
    missing = []
    for row in packages:
        for name in _norm(row[1]).split(" | "):
            folder = SRC / name
            if name == "runtime" or not folder.is_dir():
                continue  # runtime has its own table; a module is its own row's name
            for f in sorted(folder.glob("*.py")):
                if f.name != "__init__.py" and f"`{f.name}`" not in row[2] \
                        and f"`{name}/{f.name}`" not in row[2]:
                    missing.append(f"{name}/{f.name}")
    assert not missing, f"modules missing from docs/design.md's layer table: {missing}"


def test_the_exceptions_listed_are_the_ones_the_contract_ignores() -> None:
    ignored = set()
    for contract in _contracts().values():
        ignored |= {x.removeprefix("tether.").replace(" -> tether.", " -> ")
                    for x in contract.get("ignore_imports", [])}
    section = _section().split("### Exceptions to the layering")[1]
    listed = set(re.findall(r"^\| `([\w.]+ -> [\w.]+)` \|", section, flags=re.MULTILINE))
    assert listed == ignored
