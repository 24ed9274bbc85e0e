"""The book's one verdict rule: is a measured difference more than noise?

Read :func:`judge` first. Two methods are compared on a number such as test accuracy,
measured over a few seeds (3 in the small profile). Two kinds of noise move that number:

* **seeds**: another seed draws another training split, projection and search, so another
  prompt; the spread of the per-seed numbers shows it;
* **test sentences**: the test set is a sample (200 sentences in the small profile), the
  same for every seed and every method. The per-seed spread cannot show this part (every
  seed sees the same sentences), yet it is what makes a tuned method against the manual
  prompt uncertain: about 0.05 in accuracy at 100 sentences, 0.027 at 300.

When both sides are results that record, per test sentence, which label they answered
(``test_answers``; every result of :mod:`bbt_mini.core.results` does), the comparison is
**paired** sentence by sentence. With ``C[s, j]`` = 1 if seed ``s`` answered sentence ``j``
correctly, the difference is ``D = mean(C_a) - mean(C_b)`` and its variance has two parts:

* sentences: ``S_d^2 / N``, the variance over sentences of the per-sentence difference
  ``d_j = mean_s C_a[s, j] - mean_s C_b[s, j]``. Sentences both sides get right or both get
  wrong add nothing (that is the pairing); this is where the manual prompt's test-set noise enters.
* seeds, in one of two forms:

  - **paired by seed** when both sides are runs on the same seeds (the same seed numbers on
    each side, each once, at least two): a seed draws one k-shot split for every method, and
    one projection ``A`` for BBT and random search, so a seed that helps one side tends to
    help the other. The part is ``s_D^2 / n`` with ``n - 1`` df, ``s_D^2`` the sample variance
    of the per-seed differences ``D_s = mean_j (C_a[s, j] - C_b[s, j])``: what the two sides
    share cancels (Student's paired t on the seeds);
  - **unpaired** otherwise (other seeds, or a fixed reference): ``s_a^2 / n_a + s_b^2 / n_b``,
    ``s^2`` the sample variance (ddof=1) of a side's per-seed accuracies, ``n - 1`` df each; a
    fixed reference (one result given alone, such as the manual prompt, which has no seed) has none.

  Either form also holds the seeds' sentence-level flips, which the sentence part counts
  again: a small, conservative double count. Paired by seed, the seed part has ``n - 1`` df
  for both sides together, and the df read the parts guarded (:func:`_guarded`), which keeps
  the rule near 5% with so few df.

``t = D / sqrt(V)`` is referred to Student's t with the Welch-Satterthwaite degrees of freedom
of those parts (``n - 1`` for each seed part, ``N - 1`` for the sentence part), two-sided at
``ALPHA`` = 5%. With only per-seed numbers (nothing to pair) the same formula keeps only its
seed parts, each the plain sample variance: that is Welch's t-test. A verdict is "higher",
"lower", "no detectable difference", or "cannot judge" with the reason (one run on each side,
or seeds that agree exactly, leave no spread to judge by).

Why Student's t and not two standard errors, or a bootstrap that resamples seeds: with 3 seeds
a spread is estimated from 2 degrees of freedom, and a rule that treats it as known (2 standard
errors) or resamples 3 numbers (whose bootstrap variance is (n-1)/n of the sample's) calls a
true null a difference more often than 5% of the time; ``tests/test_stats.py`` measures this
rule and the old 2-SE rule on simulated nulls.

Results on different test sets cannot be paired: :func:`correctness` refuses them.

What the rule can find (section "power"): :func:`power` is the chance that it calls a true
difference a difference, :func:`detectable` the smallest difference it finds 80% of the time,
and :func:`planned_se` the standard error and df it will compute, from a design before it runs.
A null verdict is read with them: "no detectable difference" at a power of 0.3 says little.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.optimize
import scipy.special
import scipy.stats

ALPHA = 0.05  # two-sided level of every verdict


# ------------------------------------------------------------------ Student's t (SciPy)

def t_pvalue(t: float, df: float) -> float:
    """Two-sided p-value of ``t`` under Student's t with ``df`` degrees of freedom (``inf``: normal)."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    return float(2.0 * scipy.special.stdtr(df, -abs(t)))  # Student's t CDF (as scipy.stats.t, without its overhead)


