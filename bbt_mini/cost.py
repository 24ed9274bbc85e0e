"""From the black box's meter to money, and from curves to "calls to reach a target".

Providers bill tokens. The price list below is an **assumption** for illustration, stated
per million input tokens in US dollars, spanning the range of public price lists for
hosted language models in 2024-2026; pass your own. Output tokens are ignored: a
classification call returns a few logits.
"""
from __future__ import annotations

import numpy as np

# Assumed prices, US$ per 1,000,000 input tokens (illustrative, not any provider's quote).
PRICES = {
    "small hosted model ($0.10 / M tokens)": 0.10,
    "mid-size model ($1 / M tokens)": 1.00,
    "frontier model ($10 / M tokens)": 10.00,
}


def dollars(tokens: float, price_per_million: float) -> float:
    """What ``tokens`` input tokens cost at ``price_per_million`` dollars per million."""
    if tokens < 0 or price_per_million < 0:
        raise ValueError("tokens and prices must be non-negative")
    return tokens * price_per_million / 1e6


def tokens_per_call(result: dict) -> float:
    """Average tokens billed per API call of a run (its meter: training, dev and test calls)."""
    meter = result["meter"]
    if not meter["calls"]:
        raise ValueError("this result has no metered calls")
    return meter["tokens"] / meter["calls"]


def cost_table(result: dict, prices: dict | None = None) -> dict:
    """A run's bill at each price: ``{price name: dollars}``, from its meter's tokens."""
    prices = PRICES if prices is None else prices
    return {name: dollars(result["meter"]["tokens"], p) for name, p in prices.items()}


def best_so_far(curve: list, key: str = "dev_acc") -> tuple[np.ndarray, np.ndarray]:
    """(calls, best ``key`` reached by then) from a run's curve (entries without ``key`` are skipped)."""
    points = [(e["calls"], e[key]) for e in curve if key in e]
    if not points:
        raise ValueError(f"the curve has no {key!r} entries")
    calls, values = map(np.asarray, zip(*points))
    return calls, np.maximum.accumulate(values)


def calls_to_target(curve: list, target: float, key: str = "dev_acc") -> float:
    """API calls after which ``key`` first reaches ``target`` (``inf`` if it never does)."""
    calls, best = best_so_far(curve, key)
    hit = np.nonzero(best >= target)[0]
    return float(calls[hit[0]]) if len(hit) else float("inf")


def loss_at(curve: list, calls: np.ndarray) -> np.ndarray:
    """Best training loss reached by each number of ``calls`` (a step function of the curve)."""
    c = np.asarray([e["calls"] for e in curve])
    best = np.minimum.accumulate([e["train_loss"] for e in curve])
    idx = np.searchsorted(c, calls, side="right") - 1
    return np.where(idx >= 0, best[np.clip(idx, 0, None)], np.nan)
