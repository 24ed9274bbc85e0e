"""Small helpers for the book's chapters: set-up, numbers into the prose, figures.

``glue`` stores a computed value so that the chapter's text can quote it (myst-nb's
``{glue:text}`` role); outside a book build (Colab, plain Jupyter) it does nothing, so a
chapter runs anywhere. It returns nothing, so that a glue as a cell's last line does not
print a stray number under the cell.
"""
from __future__ import annotations

import numpy as np

from ..core import stats
from ..core.stats import Comparison, accuracies, judge, say


def plain(value):
    """A numpy scalar as the Python number it holds; anything else unchanged.

    myst-nb formats glued numbers from their ``repr``, and ``repr(np.float64(0.5))`` is
    ``'np.float64(0.5)'`` since numpy 2, which ``{glue:text}`x:.3f``` cannot parse.
    """
    if isinstance(value, np.generic) or (isinstance(value, np.ndarray) and value.ndim == 0):
        return value.item()
    if isinstance(value, str) and type(value) is not str:  # a Design: glue its words
        return str(value)
    return value


def glue(name: str, value, display: bool = False) -> None:
    """Make ``value`` quotable in the chapter's text as ``{glue:text}`name```."""
    try:
        from myst_nb import glue as _glue
    except ImportError:  # Colab or plain Jupyter: nothing to glue into
        return
    _glue(name, plain(value), display=display)


def describe(profile) -> str:
    """One line saying which profile the numbers below come from."""
    label = {"ci": "CI (a few calls and examples: proves the chapter runs; its numbers mean nothing)",
             "small": "SMALL (sized for 2 CPU cores; fewer calls, shots and prompt tokens than the papers)",
             "colab": "COLAB (sized for a free Colab GPU; the papers' L, d and shots, fewer calls)",
             "full": "FULL (the papers' settings)"}.get(profile.name, profile.name)
    return (f"profile: {label}\n  L={profile.prompt_length}, d={profile.intrinsic_dim}, population={profile.popsize}, "
            f"budget={profile.budget} calls, k={profile.k_shot} per class, "
            f"test={'all' if profile.test_size is None else profile.test_size} examples, seeds={list(profile.seeds)}")