def t_critical(df: float, alpha: float = ALPHA) -> float:
    """The ``t`` whose two-sided p-value is ``alpha`` (1.960 for ``df = inf``, 4.303 for 2)."""
    return float(-scipy.special.stdtrit(df, alpha / 2.0))


# ------------------------------------------------------------------ what a side of a comparison is

def correctness(results) -> tuple[np.ndarray, str]:
    """``(C, test set)``: one row per result, 1 where it answered a test sentence correctly.

    Every result must record ``test_answers``, ``test_labels`` and ``test_set`` (the hash of
    its test sentences and labels), and all must share one test set; its ``test_accuracy``
    must be the mean of its row (a check that answers and score belong together).
    """
    rows, sets = [], set()
    for r in results:
        missing = [k for k in ("test_answers", "test_labels", "test_set") if k not in r]
        if missing:
            raise ValueError(f"a result of {r.get('method', '?')} (seed {r.get('seed', '?')}) lacks {missing}: "
                             "it cannot be paired by test sentence; rerun it with this version of bbt_mini")
        answers, labels = np.asarray(r["test_answers"]), np.asarray(r["test_labels"])
        if answers.shape != labels.shape or answers.ndim != 1 or answers.size == 0:
            raise ValueError(f"test_answers ({answers.shape}) and test_labels ({labels.shape}) must be one "
                             "equal-length, non-empty list each")
        row = (answers == labels).astype(float)
        if "test_accuracy" in r and abs(row.mean() - r["test_accuracy"]) > 1e-9:
            raise ValueError(f"test_answers give accuracy {row.mean():.6f} but the result says "
                             f"{r['test_accuracy']:.6f}: answers and score do not belong together")
        rows.append(row)
        sets.add(r["test_set"])
    if not rows:
        raise ValueError("no results given")
    if len(sets) > 1:
        raise ValueError(f"these results were scored on different test sets ({sorted(sets)}); "
                         "a paired comparison needs the same test sentences on both sides")
    return np.stack(rows), sets.pop()


def is_result(x) -> bool:
    return isinstance(x, dict)


def is_results(x) -> bool:
    """A non-empty list or tuple of result dicts (per-seed results)."""
    return isinstance(x, (list, tuple)) and len(x) > 0 and all(isinstance(r, dict) for r in x)


def values(x) -> np.ndarray:
    """Per-seed numbers as a 1-d float array (refused: empty, nested or not finite)."""
    v = np.atleast_1d(np.asarray(x, dtype=float))
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"expected one number or a non-empty list of per-seed numbers, got {x!r}")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"per-seed numbers must be finite, got {v.tolist()}")
    return v


def accuracies(x, key: str = "test_accuracy") -> np.ndarray:
    """Per-seed numbers from numbers, a list of results or one result (its ``key``)."""
    if is_result(x):
        return values(x[key])
    if is_results(x):
        return values([r[key] for r in x])
    return values(x)


# ------------------------------------------------------------------ the rule

@dataclass(frozen=True)
class Comparison:
    """The outcome of :func:`judge`: the difference, its 95% interval, the p-value and the verdict.

    ``rule`` says how it was judged: ``"paired"`` (by test sentence; ``seeds_paired`` says
    whether by seed too, and over how many seeds) or ``"welch"`` (per-seed numbers only);
    ``reason`` says why a comparison is "cannot judge". ``sentence`` is filled in by :func:`say`
    (and :func:`bbt_mini.book.notebook.compare`).
    """

    diff: float  # mean of a minus mean of b
    se: float  # standard error of diff (nan: cannot judge)
    low: float  # 95% interval of diff (nan: cannot judge)
    high: float
    p: float  # two-sided p-value (nan: cannot judge)
    df: float  # Welch-Satterthwaite degrees of freedom
    verdict: str
    rule: str
    n_a: int
    n_b: int | None  # None: b is a fixed reference
    sentences: int | None = None  # test sentences paired (None: Welch)
    reason: str = ""
    seeds_paired: int | None = None  # seeds paired (both sides ran them); None: seeds not paired
    sentence: str = ""

    def __str__(self) -> str:
        return self.sentence

    @property
    def detectable(self) -> float:
        """The true difference this comparison finds 80% of the time at its level (nan: cannot judge)."""
        return detectable(self.se, self.df)


