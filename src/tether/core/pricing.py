"""Model prices: USD per million input and output tokens, configurable per model."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tether.errors import UsageError

# Public list prices at the time of writing; override with PriceTable(prices=...).
# The scripted model gets a small nominal price so the demo's cost figures mean something.
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "scripted": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
}


@dataclass(frozen=True, slots=True)
class PriceTable:
    """Looks up a model's price; unknown models cost ``default``."""

    prices: Mapping[str, tuple[float, float]] = field(default_factory=lambda: dict(DEFAULT_PRICES))
    default: tuple[float, float] = (0.0, 0.0)

    def knows(self, model: str) -> bool:
        """Whether ``model`` has a price here (exactly or by a listed prefix)."""
        return model in self.prices or any(model.startswith(k) for k in self.prices)

    def price(self, model: str) -> tuple[float, float]:
        """(input, output) USD per million tokens. Providers answer with dated names
        (``gpt-4o-mini-2024-07-18``), so the longest listed prefix wins."""
        if model in self.prices:
            return self.prices[model]
        best = max((k for k in self.prices if model.startswith(k)), key=len, default=None)
        return self.prices[best] if best is not None else self.default

    def cost(self, model: str, input_tokens: int, output_tokens: int) -> float:
        """USD cost of one call."""
        pin, pout = self.price(model)
        return (input_tokens * pin + output_tokens * pout) / 1_000_000


def parse_prices(data: Any, source: str) -> dict[str, tuple[float, float]]:
    """Validate a price file's content: ``{model: {"input": USD, "output": USD}}`` (USD
    per million tokens). ``source`` names the file in errors."""
    if not isinstance(data, Mapping) or not data:
        raise UsageError(f"price file {source}: expected a table of models, each with input "
                         'and output prices, e.g. "gpt-4o-mini" = { input = 0.15, output = 0.60 }')
    out: dict[str, tuple[float, float]] = {}
    for model, entry in data.items():
        where = f"price file {source}: model {model!r}"
        if not isinstance(entry, Mapping):
            raise UsageError(f"{where}: expected {{ input = USD, output = USD }} (per million "
                             f"tokens), got {type(entry).__name__}")
        extra = sorted(set(entry) - {"input", "output"})
        missing = [k for k in ("input", "output") if k not in entry]
        if extra or missing:
            raise UsageError(f"{where}: needs exactly input and output (USD per million "
                             "tokens)" + (f"; unknown {', '.join(map(repr, extra))}" if extra
                                          else "") + (f"; missing {', '.join(missing)}"
                                                      if missing else ""))
        pair = []
        for k in ("input", "output"):
            v = entry[k]
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) \
                    or v < 0:
                raise UsageError(f"{where}: {k} must be a number of USD per million tokens, "
                                 f">= 0, got {v!r}")
            pair.append(float(v))
        out[str(model)] = (pair[0], pair[1])
    return out


def cost_caps(budget: Mapping[str, float]) -> list[str]:
    """The budget keys that cap money (``cost_usd``, ``cost_usd_per_day``...)."""
    return sorted(k for k in budget if k == "cost_usd" or k.startswith("cost_usd_per_"))


def refuse_unpriced(model: str, budget: Mapping[str, float], prices: PriceTable,
                    where: str) -> None:
    """A money cap cannot be enforced for a model without a price: refuse, never count the
    model's calls as $0. ``where`` says whose budget it is (``run X``, ``agent Y``)."""
    caps = cost_caps(budget)
    if caps and not prices.knows(model):
        raise UsageError(
            f"{where}: budget {', '.join(caps)} caps cost in USD, but model {model!r} has no "
            "price, so its calls would count as $0; add it to a price file (TOML or JSON: "
            f'"{model}" = {{ input = USD, output = USD }} per million tokens) given by '
            "--prices FILE or TETHER_PRICES, or cap tokens instead")
