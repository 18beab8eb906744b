"""Reading a price file (the edge of :mod:`tether.core.pricing`, which decides).

A price file maps model names to USD per million input and output tokens, in TOML::

    "gpt-4o-mini" = { input = 0.15, output = 0.60 }
    ["my-local-model"]
    input = 0
    output = 0

or JSON (``{"gpt-4o-mini": {"input": 0.15, "output": 0.60}}``), chosen by the suffix
(``.json``; anything else is read as TOML). Its entries are added to the built-in table
and override it. ``TETHER_PRICES`` names the file when no ``prices=`` is given.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path

from tether.core.pricing import DEFAULT_PRICES, PriceTable, parse_prices
from tether.errors import UsageError

ENV = "TETHER_PRICES"


_LOADED: dict[tuple[str, int, int, int, int], PriceTable] = {}
"""Price files already read, by (path, device, inode, size, mtime): each ``Agent`` with a
cost cap and each ``start_run`` asks for the prices in force, and a file that did not
change need not be read and parsed again. A file written since has a new key."""


def load_price_file(path: str | os.PathLike[str]) -> PriceTable:
    """The built-in table with the file's prices added; UsageError naming the file and
    what is wrong with it."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError as exc:
        raise UsageError(f"price file {p} cannot be read: {exc}") from None
    key = (str(p), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    table = _LOADED.get(key)
    if table is None:
        if len(_LOADED) >= 16:  # bounded: a long-lived process that sees many files
            _LOADED.clear()
        table = _LOADED[key] = _read(p)
    return table


def _read(p: Path) -> PriceTable:
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"price file {p} cannot be read: {exc}") from None
    try:
        data = json.loads(text) if p.suffix.lower() == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:  # JSONDecodeError is a ValueError
        kind = "JSON" if p.suffix.lower() == ".json" else "TOML (a .json file is read as JSON)"
        raise UsageError(f"price file {p} is not valid {kind}: {exc}") from None
    except RecursionError:
        raise UsageError(f"price file {p} is nested too deeply; it maps each model to "
                         "{ input = USD, output = USD }") from None
    return PriceTable(prices={**DEFAULT_PRICES, **parse_prices(data, str(p))})


def price_table(path: str | os.PathLike[str] | None = None) -> PriceTable:
    """The prices in force: ``path``, else the file ``$TETHER_PRICES`` names, else the
    built-in table."""
    given = path if path is not None else (os.environ.get(ENV) or None)
    return load_price_file(given) if given is not None else PriceTable()