def style() -> None:
    """A plain, readable matplotlib style for every figure in the book."""
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.figsize": (7.5, 4.0), "figure.dpi": 110, "axes.grid": True, "grid.alpha": 0.3,
                         "axes.spines.top": False, "axes.spines.right": False, "legend.frameon": False})


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1, as :func:`compare` quotes) of per-seed numbers.

    One number has no spread: its standard deviation is reported as 0.
    """
    v = np.asarray(values, dtype=float)
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


# Verdicts: a sentence that judges measured numbers is computed from them, never written by hand,
# by the book's one rule (bbt_mini.core.stats; stated in chapter 1, "How the book judges a difference").


def compare(a, b, name_a: str, name_b: str, what: str = "test accuracy", fmt: str = ".3f",
            unit: str = "seeds") -> Comparison:
    """Compare two measured things in words: which is higher, by how much, and whether that is noise.

    ``a`` and ``b`` are per-seed results (lists of result dicts), one result dict (a fixed
    reference that has no seed, such as the manual prompt), per-seed numbers (lists), or
    ``b`` one number (a fixed reference). With results on both sides the comparison is paired
    by test sentence, so the test set's sampling noise is counted, and by seed too when both
    sides are runs of the same seeds (a seed's split, and its ``A`` for BBT and random search,
    shared: the per-seed differences carry the seed noise); against a fixed reference, or runs
    of other seeds, the two sides' seed spreads are counted apart. With numbers it is Welch's t
    on the per-seed values. The sentence says which. The rule, two-sided at 5%, is
    :func:`bbt_mini.core.stats.judge`; a difference it cannot tell from zero is reported as
    *no detectable difference*; with one run on each side (or one against a fixed reference,
    or seeds that agree exactly) the sentence says it cannot judge, and why.

    ``unit`` names what the values are per (``"seeds"``; ``"sentences"`` when the numbers are
    per test sentence). Returns a :class:`bbt_mini.core.stats.Comparison` (difference, its 95%
    interval, p-value, verdict); glue its ``sentence`` into the prose.
    """
    return say(judge(a, b), a, b, name_a, name_b, what, fmt, unit)


def compare_together(*comparisons: tuple) -> list[Comparison]:
    """One claim's primary comparisons, judged as one family by Holm's method.

    Each argument is what :func:`compare` takes, as a tuple ``(a, b, name_a, name_b)``, optionally
    ending in a dict of its keywords (``what``, ``fmt``, ``unit``). The p-values are adjusted by
    :func:`bbt_mini.core.stats.holm_family` (Holm, 1979), so that the chance of one or more false
    differences among them stays at 5%, and each verdict is read from its adjusted p; each
    sentence says so. A null's "detects X or more 80% of the time" is at the unadjusted 5%
    level: within a family a comparison needs a little more than that.
    """
    if len(comparisons) < 2:
        raise ValueError("a family needs two or more comparisons; judge one with compare()")
    calls = [(c[:-1], c[-1]) if isinstance(c[-1], dict) else (c, {}) for c in comparisons]
    for args, _ in calls:
        if len(args) != 4:
            raise ValueError(f"each comparison is (a, b, name_a, name_b[, keywords]); got {len(args)} items")
    judged = stats.holm_family([judge(a, b) for (a, b, _, _), _ in calls])
    out = []
    for c, ((a, b, name_a, name_b), keywords) in zip(judged, calls):
        c = say(c, a, b, name_a, name_b, **keywords)
        note = f" (p adjusted by Holm's method over this claim's {len(calls)} primary comparisons)"
        out.append(Comparison(**{**c.__dict__, "sentence": c.sentence + note}))
    return out


def difference(a, b, name_a: str, name_b: str, what: str = "test accuracy", fmt: str = ".3f",
               unit: str = "seeds") -> Comparison:
    """A secondary comparison: both sides' numbers and the difference with its 95% interval, no verdict.

    Each chapter names its few primary comparisons before it runs them and judges those with
    :func:`compare`; every other pair of numbers is shown with this, computed by the same rule
    (paired when both sides are results) but worded without "higher", "lower" or "no detectable
    difference": the more comparisons a page judges, the more of its verdicts are wrong by
    chance, so only the named ones are judged. The returned :class:`Comparison` still carries the
    rule's verdict for code that needs it; its ``sentence`` does not say it.
    """
    return say(judge(a, b), a, b, name_a, name_b, what, fmt, unit, verdict=False)


def shape(points: dict, x_name: str, what: str = "test accuracy", paper: str = "", fmt: str = ".3f",
          min_seeds: int = 3) -> str:
    """What a sweep (``{x: per-seed values or per-seed results}``) shows about the shape of a curve, in words.

    A shape claim ("rises then falls", "saturates") needs at least ``min_seeds`` seeds at every
    point (and a standard-error band in the figure). With fewer, the sentence lists the points,
    says that they cannot show a shape, and states ``paper`` as what the paper found. With
    enough, it names the point with the highest mean and judges it against the smallest and the
    largest ``x`` by the book's rule (:func:`compare`; paired when the points are results), so
    "rises then falls" is said only when both differences are detectable; a null states the
    difference that comparison detects 80% of the time.
    """
    if len(points) < 2:
        raise ValueError(f"a shape needs at least two points, got {len(points)}")
    xs = sorted(points)
    vals = {x: accuracies(points[x]) for x in xs}
    listed = ", ".join(f"{x_name} = {x}: {vals[x].mean():{fmt}}" for x in xs)
    found = f" The paper found {paper}." if paper else ""
    fewest = min(v.size for v in vals.values())
    if fewest < min_seeds:
        seeds = "one seed" if fewest == 1 else f"{fewest} seeds"
        return (f"{what} by {x_name}: {listed}. With {seeds} per point (a shape needs {min_seeds}), "
                f"these points cannot show a shape in {x_name}.{found}")
    best = max(xs, key=lambda x: vals[x].mean())
    parts = [f"{what} by {x_name}: {listed}; the highest mean is at {x_name} = {best}"]
    for end in dict.fromkeys((xs[0], xs[-1])):
        if end != best:
            c = judge(points[best], points[end])
            parts.append(f"against {x_name} = {end}: " + (
                f"no detectable difference (it detects {c.detectable:{fmt}} or more 80% of the time)"
                if c.verdict == "no detectable difference"
                else c.verdict if c.verdict == "cannot judge"
                else f"{c.verdict} by {abs(c.diff):{fmt}} (95% interval {c.low:+{fmt}} to {c.high:+{fmt}})"))
    return "; ".join(parts) + "." + found


def plain_log_ticks(ax, axis: str = "x", at_data: bool = True) -> None:
    """Label a logarithmic axis with plain numbers (30, 100, 2,000), not matplotlib's 3x10^1.

    ``at_data``: with at most 12 distinct plotted values (budgets, shots), put a tick at each.
    """
    from matplotlib.ticker import FuncFormatter, NullFormatter

    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.0f}" if v >= 1 else f"{v:.2g}"))
    target.set_minor_formatter(NullFormatter())
    values = sorted({float(v) for line in ax.get_lines()
                     for v in (line.get_xdata() if axis == "x" else line.get_ydata())
                     if np.isfinite(v) and v > 0})
    if at_data and 0 < len(values) <= 12:  # few budgets: a tick at each, so every one is read as a number
        (ax.set_xticks if axis == "x" else ax.set_yticks)(values)


class Design(str):
    """A design's sentence (:func:`design`), carrying its numbers: ``detectable``, ``predicted``,
    ``power`` (against the predicted effect) and ``decidable`` (``detectable <= |predicted|``)."""

    detectable: float
    predicted: float
    power: float
    decidable: bool


def design(what: str, predicted: float, se: float, df: float, fmt: str = ".3f", family: int = 1) -> Design:
    """Before an experiment runs: can its comparison decide the effect the claim predicts?

    ``se`` and ``df`` are the comparison's planned standard error and degrees of freedom
    (:func:`bbt_mini.core.stats.planned_se`, or a pilot's :class:`Comparison`); ``predicted`` is
    the effect the claim predicts (from the papers or a pilot). The sentence says the difference
    the comparison detects 80% of the time at the rule's 5% level and whether that is within the
    prediction: "it can decide it", or "it cannot decide it here" with its power against it.
    ``predicted = 0`` (a predicted null) says what a null would and would not show; it is never
    ``decidable``, since no result confirms a null.

    ``family``: the number of primary comparisons judged with it by Holm's method
    (:func:`compare_together`); it is then planned at 5% / ``family``, the level Holm's method
    holds the family's smallest p to (the others are held to less, so this is the cautious plan).
    """
    if family < 1:
        raise ValueError(f"family counts the comparisons judged together: 1 or more, got {family}")
    alpha = stats.ALPHA / family
    level = "at the rule's 5% level" if family == 1 else \
        f"at 5% / {family}, its family's strictest level by Holm's method"
    found = stats.detectable(se, df, alpha=alpha)
    chance = stats.power(abs(predicted), se, df, alpha=alpha)
    if not np.isfinite(found):
        text = (f"{what}: this comparison cannot judge any difference at these sizes (no spread across "
                f"seeds to judge by); the claim predicts {predicted:+{fmt}}: it cannot decide it here")
        decidable = False
    elif predicted == 0:  # a predicted null can be contradicted, never confirmed
        text = (f"{what}: this comparison detects a difference of {found:{fmt}} or more 80% of the time "
                f"({level}); the claim predicts no difference: a null would be consistent "
                f"with it without confirming it, and a true difference of {found:{fmt}} or more would most "
                f"likely show")
        decidable = False
    else:
        decidable = found <= abs(predicted)
        verdict = "it can decide it" if decidable else "it cannot decide it here"
        text = (f"{what}: this comparison detects a difference of {found:{fmt}} or more 80% of the time "
                f"({level}); the claim predicts {predicted:+{fmt}}: {verdict} "
                f"(power {chance:.2f} against {predicted:+{fmt}})")
    out = Design(text)
    out.detectable, out.predicted, out.power, out.decidable = found, predicted, chance, bool(decidable)
    return out


def against_prediction(comparison, predicted: str, effect: float | None = None, fmt: str = ".3f") -> str:
    """Whether ``comparison`` (from :func:`compare`) came out as ``predicted`` before the run.

    ``predicted``: "higher", "lower" or "no detectable difference" (the first side against the
    second); ``effect``: the size of the predicted difference, if the chapter stated one. A
    detectable difference the other way is against the prediction. A null where a difference was
    predicted is not: it is undecided when the comparison was too weak to see ``effect`` (its
    power against it is printed; without ``effect``, the difference it detects 80% of the time),
    and "not as predicted" when it had at least 80% power to see ``effect``. A null that was
    predicted is consistent with the prediction, never a confirmation of it.
    """
    outcomes = ("higher", "lower", "no detectable difference")
    if predicted not in outcomes:
        raise ValueError(f"predicted must be one of {outcomes}, got {predicted!r}")
    verdict = comparison.verdict
    if verdict not in outcomes:
        return "no verdict either way (no spread to judge by)"
    found = comparison.detectable
    if verdict == predicted == outcomes[2]:
        return (f"consistent with the prediction (a null cannot confirm it; this comparison would have "
                f"detected a difference of {found:{fmt}} or more 80% of the time)")
    if verdict == predicted:
        return "as predicted"
    if verdict != outcomes[2]:
        return "against the prediction"
    if effect is None:
        return (f"not decided: no detectable difference, and this comparison detects only a difference of "
                f"{found:{fmt}} or more 80% of the time")
    chance = stats.power(abs(effect), comparison.se, comparison.df)
    if chance >= 0.8:
        return (f"not as predicted: no detectable difference, though this comparison had power {chance:.2f} "
                f"to detect the predicted effect {abs(effect):{fmt}}")
    return (f"not decided: no detectable difference, and this comparison had power {chance:.2f} to detect "
            f"the predicted effect {abs(effect):{fmt}}")
