"""The verdict rule (bbt_mini.core.stats) on simulated experiments whose truth is known.

The simulation is the book's situation: 3 seeds, 100 test sentences shared by both methods (the
small profile's test set; 300, its earlier size, is checked too).
Each sentence has an ease ``q_j`` (the chance a method answers it correctly) drawn from a Beta
distribution and shared by both methods, except for a fraction ``pi`` of the sentences where
each method has its own (another draw from the same Beta: the methods fail on partly different
sentences). Each seed has a skill ``u`` (normal, clipped to +-1) that moves its chances to
``q + u q (1 - q)``: a seed helps or hurts most on the sentences in doubt, and leaves the mean
unchanged when ``u`` averages 0. A fixed reference (the manual prompt) is one run with
``u = 0``. Two regimes: **sentences** (extreme eases, Beta(0.1, 0.04); seeds differ by about
0.01, like BBT's 3 seeds in the small profile, so the test sentences carry the noise) and
**seeds** (Beta(0.7, 0.3); seeds differ by about 0.04, like BBTv2 on BBC News).
Under a null both methods have the same expected accuracy; an effect adds correct answers.
"""
import numpy as np
import pytest
import scipy.stats

from bbt_mini.core import stats

REGIMES = {"sentences": ((0.1, 0.04), 0.3), "seeds": ((0.7, 0.3), 0.4)}  # Beta(a, b) of eases, sd of the skill u


def simulate(rng, regime, n_a=3, n_b=3, N=300, effect=0.0, pi=0.3, fixed=False):
    """``(a, b)``: per-seed result dicts of two methods on one shared test set (``b`` one dict if fixed)."""
    (a, b), sd = REGIMES[regime]
    q = rng.beta(a, b, N)
    labels = rng.integers(0, 2, N)

    def method(n, eff, fixed_run):
        own = np.where(rng.random(N) < pi, rng.beta(a, b, N), q)
        out = []
        for s in range(n):
            u = 0.0 if fixed_run else float(np.clip(rng.normal(0, sd), -1, 1))
            p = own + u * own * (1 - own)
            right = rng.random(N) < p
            if eff:
                right |= rng.random(N) < eff / (1 - p.mean())
            out.append({"method": "sim", "seed": s, "test_set": "simulated", "test_labels": labels.tolist(),
                        "test_answers": np.where(right, labels, 1 - labels).tolist(),
                        "test_accuracy": float(right.mean())})
        return out

    A = method(n_a, effect, False)
    B = method(1 if fixed else n_b, 0.0, fixed)
    return A, (B[0] if fixed else B)


def two_se(a, b) -> bool:
    """The book's old rule: a difference beyond 2 standard errors of per-seed means."""
    va = np.array([r["test_accuracy"] for r in a])
    fixed = isinstance(b, dict)
    vb = np.array([b["test_accuracy"]] if fixed else [r["test_accuracy"] for r in b])
    se = np.sqrt(va.var(ddof=1) / va.size + (0 if fixed else vb.var(ddof=1) / vb.size))
    return bool(se > 0 and abs(va.mean() - vb.mean()) > 2 * se)


def rates(regime, fixed, reps, effect=0.0, pi=0.3, seed=0, N=300):
    rng = np.random.default_rng(seed)
    new = old = 0
    for _ in range(reps):
        a, b = simulate(rng, regime, effect=effect, pi=pi, fixed=fixed, N=N)
        new += stats.judge(a, b).verdict in ("higher", "lower")
        old += two_se(a, b)
    return new / reps, old / reps


REPS = 2000  # simulated nulls per case: a rate of 5% is then known to +-1 point (2 Monte Carlo SE)