def _satterthwaite(parts: list[tuple[float, float]]) -> float:
    """Degrees of freedom of a sum of variance estimates ``[(variance, its df)]``."""
    total = sum(v for v, _ in parts)
    denom = sum(v * v / df for v, df in parts if v > 0 and df > 0)
    return total * total / denom if denom > 0 else math.inf


GUARD = 0.3  # for the df, each part's variance is read at the top of its one-sided 70% interval


def _guarded(parts: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The parts as the rule's df reads them when it pairs by seed: each estimate ``v`` with ``k`` df
    becomes ``v k / chi2_k(GUARD)``; the variance itself (the se) is not changed.

    Welch-Satterthwaite's df from estimated variances runs high when a part of few df (the seeds'
    2 with 3 seeds paired) happens to come out small beside a part of many (the sentences'): in a
    normal simulation of a 2-df part beside a known one (100,000 nulls per ratio of the two) the
    rule then called a null a difference up to 7.8% of the time, and on the book's simulated nulls
    seed-paired at 300 sentences 6.6% (``tests/test_stats.py``). Read at the top of its 70%
    interval, a part of few df weighs nearer what it may truly be: at most 5.4% in the normal
    simulation (0.2, the 80% interval's top, gave at most 5.0% but cost more power), at most 4.6%
    on the book's nulls. Parts of equal df keep their df exactly (a common factor cancels).
    """
    return [(v * df / float(scipy.stats.chi2.ppf(GUARD, df)), df) if v > 0 and df > 0 else (v, df)
            for v, df in parts]


def _seed_variance(C: np.ndarray) -> float:
    """The sample variance (ddof=1) of the per-seed accuracies (the rows' means)."""
    return float(C.mean(1).var(ddof=1))


def _decide(diff: float, parts: list, rule: str, n_a: int, n_b, sentences=None, alpha: float = ALPHA,
            seeds_paired: int | None = None) -> Comparison:
    """The verdict from the parts of the variance; paired by seed, the df read them guarded (:func:`_guarded`)."""
    var = sum(v for v, _ in parts)
    if var <= 0:
        if diff == 0 and sentences is not None:  # the same answer on every sentence
            return Comparison(0.0, 0.0, 0.0, 0.0, 1.0, math.inf, "no detectable difference", rule, n_a, n_b, sentences,
                              seeds_paired=seeds_paired)
        return Comparison(diff, math.nan, math.nan, math.nan, math.nan, math.nan, "cannot judge", rule, n_a, n_b,
                          sentences, "the seeds agree exactly, which gives no scale", seeds_paired=seeds_paired)
    se = math.sqrt(var)
    df = _satterthwaite(_guarded(parts) if seeds_paired else parts)
    half = t_critical(df, alpha) * se
    p = t_pvalue(diff / se, df)
    verdict = "no detectable difference" if p >= alpha else ("higher" if diff > 0 else "lower")
    return Comparison(diff, se, diff - half, diff + half, p, df, verdict, rule, n_a, n_b, sentences,
                      seeds_paired=seeds_paired)


def shared_seeds(a, b) -> list | None:
    """The seeds both sides ran, sorted, if the two lists of results are runs of the same seeds
    (each side every seed once, at least two); ``None`` otherwise (a fixed reference, a result
    without a seed, a seed run twice, or seeds one side lacks): those sides are not paired by seed."""
    if is_result(a) or is_result(b):
        return None
    sa, sb = [r.get("seed") for r in a], [r.get("seed") for r in b]
    if None in sa or None in sb or len(set(sa)) != len(sa) or len(set(sb)) != len(sb) or set(sa) != set(sb):
        return None
    return sorted(sa) if len(sa) > 1 else None


def by_seed(results, seeds: list) -> list:
    """``results`` in the order of ``seeds``."""
    at = {r["seed"]: r for r in results}
    return [at[s] for s in seeds]


def paired(a, b, alpha: float = ALPHA) -> Comparison:
    """The rule for results: ``a`` per-seed results (a list) or one; ``b`` a list, or one result (fixed).

    A side given as one result dict is a fixed reference (no seed: the manual prompt); a side
    given as a list is per-seed results, whose seed spread is estimated (a list of one borrows
    the other side's, and with one run on each side there is no seed spread to judge by).
    Two lists of runs of the same seeds (:func:`shared_seeds`) are paired by seed as well as by
    sentence: the seed part is the variance of the per-seed differences over ``n``, ``n - 1`` df.
    """
    a_fixed, b_fixed = is_result(a), is_result(b)
    if a_fixed and b_fixed:
        raise ValueError("at most one side can be a fixed reference (one result dict); give a's per-seed results")
    seeds = shared_seeds(a, b)
    if seeds is not None:
        a, b = by_seed(a, seeds), by_seed(b, seeds)
    Ca, set_a = correctness([a] if a_fixed else a)
    Cb, set_b = correctness([b] if b_fixed else b)
    if set_a != set_b or Ca.shape[1] != Cb.shape[1]:
        raise ValueError(f"the two sides were scored on different test sets ({set_a} against {set_b}); "
                         "a paired comparison needs the same test sentences on both sides")
    N = Ca.shape[1]
    n_a, n_b = len(Ca), (None if b_fixed else len(Cb))
    diff = float(Ca.mean() - Cb.mean())
    d = Ca.mean(0) - Cb.mean(0)
    parts = [(float(d.var(ddof=1)) / N if N > 1 else 0.0, N - 1)]
    if seeds is not None:  # Student's paired t on the seeds: what a seed gives both sides cancels
        D = Ca.mean(1) - Cb.mean(1)
        parts.append((float(D.var(ddof=1)) / len(D), len(D) - 1))
        return _decide(diff, parts, "paired", n_a, n_b, N, alpha, seeds_paired=len(seeds))
    sides = [(Ca, a_fixed), (Cb, b_fixed)]
    known = [(_seed_variance(C), len(C) - 1) for C, fixed in sides if not fixed and len(C) > 1]
    single = [C for C, fixed in sides if not fixed and len(C) == 1]
    if single and not known:
        r = ("one run on each side gives no spread across seeds" if len(single) == 2
             else "a single run against a fixed reference gives no spread across seeds")
        return Comparison(diff, math.nan, math.nan, math.nan, math.nan, math.nan, "cannot judge", "paired",
                          n_a, n_b, N, r)
    for C, fixed in sides:
        if fixed:
            continue
        if len(C) > 1:
            parts.append((_seed_variance(C) / len(C), len(C) - 1))
        else:  # one run: assume it varies across seeds as much as the other side
            parts.append((known[0][0], known[0][1]))
    return _decide(diff, parts, "paired", n_a, n_b, N, alpha)


def fixed_pair(a: dict, b: dict, alpha: float = ALPHA) -> Comparison:
    """The rule for two fixed prompts (one result each, such as a saved tuned prompt and the manual prompt)
    on the same rows: :func:`paired` with nothing but its sentence part.

    No seed varies, so the verdict is about these two prompts on rows drawn like these, not about the
    method that tuned one of them (a tuned prompt from another seed could differ more)."""
    Ca, set_a = correctness([a])
    Cb, set_b = correctness([b])
    if set_a != set_b or Ca.shape[1] != Cb.shape[1]:
        raise ValueError(f"the two prompts were scored on different rows ({set_a} against {set_b}); "
                         "a paired comparison needs the same rows on both sides")
    N = Ca.shape[1]
    d = Ca[0] - Cb[0]
    c = _decide(float(d.mean()), [(float(d.var(ddof=1)) / N if N > 1 else 0.0, N - 1)], "paired", 1, None, N,
                alpha)
    if not np.isfinite(c.se) or c.se == 0:  # the rows all differ alike (or not at all): nothing to scale by
        return Comparison(c.diff, math.nan, math.nan, math.nan, math.nan, math.nan, "cannot judge", "paired", 1,
                          None, N, f"the {N} rows all change alike between the two prompts (or not at all), "
                          "which leaves no scale")
    return c


def welch(a, b, alpha: float = ALPHA) -> Comparison:
    """The rule for plain numbers: Welch's t on per-seed values; ``b`` one number is a fixed reference.

    A side with one value borrows the other side's variance (it is assumed to vary as much);
    with one value on each side, or one against a fixed number, there is no spread to judge by.
    """
    b_fixed = np.ndim(b) == 0 and not isinstance(b, (list, tuple))
    if b_fixed and np.ndim(a) == 0 and not isinstance(a, (list, tuple)):
        raise ValueError("at most one side of a comparison can be a fixed reference; give a's per-seed values")
    va, vb = values(a), values(b)
    n_a, n_b = va.size, (None if b_fixed else vb.size)
    diff = float(va.mean() - vb.mean())
    sides = [(va, False), (vb, b_fixed)]
    known = [(float(v.var(ddof=1)), v.size - 1) for v, fixed in sides if not fixed and v.size > 1]
    if not known:
        r = ("a single run against a fixed reference gives no spread" if b_fixed
             else "one run on each side gives no spread")
        return Comparison(diff, math.nan, math.nan, math.nan, math.nan, math.nan, "cannot judge", "welch",
                          n_a, n_b, None, r)
    parts = []
    for v, fixed in sides:
        if fixed:
            continue
        parts.append((float(v.var(ddof=1)) / v.size, v.size - 1) if v.size > 1 else (known[0][0] / v.size, known[0][1]))
    return _decide(diff, parts, "welch", n_a, n_b, None, alpha)


def judge(a, b, alpha: float = ALPHA) -> Comparison:
    """The verdict on ``mean(a) - mean(b)``: paired when both sides are results, Welch otherwise.

    ``a``, ``b``: per-seed results (lists of result dicts), one result dict (a fixed reference),
    per-seed numbers (lists), or one number (a fixed reference). Results on one side and
    numbers on the other are judged by Welch on the results' test accuracies.
    """
    if (is_result(a) or is_results(a)) and (is_result(b) or is_results(b)):
        return paired(a, b, alpha)
    if is_result(a) or is_results(a):
        a = accuracies(a).tolist()
    if is_result(b) or is_results(b):
        b = float(accuracies(b)[0]) if is_result(b) else accuracies(b).tolist()
    return welch(a, b, alpha)


# ------------------------------------------------------------------ power: what the rule can find

def power(effect: float, se: float, df: float, alpha: float = ALPHA) -> float:
    """The probability that the rule calls a true difference ``effect`` a difference (either way).

    The rule rejects when ``|D / se_hat| > t_crit``. With ``D ~ Normal(effect, se)`` and ``se_hat``
    estimated with ``df`` degrees of freedom (Welch-Satterthwaite's approximation: ``se_hat^2`` is
    ``se^2`` times a chi-square over ``df``), ``D / se_hat`` follows the noncentral t with ``df``
    degrees of freedom and noncentrality ``effect / se`` (SciPy's ``nct``), so the power is its
    mass beyond ``+t_crit`` plus its mass below ``-t_crit``. ``effect = 0`` gives ``alpha``;
    ``se`` nan (a comparison that cannot judge) gives nan.
    """
    if not (se >= 0 and df > 0):  # nan se or df: the comparison cannot judge
        return math.nan
    if se == 0:
        return 1.0 if effect != 0 else alpha
    crit, nc = t_critical(df, alpha), abs(effect) / se  # symmetric: the size of the effect matters
    near = float(scipy.stats.nct.sf(crit, df, nc))  # called a difference the right way
    far = float(scipy.stats.nct.sf(crit, df, -nc))  # the wrong way (SciPy's far tail can underflow to nan)
    return near + (far if math.isfinite(far) else 0.0)


_power = power  # for detectable(), whose argument is also called power


def detectable(se: float, df: float, power: float = 0.8, alpha: float = ALPHA) -> float:
    """The smallest true difference (its size) that the rule finds with probability ``power``.

    Solves ``power(effect) = power`` by Brent's method; the answer is close to
    ``(t_crit + t_power) * se``, the textbook's approximation that ignores the far tail, with
    ``t_power`` the ``power`` quantile of Student's t. ``se`` nan gives nan; ``se = 0`` gives 0.
    """
    if not alpha < power < 1:
        raise ValueError(f"power must lie between alpha ({alpha}) and 1, got {power}")
    if not (se >= 0 and df > 0):
        return math.nan
    if se == 0:
        return 0.0
    high = (t_critical(df, alpha) + float(scipy.stats.t.ppf(power, df))) * se
    while _power(high, se, df, alpha) < power:
        high *= 2
    return float(scipy.optimize.brentq(lambda e: _power(e, se, df, alpha) - power, 0.0, high, xtol=1e-9 * se))


def planned_se(seeds: int, sentences: int | None, seed_sd: float, discordant: float | None = None,
               b_seeds: int | None = None, seed_flips: float = 0.0,
               seed_corr: float | None = None) -> tuple[float, float]:
    """``(se, df)`` that :func:`paired` (or :func:`welch`) will compute, from a design before it runs.

    ``se`` is the square root of the rule's variance with the design's true parts; ``df`` is the
    df the rule will estimate (:func:`_estimated_df`), for :func:`power` and :func:`detectable`.

    ``a`` has ``seeds`` runs whose accuracies spread by ``seed_sd`` across seeds; ``b`` is a fixed
    reference (``b_seeds=None``: the manual prompt) or has ``b_seeds`` runs with the same spread.
    The seed parts are ``seed_sd^2 / n`` with ``n - 1`` df per seeded side (a side with one run
    borrows the other's, as the rule does). ``sentences=None``: per-seed numbers only, Welch.
    ``seed_corr``: both sides run the same seeds (``b_seeds == seeds``, a paired design) and
    their per-seed accuracies correlate by ``seed_corr`` across seeds (a seed's split and ``A``
    help or hurt both); the rule pairs them by seed, and the seed part is the variance of the
    per-seed differences, ``2 seed_sd^2 (1 - seed_corr) / n`` with ``n - 1`` df. ``0`` (unknown:
    the cautious plan) keeps the unpaired variance at fewer df.

    The sentence part is ``Var(d_j) / N`` with ``N - 1`` df, ``d_j`` the difference of the two
    sides' seed-mean correctness on sentence ``j``. Let ``p_j`` be the chance that a run of a side
    answers ``j`` correctly, ``f = mean_j p_j (1 - p_j)`` its flips, and the runs of a side
    independent given the sentence. Then a single run of each side disagrees on a fraction
    ``discordant = mean_j (p_aj - p_bj)^2 + f_a + f_b`` of the sentences, two runs of one side
    disagree on ``seed_flips = 2 f``, and averaging ``n`` runs leaves ``f / n`` of each side's flips:

        Var(d_j) = discordant - f_a - f_b + f_a / n_a + f_b / n_b - effect^2,   f = seed_flips / 2

    (``f = 0`` for a fixed reference, whose answers do not flip). ``effect^2`` is dropped (it is
    small against ``discordant`` and dropping it overstates the noise); ``seed_flips = 0`` (the
    default: unknown) counts all of the disagreement as systematic, the largest ``Var(d_j)``
    that ``discordant`` allows: the cautious plan. Both fractions come from a pilot run (the
    share of test sentences two runs answer differently); the rule itself is a little cautious
    too, so the power planned here is met or slightly exceeded (``tests/test_stats.py``).
    """
    if seeds < 1 or (b_seeds is not None and b_seeds < 1):
        raise ValueError(f"each seeded side needs at least one run, got {seeds} and {b_seeds}")
    if sentences is not None and sentences < 2:
        raise ValueError(f"a paired design needs at least 2 test sentences, got {sentences}")
    if sentences is not None and (discordant is None or not 0 <= seed_flips / 2 <= discordant <= 1):
        raise ValueError(f"a paired design needs 0 <= seed_flips / 2 <= discordant <= 1, got {seed_flips} and "
                         f"{discordant}")
    if seed_corr is not None and (sentences is None or b_seeds != seeds or not -1 <= seed_corr <= 1):
        raise ValueError(f"seeds paired need a paired design with the same seeds on both sides and a correlation "
                         f"in [-1, 1], got {seeds} and {b_seeds} seeds, correlation {seed_corr}")
    sides = [n for n in (seeds, b_seeds) if n is not None]
    known = [n for n in sides if n > 1]
    if not known:  # one run against a fixed reference, or one on each side: the rule cannot judge
        return math.nan, math.nan
    var = seed_sd ** 2
    if seed_corr is not None:  # paired by seed: the per-seed differences
        parts = [(2 * var * (1 - seed_corr) / seeds, seeds - 1)]
    else:
        parts = [(var / n, n - 1) if n > 1 else (var, known[0] - 1) for n in sides]
    if sentences is not None:
        f = seed_flips / 2
        flips = sum(f / n - f for n in sides)
        parts.append(((discordant + flips) / sentences, sentences - 1))
    se = math.sqrt(sum(v for v, _ in parts))
    return se, _estimated_df(parts, guarded=seed_corr is not None)


def _estimated_df(parts: list[tuple[float, float]], draws: int = 20_000, guarded: bool = False) -> float:
    """The Welch-Satterthwaite df that the rule will estimate from these parts, as one number.

    The rule estimates each part's variance (a chi-square with its df, times the variance over the
    df), so its df is random and mostly below the parts' own Satterthwaite df: with 3 seeds on each
    side and no sentence part, 4 from the true variances, 2 to 4 as estimated. With the harmonic
    mean of the estimated df (over ``draws`` fixed-seed draws of the estimates) the noncentral t's
    power matches the rule's on simulated experiments (``tests/test_stats.py``: 0.79 found where
    0.80 was planned, 3 seeds against 3); with the parts' own df it overstates it (0.69 found).
    """
    if sum(v for v, _ in parts) <= 0:
        return math.inf
    parts = sorted(parts)  # the same draws for the same parts, in any order
    v = np.array([var for var, _ in parts])
    df = np.array([d for _, d in parts], dtype=float)
    est = v * np.random.default_rng(0).chisquare(df, (draws, len(parts))) / df
    if guarded:  # as the rule reads them when it pairs by seed (:func:`_guarded`)
        est = est * df / scipy.stats.chi2.ppf(GUARD, df)
    return float(1.0 / np.mean((est ** 2 / df).sum(1) / est.sum(1) ** 2))


# ------------------------------------------------------------------ in words

def _summary(v: np.ndarray, n, fmt: str, unit: str) -> str:
    if n is None:
        return f"{v.mean():{fmt}}"
    if v.size == 1:
        return f"{v[0]:{fmt}}, one run"
    return f"{v.mean():{fmt}} ± {v.std(ddof=1):{fmt}} over {v.size} {unit}"


def _p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def how(c: Comparison, unit: str = "seeds") -> str:
    """How a comparison was judged, in a few words: the rule's name and exactly what it paired."""
    if c.rule == "paired":
        if c.seeds_paired:
            return f"paired over {c.sentences} test sentences and by seed ({c.seeds_paired} {unit} run by both sides)"
        if c.n_b is None:
            return f"paired over {c.sentences} test sentences, against a fixed reference"
        return f"paired over {c.sentences} test sentences, not by seed (the two sides do not share their {unit})"
    return f"Welch's t over {unit}, nothing paired"


def say(c: Comparison, a, b, name_a: str, name_b: str, what: str = "test accuracy", fmt: str = ".3f",
        unit: str = "seeds", verdict: bool = True) -> Comparison:
    """``c`` with its sentence: both sides' numbers, the difference, its interval, p and the verdict.

    A null ends with the difference the comparison detects 80% of the time (its power), so that
    "no detectable difference" is read with what it could have seen.

    ``verdict=False``: the same numbers and interval without the verdict's words (a secondary
    comparison, :func:`bbt_mini.book.notebook.difference`).
    """
    va = accuracies(a) if (is_result(a) or is_results(a)) else values(a)
    vb = accuracies(b) if (is_result(b) or is_results(b)) else values(b)
    sa = f"{name_a} ({_summary(va, c.n_a, fmt, unit)})"
    sb = f"{name_b} ({_summary(vb, c.n_b, fmt, unit)})"
    if not verdict:
        interval = (f"{c.reason}, so no interval" if c.verdict == "cannot judge" else
                    f"95% interval {c.low:+{fmt}} to {c.high:+{fmt}}; {how(c, unit)}")
        text = f"{sa} against {sb}: {c.diff:+{fmt}} in {what} ({interval}; a secondary comparison, no verdict)"
    elif c.verdict == "cannot judge":
        text = (f"{sa} against {sb}: a difference of {c.diff:+{fmt}} in {what}, but {c.reason} to judge it "
                f"by, so this cannot say whether it is more than noise")
    else:
        detail = f"95% interval {c.low:+{fmt}} to {c.high:+{fmt}}, {_p(c.p)}; {how(c, unit)}"
        if c.verdict == "no detectable difference":
            text = (f"{sa} and {sb} show no detectable difference in {what}: {c.diff:+{fmt}} ({detail}) "
                    f"(this comparison detects a difference of {c.detectable:{fmt}} or more 80% of the time)")
        else:
            text = f"{sa} is {c.verdict} than {sb} in {what} by {abs(c.diff):{fmt}} ({detail})"
    return Comparison(**{**c.__dict__, "sentence": text})


# ------------------------------------------------------------------ several primary comparisons at once

def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjustment of the p-values of a family of comparisons (Holm, 1979).

    Sort the ``m`` p-values, ``p_(1) <= ... <= p_(m)``; the adjusted ``p_(i)`` is
    ``max_{j <= i} min(1, (m - j + 1) p_(j))``, returned in the order given. Calling a
    comparison a difference when its adjusted p is below ``ALPHA`` keeps the chance of one or
    more false differences in the whole family at most ``ALPHA``, whatever their dependence,
    and rejects at least what Bonferroni's ``m p`` rejects. A nan p (a comparison that cannot
    judge) counts in ``m``, ranks last, and stays nan.
    """
    p = np.asarray(pvalues, dtype=float)
    if p.ndim != 1 or p.size == 0:
        raise ValueError(f"expected a non-empty list of p-values, got {pvalues!r}")
    known = ~np.isnan(p)
    if np.any((p[known] < 0) | (p[known] > 1)):
        raise ValueError(f"p-values lie in [0, 1], got {p.tolist()}")
    ranked = np.where(known, p, 1.0)
    order = np.argsort(ranked, kind="stable")
    m = p.size
    steps = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * ranked[order]))
    out = np.empty(m)
    out[order] = steps
    out[~known] = math.nan
    return out


def holm_family(comparisons: list, alpha: float = ALPHA) -> list:
    """The comparisons of one family judged together: each p replaced by its Holm-adjusted p
    (:func:`holm`) and the verdict taken from it; difference and 95% interval stay each one's own.
    A "cannot judge" stays so (and counts in the family)."""
    adjusted = holm([c.p for c in comparisons])
    out = []
    for c, p in zip(comparisons, adjusted):
        if c.verdict == "cannot judge":
            out.append(c)
            continue
        verdict = "no detectable difference" if p >= alpha else ("higher" if c.diff > 0 else "lower")
        out.append(Comparison(**{**c.__dict__, "p": float(p), "verdict": verdict, "sentence": ""}))
    return out
