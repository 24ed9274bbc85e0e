"""From the black box's meter to money, and from curves to "calls to reach a target".

Providers bill tokens. The price list below is an **assumption** for illustration, stated
per million input tokens in US dollars, spanning the range of public price lists for
hosted language models in 2024-2026; pass your own. Output tokens are ignored: a
classification call returns a few logits.
"""
from __future__ import annotations

import numpy as np

from .stats import how, judge

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


def calls_to_loss(curve: list, target: float) -> float:
    """API calls after which the best training loss so far first reaches ``target`` or below (``inf`` if never):
    "trains faster" as a number, one per run."""
    calls = np.asarray([e["calls"] for e in curve])
    best = np.minimum.accumulate([e["train_loss"] for e in curve])
    hit = np.nonzero(best <= target)[0]
    return float(calls[hit[0]]) if len(hit) else float("inf")


def loss_every_run_reaches(results: list) -> float:
    """The lowest training loss that every run in ``results`` reaches: the largest of the runs' best losses.

    A target for :func:`calls_to_loss` that is fixed by a rule before the runs and met by each of
    them, so every run has a finite number of calls to it."""
    if not results:
        raise ValueError("no runs given")
    return float(max(min(e["train_loss"] for e in r["curve"]) for r in results))


def loss_at(curve: list, calls: np.ndarray) -> np.ndarray:
    """Best training loss reached by each number of ``calls`` (a step function of the curve)."""
    c = np.asarray([e["calls"] for e in curve])
    best = np.minimum.accumulate([e["train_loss"] for e in curve])
    idx = np.searchsorted(c, calls, side="right") - 1
    return np.where(idx >= 0, best[np.clip(idx, 0, None)], np.nan)


# Gain against the budget: runs made with ``test_at`` (bbt_mini.methods.tuning) give the test accuracy of
# the prompt each budget would have returned, so one run per seed gives the whole curve.

def accuracy_by_budget(results: list, key: str = "test_accuracy") -> dict:
    """``{budget: [per-run value]}`` from runs made with the same ``test_at`` budgets (one per seed)."""
    if not results:
        raise ValueError("no runs given")
    by_budget: dict = {}
    for r in results:
        if not r.get("test_at"):
            raise ValueError("a run without test_at entries: run it with test_at=[budgets]")
        for entry in r["test_at"]:
            by_budget.setdefault(entry["budget"], []).append(entry[key])
    if len({len(v) for v in by_budget.values()}) != 1:
        raise ValueError("the runs were tested at different budgets; give runs with the same test_at")
    return dict(sorted(by_budget.items()))


def results_by_budget(results: list) -> dict:
    """``{budget: [per-run test entry]}`` from runs made with the same ``test_at`` budgets (one per seed).

    Each entry is the run's ``test_at`` entry with the run's seed, method and test labels added,
    so that :func:`bbt_mini.core.stats.judge` can pair it by test sentence with another result.
    """
    accuracy_by_budget(results)  # the same checks: every run has test_at, all at the same budgets
    by_budget: dict = {}
    for r in results:
        for entry in r["test_at"]:
            extra = {k: r[k] for k in ("method", "seed", "test_labels") if k in r}
            by_budget.setdefault(entry["budget"], []).append({**extra, **entry})
    return dict(sorted(by_budget.items()))


def incumbent_curve(curve: list, key: str = "train_acc") -> tuple[np.ndarray, np.ndarray]:
    """``(calls, value)`` per generation of ``key`` for the incumbent: the candidate with the lowest training
    loss so far (the first one found, on a tie), the prompt a tuning run checks on dev."""
    calls, values, best = [], [], None
    for entry in curve:
        if best is None or entry["train_loss"] < best["train_loss"]:
            best = entry
        calls.append(entry["calls"])
        values.append(best[key])
    return np.asarray(calls), np.asarray(values, dtype=float)


def train_accuracy(result: dict, budget: int | None = None) -> float:
    """The training accuracy of the prompt a tuning run returned, or (``budget``) the prompt its ``test_at``
    entry for that budget scored: the incumbent when that prompt was last checked on dev."""
    entry = result if budget is None else next((e for e in result.get("test_at", ()) if e["budget"] == budget), None)
    if entry is None:
        raise ValueError(f"this run has no test_at entry for {budget} calls: run it with test_at=[..., {budget}]")
    checked = entry["best_dev_calls"] or entry["calls"]  # 0: never checked on dev, the last incumbent returned
    calls, acc = incumbent_curve(result["curve"])
    if not len(calls) or calls[0] > checked:
        raise ValueError(f"the run's curve has no generation by {checked} calls")
    return float(acc[calls <= checked][-1])


def gain_from(tuned: dict, reference, task: str, name: str = "BBT", other: str = "the manual prompt"):
    """The smallest budget from which ``name`` is detectably above ``other``, and the sentence.

    ``tuned``: ``{budget: per-seed results}`` (:func:`results_by_budget`: paired by test sentence)
    or ``{budget: per-seed test accuracy}`` (:func:`accuracy_by_budget`: Welch); ``reference``:
    the other method (one result or one number for a fixed reference such as the manual prompt,
    or per-seed results or numbers). At each budget the two are judged by the book's verdict
    rule (:func:`bbt_mini.core.stats.judge`, two-sided at 5%); the answer is the smallest budget
    from which *every* larger budget shown is also "higher", or ``None`` when the last budget is
    not. Returns ``(budget or None, {budget: Comparison}, sentence)``.
    """
    if not tuned:
        raise ValueError("no budgets given")
    comps = {b: judge(tuned[b], reference) for b in sorted(tuned)}
    budgets = list(comps)
    since = None
    for b in reversed(budgets):
        if comps[b].verdict != "higher":
            break
        since = b
    last = budgets[-1]
    rule = how(comps[last])

    def at(b):
        c = comps[b]
        if c.verdict == "cannot judge":
            return f"{b} calls: {c.diff:+.3f}, cannot judge ({c.reason})"
        return f"{b} calls: {c.diff:+.3f}, 95% interval {c.low:+.3f} to {c.high:+.3f}"

    if since is not None:
        tail = f"; {at(last)}" if last != since else ""
        return since, comps, (f"on {task}, {name}'s gain over {other} is detectable from {since} calls on, "
                              f"at every budget shown from there ({at(since)}{tail}; {rule})")
    earlier = [b for b in budgets if comps[b].verdict == "higher"]
    also = (f"; it was at {', '.join(map(str, earlier))} calls, but not at every larger budget"
            if earlier else "")
    below = f", where {name} is detectably below {other}" if comps[last].verdict == "lower" else ""
    return None, comps, (f"on {task}, {name}'s gain over {other} is not detectable at the last budget "
                         f"shown ({at(last)}; {rule}){below}{also}")