@pytest.mark.parametrize("N", [100, 300], ids=["100 sentences", "300 sentences"])
@pytest.mark.parametrize("regime", REGIMES)
@pytest.mark.parametrize("fixed", [False, True], ids=["against seeds", "against a fixed reference"])
def test_false_positive_rate_on_simulated_nulls_is_at_most_five_percent(regime, fixed, N):
    """2,000 simulated nulls of 3 seeds x N sentences per case; measured (seeded, so exact),
    at 100 / 300 sentences:

    | regime, against | the rule | old 2-SE rule |
    |---|---|---|
    | sentences, seeds | 3.80% / 4.05% | 56.1% / 51.9% |
    | sentences, fixed reference | 5.35% / 4.65% | 67.3% / 65.8% |
    | seeds, seeds | 3.00% / 4.55% | 18.4% / 14.6% |
    | seeds, fixed reference | 4.20% / 5.10% | 37.4% / 28.6% |

    Against seeds, both sides ran seeds 0, 1, 2 and the rule pairs them by seed, though here
    their seeds share nothing: the worst case for that pairing (without the guard on its df,
    :func:`stats._guarded`, seeds against seeds at 300 sentences was 6.60%).

    Each case must not be detectably above 5% (within 2 Monte Carlo standard errors, 1 point);
    the four together (8,000 nulls) must be at most 5%.
    """
    new, old = rates(regime, fixed, reps=REPS, seed=17, N=N)
    allowance = 2 * np.sqrt(0.05 * 0.95 / REPS)
    assert new <= 0.05 + allowance, f"false-positive rate {new:.2%} of the rule (the old 2-SE rule: {old:.2%})"
    assert old > 0.10, f"the old 2-SE rule ({old:.2%}) was expected to be loose here; the simulation changed?"


def test_false_positive_rate_over_all_simulated_nulls_is_at_most_five_percent():
    """At the small profile's 100 sentences: 4.09% measured."""
    pooled = np.mean([rates(r, f, reps=REPS, seed=17, N=100)[0] for r in REGIMES for f in (False, True)])
    assert pooled <= 0.05, f"pooled false-positive rate {pooled:.2%}"


def test_power_on_a_simulated_gain_of_005_at_300_sentences_and_3_seeds():
    """+0.05 over a fixed reference, 3 seeds, 300 sentences, each method with its own ease on 5% of
    the sentences (a prompt changes some answers, not all): measured power 0.76 (400 runs;
    0.67 when they differ on 10%; 0.57 against 3 seeds of another method run on the same seeds,
    paired by seed though their seeds share nothing, the price of that pairing there: 0.72
    unpaired). At the small
    profile's 100 sentences the same gain is found 35% of the time (0.3475 measured): a null
    there is weak evidence of no gain, which the chapters say."""
    power, _ = rates("sentences", True, reps=400, effect=0.05, pi=0.05, seed=3)
    assert power >= 0.70, f"power {power:.2f} on a real +0.05 gain"


