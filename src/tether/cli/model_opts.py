"""The model options ``tether run``, ``worker`` and ``demo`` share: timeout, retries, prices.

``--model-timeout`` and ``--model-retries`` (or ``TETHER_MODEL_TIMEOUT`` and
``TETHER_MODEL_RETRIES``) reach every :class:`~tether.models.openai.OpenAIModel` this
process builds afterwards, including those an agent module builds when a worker imports
it: the options are checked here, then set in this process's environment, where the
adapter reads its defaults. ``--prices FILE`` (or ``TETHER_PRICES``) adds a price file to
the built-in table.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Annotated

import typer

from tether.core.pricing import PriceTable
from tether.errors import UsageError
from tether.runtime.prices import ENV as PRICES_ENV
from tether.runtime.prices import price_table

TimeoutOpt = Annotated[float | None, typer.Option(
    "--model-timeout", envvar="TETHER_MODEL_TIMEOUT", metavar="SECONDS",
    help="Seconds each model HTTP request may take (OpenAI-compatible models; default 60).")]
RetriesOpt = Annotated[int | None, typer.Option(
    "--model-retries", envvar="TETHER_MODEL_RETRIES", metavar="N",
    help="Retries of a model request that failed in a way retrying may fix: timeouts, "
         "429, 5xx (default 4).")]
PricesOpt = Annotated[Path | None, typer.Option(
    "--prices", envvar=PRICES_ENV, metavar="FILE",
    help="Price file (TOML or .json): model = { input = USD, output = USD } per million "
         "tokens, added to the built-in prices.")]


def apply(timeout: float | None, retries: int | None, prices: Path | None) -> PriceTable:
    """Check the options, make the model ones this process's defaults; the price table."""
    if timeout is not None:
        if not (timeout > 0 and math.isfinite(timeout)):
            raise UsageError(f"--model-timeout (or TETHER_MODEL_TIMEOUT) must be a number of "
                             f"seconds > 0, got {timeout}")
        os.environ["TETHER_MODEL_TIMEOUT"] = repr(timeout)
    if retries is not None:
        if retries < 0:
            raise UsageError(f"--model-retries (or TETHER_MODEL_RETRIES) must be 0 or more, "
                             f"got {retries}")
        os.environ["TETHER_MODEL_RETRIES"] = str(retries)
    table = price_table(prices)
    if prices is not None:
        # Agents built later (when a worker imports them) check their cost caps against it.
        os.environ[PRICES_ENV] = str(prices.resolve())
    return table
