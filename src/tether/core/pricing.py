"""Model prices: USD per million input and output tokens, configurable per model."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

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