def test_pairing_detects_a_gain_that_the_unpaired_test_misses():
    """Both sides answer the same 300 sentences alike except 15 that only a gets right (+0.05)."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    right = rng.random(300) < 0.7
    flipped = np.flatnonzero(~right)[:15]

    def res(seed, r):
        return {"seed": seed, "test_set": "t", "test_labels": labels.tolist(),
                "test_answers": np.where(r, labels, 1 - labels).tolist(), "test_accuracy": float(r.mean())}

    better = right.copy()
    better[flipped] = True
    a = [res(s, better) for s in range(3)]
    b = res(0, right)
    paired = stats.judge(a, b)
    assert paired.rule == "paired" and paired.verdict == "higher"
    assert paired.diff == pytest.approx(0.05)
    # Unpaired: the same correctness, as if the two sides had answered independent samples of sentences.
    unpaired = stats.welch(better.astype(float).tolist(), right.astype(float).tolist())
    assert unpaired.verdict == "no detectable difference", unpaired


# ------------------------------------------------------------------ pairing by seed
#
# Runs of two methods on the same seeds share the seed's k-shot split (and, for BBT and random
# search, its projection A): a seed that helps one side tends to help the other. Here a seed's
# skill is ``sqrt(share)`` times a component both sides draw from the seed plus
# ``sqrt(1 - share)`` times the side's own; everything else is ``simulate``'s.

def simulate_shared(rng, regime, n=3, N=100, effect=0.0, pi=0.3, share=0.8):
    """``(a, b)``: per-seed results of two methods run on the same seeds 0..n-1."""
    (a, b), sd = REGIMES[regime]
    q = rng.beta(a, b, N)
    labels = rng.integers(0, 2, N)
    common = rng.normal(0, sd, n)

    def method(eff):
        own = np.where(rng.random(N) < pi, rng.beta(a, b, N), q)
        out = []
        for s in range(n):
            u = float(np.clip(np.sqrt(share) * common[s] + np.sqrt(1 - share) * rng.normal(0, sd), -1, 1))
            p = own + u * own * (1 - own)
            right = rng.random(N) < p
            if eff:
                right |= rng.random(N) < eff / (1 - p.mean())
            out.append({"seed": s, "test_set": "simulated", "test_labels": labels.tolist(),
                        "test_answers": np.where(right, labels, 1 - labels).tolist(),
                        "test_accuracy": float(right.mean())})
        return out

    return method(effect), method(0.0)


def unshared(results):
    """The same runs under seed numbers the other side did not run: not paired by seed."""
    return [{**r, "seed": r["seed"] + 100} for r in results]


def test_runs_of_the_same_seeds_are_paired_by_seed_and_the_sentence_says_so():
    """Both sides ran seeds 0, 1, 2: the seed part is the variance of the per-seed differences over
    n with n - 1 df (Student's paired t on the seeds), not the two sides' variances; other seeds,
    a seed one side lacks, or a fixed reference keep the unpaired form."""
    rng = np.random.default_rng(8)
    a, b = simulate_shared(rng, "seeds", n=3, N=100)
    Ca = np.array([np.equal(r["test_answers"], r["test_labels"]) for r in a], float)
    Cb = np.array([np.equal(r["test_answers"], r["test_labels"]) for r in b], float)
    N, n = Ca.shape[1], len(Ca)
    sentence = (Ca.mean(0) - Cb.mean(0)).var(ddof=1) / N
    seed = (Ca.mean(1) - Cb.mean(1)).var(ddof=1) / n
    c = stats.paired(a, b[::-1])  # the order of the runs does not matter: their seeds pair them
    assert c.seeds_paired == 3 and c.se == pytest.approx(np.sqrt(sentence + seed))
    guarded = [v * k / scipy.stats.chi2.ppf(stats.GUARD, k) for v, k in ((sentence, N - 1), (seed, n - 1))]
    assert c.df == pytest.approx(sum(guarded) ** 2 / (guarded[0] ** 2 / (N - 1) + guarded[1] ** 2 / (n - 1)))
    assert "and by seed (3 seeds run by both sides)" in stats.say(c, a, b, "A", "B").sentence
    apart = stats.paired(a, unshared(b))
    unpaired = Ca.mean(1).var(ddof=1) / n + Cb.mean(1).var(ddof=1) / n
    assert apart.seeds_paired is None and apart.se == pytest.approx(np.sqrt(sentence + unpaired))
    assert apart.se > c.se  # the seeds' shared component counted in the unpaired form, cancelled here
    assert "not by seed" in stats.say(apart, a, unshared(b), "A", "B").sentence
    assert stats.paired(a, b[:2]).seeds_paired is None  # seed 2 run by one side only
    fixed = stats.paired(a, b[0])
    assert fixed.seeds_paired is None and "against a fixed reference" in stats.how(fixed)


@pytest.mark.parametrize("regime", REGIMES)
def test_pairing_by_seed_keeps_the_false_positive_rate_at_most_five_percent(regime):
    """2,000 simulated nulls of 3 seeds x 100 sentences whose seeds share 80% of their skill, paired
    by seed: measured 3.05% (sentences) and 1.70% (seeds), at most 5% within 2 Monte Carlo SE."""
    rng = np.random.default_rng(19)
    rate = np.mean([stats.paired(*simulate_shared(rng, regime)).verdict in ("higher", "lower")
                    for _ in range(REPS)])
    assert rate <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / REPS), f"false-positive rate {rate:.2%}"


def test_pairing_by_seed_has_more_power_when_the_seeds_share_a_component():
    """A true +0.08 on 3 seeds x 100 sentences whose seeds share 80% of their skill (the seeds
    regime, where seeds move accuracy by about 0.04): the same 600 experiments, judged paired by
    seed and with the seeds unpaired; measured 0.258 against 0.188."""
    rng = np.random.default_rng(21)
    by_seed = apart = 0
    for _ in range(600):
        a, b = simulate_shared(rng, "seeds", effect=0.08)
        by_seed += stats.paired(a, b).verdict == "higher"
        apart += stats.paired(a, unshared(b)).verdict == "higher"
    assert by_seed / 600 >= apart / 600 + 0.05, f"paired by seed {by_seed / 600:.3f}, unpaired {apart / 600:.3f}"


def test_planned_se_of_seeds_paired_is_the_variance_of_per_seed_differences():
    """A paired design on the same seeds: the seed part is 2 sd^2 (1 - corr) / n with n - 1 df;
    correlation 0 keeps the unpaired variance at fewer df (the cautious plan)."""
    base, base_df = stats.planned_se(3, 100, 0.04, 0.2, b_seeds=3)
    zero, zero_df = stats.planned_se(3, 100, 0.04, 0.2, b_seeds=3, seed_corr=0.0)
    high, _ = stats.planned_se(3, 100, 0.04, 0.2, b_seeds=3, seed_corr=0.8)
    assert zero == pytest.approx(base) and zero_df < base_df
    assert high ** 2 == pytest.approx(base ** 2 - 2 * 0.8 * 0.04 ** 2 / 3)
    assert stats.detectable(high, stats.planned_se(3, 100, 0.04, 0.2, b_seeds=3, seed_corr=0.8)[1]) < \
        stats.detectable(base, base_df)
    for bad in ({"b_seeds": None}, {"b_seeds": 5}):  # seeds paired need the same seeds on both sides
        with pytest.raises(ValueError):
            stats.planned_se(3, 100, 0.04, 0.2, seed_corr=0.5, **bad)


def test_refuses_to_pair_results_on_different_test_sets():
    rng = np.random.default_rng(1)
    a, b = simulate(rng, "sentences")
    other = [{**r, "test_set": "another"} for r in b]
    with pytest.raises(ValueError, match="different test sets"):
        stats.judge(a, other)
    with pytest.raises(ValueError, match="lacks"):
        stats.judge(a, [{"test_accuracy": 0.5}])
    with pytest.raises(ValueError, match="do not belong together"):
        stats.judge(a, [{**b[0], "test_accuracy": 0.123}])


def test_t_distribution_matches_tables():
    for df, t in ((1, 12.706), (2, 4.303), (4, 2.776), (10, 2.228), (30, 2.042), (float("inf"), 1.960)):
        assert stats.t_critical(df) == pytest.approx(t, abs=1e-3)
    assert stats.t_pvalue(2.0, 2) == pytest.approx(0.1835, abs=1e-4)


def test_welch_on_plain_numbers_uses_its_own_degrees_of_freedom():
    a, b = [0.70, 0.72, 0.71], [0.60, 0.64, 0.62]
    c = stats.judge(a, b)
    va, vb = np.var(a, ddof=1) / 3, np.var(b, ddof=1) / 3
    assert c.rule == "welch" and c.se == pytest.approx(np.sqrt(va + vb))
    assert c.df == pytest.approx((va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 2))
    assert c.verdict == "higher" and c.low > 0 and c.p < 0.05
    # Two standard errors is not enough with 3 seeds: 2.5 SE against a fixed number (2 df) is no verdict.
    se = np.std(a, ddof=1) / np.sqrt(3)
    assert stats.judge(a, 0.71 - 2.5 * se).verdict == "no detectable difference"
    assert stats.judge(a, 0.71 - 4.5 * se).verdict == "higher"


def test_cannot_judge_without_spread_and_says_why():
    one_each = stats.judge([0.62], [0.70])
    assert one_each.verdict == "cannot judge" and "one run on each side" in one_each.reason
    rng = np.random.default_rng(2)
    a, b = simulate(rng, "sentences", fixed=True)
    single = stats.judge(a[:1], b)
    assert single.verdict == "cannot judge" and "single run" in single.reason
    assert stats.judge([0.6, 0.6], 0.7).verdict == "cannot judge"


def test_the_same_answers_are_no_detectable_difference_and_the_rule_is_fast():
    import time

    rng = np.random.default_rng(4)
    a, _ = simulate(rng, "sentences", n_a=5, N=1000)
    assert stats.judge(a, [dict(r) for r in a]).verdict == "no detectable difference"
    t0 = time.perf_counter()
    for _ in range(20):
        stats.judge(a, a[0])
    assert (time.perf_counter() - t0) / 20 < 0.1, "one paired verdict on 5 seeds x 1,000 sentences should be fast"


def test_the_rule_lives_at_the_ground_cost_and_stats_import_nothing_above_core():
    """core/cost.py judged gains through book/notebook.py (an import inside a function); now both use core/stats."""
    import ast
    from pathlib import Path

    import bbt_mini.core as core

    libraries = ("math", "numpy", "scipy")
    for name in ("stats.py", "cost.py"):
        tree = ast.parse((Path(core.__file__).parent / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert node.level in (0, 1), f"{name} imports from above core: {ast.unparse(node)}"
                assert node.level == 1 or node.module.split(".")[0] in ("__future__", "dataclasses", *libraries)
            elif isinstance(node, ast.Import):
                assert all(a.name.split(".")[0] in libraries for a in node.names), ast.unparse(node)


# ------------------------------------------------------------------ power: the analytic formula against simulation
#
# A second, simpler simulation whose design numbers are known exactly. Of N sentences, a fraction
# ``changed`` is answered differently by the two sides on every run (a gets it right and b wrong on
# (changed + effect) / 2 of them, the reverse on the rest, so the true difference is ``effect``
# and the disagreement does not depend on it); a fraction ``flip`` is in doubt: each run of a
# side answers it right with chance 0.5 + u, u its seed's skill (normal, sd ``u_sd``); the other
# sentences both sides answer alike. A fixed reference has one run with u = 0. Then a single run
# of each side disagrees on changed + flip / 2 of the sentences, two runs of one side on flip / 2,
# and a side's per-seed accuracy spreads by sqrt(flip^2 u_sd^2 + flip (1/4 - u_sd^2) / N).

def plan(N, n_a, n_b, changed, flip, u_sd):
    """The design's ``(se, df)`` by :func:`stats.planned_se`, from the simulation's parameters."""
    seed_sd = np.sqrt(flip ** 2 * u_sd ** 2 + flip * (0.25 - u_sd ** 2) / N)
    return stats.planned_se(n_a, N, seed_sd, changed + flip / 2, b_seeds=n_b, seed_flips=flip / 2)


def simulate_design(rng, N, n_a, n_b, effect, changed, flip, u_sd):
    """``(a, b)``: per-seed result dicts of the two sides (``b`` one dict when ``n_b`` is None)."""
    kind = rng.choice(4, N, p=[1 - changed - flip, (changed + effect) / 2, (changed - effect) / 2, flip])
    alike = rng.random(N) < 0.7
    labels = np.ones(N, int)

    def side(n, wins):
        skill = rng.normal(0, u_sd, (n, 1)) if n else np.zeros((1, 1))
        C = np.tile(alike, (len(skill), 1))
        C[:, kind == 1], C[:, kind == 2] = wins, not wins
        C[:, kind == 3] = rng.random((len(skill), np.sum(kind == 3))) < 0.5 + skill
        return [{"test_set": "design", "test_labels": labels, "test_answers": row.astype(int),
                 "test_accuracy": row.mean()} for row in C]

    a, b = side(n_a, True), side(n_b or 0, False)
    return a, (b[0] if n_b is None else b)


def rejections(rule, M):
    """The share of ``M`` runs of ``rule()`` (a Comparison) that call a difference, and the runs' se^2."""
    runs = [rule() for _ in range(M)]
    return np.mean([c.verdict in ("higher", "lower") for c in runs]), np.array([c.se ** 2 for c in runs])


def within_binomial(rate, target, M, k=3.0):
    """``rate`` of ``M`` runs is within ``k`` binomial standard errors of ``target``."""
    return abs(rate - target) <= k * np.sqrt(target * (1 - target) / M)


PAIRED_DESIGNS = {  # N, seeds of a, of b (None: a fixed reference), changed, flip, u_sd
    "3 seeds against the manual prompt, sentences dominate": (200, 3, None, 0.10, 0.30, 0.02),
    "5 seeds against 5 seeds, seeds and sentences": (200, 5, 5, 0.20, 0.20, 0.20),
}
M_PAIRED = 1200  # runs per case: 0.80 is then known to +-0.035 and 0.05 to +-0.019 (3 binomial SE)


@pytest.mark.parametrize("design", PAIRED_DESIGNS)
def test_power_and_detectable_match_the_paired_rule_on_simulated_designs(design):
    """The paired rule, run on simulated experiments, calls a difference of ``detectable(se, df)``
    (``se``, ``df`` from :func:`stats.planned_se`) 80% of the time or a little more, and a null at most 5%.

    A little more, because the rule is conservative: its seed part counts the runs' flips that its
    sentence part counts too, and the plan drops ``effect^2`` from ``Var(d_j)``; so the true sd of
    the difference is below ``se`` and the rate lies between 0.80 and the power at that sd
    (each widened by 3 binomial SE); for the same reason a null is called a difference at most 5%
    of the time. Measured (1,200 runs each): 0.843 and 0.032 (3 seeds against the reference, band
    0.80 to 0.86), 0.848 and 0.040 (5 against 5, band 0.80 to 0.84). A sentence part that divides
    all the disagreement by the seeds (the rate falls to about 0.5) misses the band; the formula
    of :func:`stats.power` itself is pinned by the Welch test below, where it is exact."""
    N, n_a, n_b, changed, flip, u_sd = PAIRED_DESIGNS[design]
    se, df = plan(N, n_a, n_b, changed, flip, u_sd)
    found = stats.detectable(se, df)
    double = sum(flip * (0.25 - u_sd ** 2) / N / n for n in (n_a, n_b) if n)  # in both parts
    sd = np.sqrt(se ** 2 - found ** 2 / N - double)
    rng = np.random.default_rng(5)
    for effect, low, high in ((found, 0.8, stats.power(found, sd, df)), (0.0, stats.ALPHA, stats.ALPHA)):
        rate, _ = rejections(lambda: stats.paired(*simulate_design(rng, N, n_a, n_b, effect, changed, flip, u_sd)),
                             M_PAIRED)
        in_band = low < rate < high or within_binomial(rate, low, M_PAIRED) or within_binomial(rate, high, M_PAIRED)
        below = effect == 0 and rate < low  # the conservative rule under a null
        assert in_band or below, f"effect {effect:.3f}: rejected {rate:.3f}, planned {low:.3f} to {high:.3f}"


@pytest.mark.parametrize("design", PAIRED_DESIGNS)
def test_planned_se_is_the_se_that_the_paired_rule_computes_on_average(design):
    """The mean of the rule's se^2 over simulated nulls is planned_se's se^2 (within 3 Monte Carlo
    SE); counting every disagreement as systematic (``seed_flips`` 0) overstates it, and dividing
    the whole disagreement by the seeds (as if every one were a flip) understates it."""
    N, n_a, n_b, changed, flip, u_sd = PAIRED_DESIGNS[design]
    rng = np.random.default_rng(6)
    _, var = rejections(lambda: stats.paired(*simulate_design(rng, N, n_a, n_b, 0.0, changed, flip, u_sd)), 600)
    mc = 3 * var.std(ddof=1) / np.sqrt(var.size)
    se, _ = plan(N, n_a, n_b, changed, flip, u_sd)
    assert abs(var.mean() - se ** 2) <= mc, f"rule's mean se^2 {var.mean():.3e}, planned {se ** 2:.3e}"
    seed_sd = np.sqrt(flip ** 2 * u_sd ** 2 + flip * (0.25 - u_sd ** 2) / N)
    systematic, _ = stats.planned_se(n_a, N, seed_sd, changed + flip / 2, b_seeds=n_b)
    assert systematic ** 2 > var.mean() + mc
    every_flip, _ = stats.planned_se(n_a, N, seed_sd, (changed + flip / 2) / n_a, b_seeds=n_b)
    assert every_flip ** 2 < var.mean() - mc


WELCH_DESIGNS = {"3 seeds against 3": (3, 3), "5 seeds against a fixed number": (5, None)}
M_WELCH = 3000


@pytest.mark.parametrize("design", WELCH_DESIGNS)
def test_power_matches_welchs_rule_on_per_seed_numbers(design):
    """Per-seed numbers, normal with sd 0.04: the rule's df is 4 at most, where Student's t and the
    normal part most (detectable 3.7 se at df 4, 2.8 se for the normal). 3 against 3: the rule
    estimates its df (2 to 4), which planned_se's df accounts for; with the true variances' df (4)
    the rate was 0.70 where 0.80 was planned. Measured (3,000 runs): about 0.79 and 0.035 (3 against 3),
    about 0.80 and 0.05 (5 against a fixed number, an exact t-test)."""
    n_a, n_b = WELCH_DESIGNS[design]
    se, df = stats.planned_se(n_a, None, 0.04, b_seeds=n_b)
    found = stats.detectable(se, df)
    rng = np.random.default_rng(7)
    for effect, target in ((found, 0.8), (0.0, stats.ALPHA)):
        def run():
            a = (0.6 + effect + rng.normal(0, 0.04, n_a)).tolist()
            return stats.welch(a, 0.6 if n_b is None else (0.6 + rng.normal(0, 0.04, n_b)).tolist())
        rate, var = rejections(run, M_WELCH)
        exact = n_b is None or effect > 0  # 3 against 3 under a null: Welch's estimated df make it rarer
        assert within_binomial(rate, target, M_WELCH) or (not exact and rate < target), (
            f"effect {effect:.3f}: rejected {rate:.3f}, planned {target}")
        assert var.mean() == pytest.approx(se ** 2, rel=3 * var.std(ddof=1) / np.sqrt(M_WELCH) / se ** 2)


def test_detectable_is_the_textbook_sum_of_quantiles_and_power_its_inverse():
    for se, df in ((0.03, 2), (0.03, 8.5), (0.02, 150), (0.01, np.inf)):
        found = stats.detectable(se, df)
        assert stats.power(found, se, df) == pytest.approx(0.8, abs=1e-6)
        assert stats.power(-found, se, df) == pytest.approx(0.8, abs=1e-6)  # both tails
        textbook = (stats.t_critical(df) + scipy.stats.t.ppf(0.8, df)) * se
        assert found == pytest.approx(textbook, rel=0.02 if df > 5 else 0.06)  # the far tail adds little
        assert stats.power(0.0, se, df) == pytest.approx(stats.ALPHA)
        assert stats.detectable(se, df, power=0.9) > found > stats.detectable(se, df, power=0.5)
    assert stats.detectable(0.01, np.inf) == pytest.approx((1.959964 + 0.841621) * 0.01, rel=1e-5)
    assert np.isnan(stats.detectable(np.nan, np.nan)) and np.isnan(stats.power(0.1, np.nan, np.nan))
    with pytest.raises(ValueError):
        stats.detectable(0.01, 5, power=0.04)


def test_planned_se_follows_the_rule_for_one_run_and_fixed_references():
    assert all(np.isnan(stats.planned_se(1, 200, 0.02, 0.1)))  # one run against a fixed reference
    se, df = stats.planned_se(5, None, 0.04)
    assert (se, df) == (pytest.approx(0.04 / np.sqrt(5)), 4)
    one, borrowed = stats.planned_se(1, None, 0.04, b_seeds=3), stats.planned_se(3, None, 0.04, b_seeds=1)
    assert one == borrowed and one[0] == pytest.approx(0.04 * np.sqrt(1 + 1 / 3))
    assert stats.welch([0.60], [0.58, 0.62, 0.60]).se == pytest.approx(0.02 * np.sqrt(1 + 1 / 3))
    with pytest.raises(ValueError):
        stats.planned_se(3, 200, 0.02, None)  # a paired design needs its disagreement


def test_a_comparisons_detectable_is_from_its_own_se_and_df():
    c = stats.judge([0.70, 0.72, 0.69], [0.66, 0.68, 0.67])
    assert c.detectable == pytest.approx(stats.detectable(c.se, c.df))
    assert np.isnan(stats.judge([0.7], [0.6]).detectable)
