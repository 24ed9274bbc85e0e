"""Holm's adjustment: its step-down arithmetic, its order, and the family-wise error it controls."""
import math

import numpy as np
import pytest

from bbt_mini.core import stats


def test_holm_steps_down_by_hand():
    # sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> kept at 0.06
    adjusted = stats.holm([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02])


def test_holm_is_never_below_the_raw_p_nor_above_bonferroni():
    rng = np.random.default_rng(3)
    for _ in range(200):
        p = rng.uniform(size=rng.integers(1, 10)) ** 2
        adjusted = stats.holm(p)
        assert np.all(adjusted >= p - 1e-15)
        assert np.all(adjusted <= np.minimum(1.0, len(p) * p) + 1e-15)
        order = np.argsort(p)  # larger raw p, never a smaller adjusted one
        assert np.all(np.diff(adjusted[order]) >= -1e-15)


def test_holm_rejects_where_bonferroni_does_not():
    p = [0.012, 0.02]  # Bonferroni: 0.024 and 0.04; Holm: 0.024 and 0.024 (the step-down)
    np.testing.assert_allclose(stats.holm(p), [0.024, 0.024])


def test_holm_keeps_the_family_wise_error_at_alpha():
    # 8 true nulls (uniform p): unadjusted, one or more look like a difference about 1 - 0.95^8 = 34% of
    # the time; adjusted, at most 5%
    rng = np.random.default_rng(7)
    p = rng.uniform(size=(20000, 8))
    raw = np.mean((p < stats.ALPHA).any(1))
    held = np.mean([(stats.holm(row) < stats.ALPHA).any() for row in p])
    assert raw > 0.3
    assert held <= stats.ALPHA + 0.005


def test_holm_counts_a_comparison_that_cannot_judge():
    adjusted = stats.holm([0.02, math.nan])
    assert adjusted[0] == pytest.approx(0.04) and math.isnan(adjusted[1])
    with pytest.raises(ValueError):
        stats.holm([])
    with pytest.raises(ValueError):
        stats.holm([1.5])


def test_holm_family_takes_the_verdict_from_the_adjusted_p():
    edge = stats.welch([0.60, 0.64, 0.62, 0.66], [0.56, 0.59, 0.58, 0.60])
    null = stats.welch([0.60, 0.62, 0.61], [0.61, 0.60, 0.62])
    assert edge.verdict == "higher" and null.verdict == "no detectable difference"
    assert 0.025 <= edge.p < 0.05  # detected alone, not once the family of two is counted
    judged = stats.holm_family([edge, null])
    assert judged[0].verdict == "no detectable difference" and judged[0].p == pytest.approx(2 * edge.p)
    assert (judged[0].low, judged[0].high, judged[0].diff) == (edge.low, edge.high, edge.diff)
    big = stats.welch([0.9, 0.91, 0.92], [0.5, 0.51, 0.49])  # p far below 0.05 / 2: still detected
    assert [c.verdict for c in stats.holm_family([big, null])] == ["higher", "no detectable difference"]


def test_compare_together_words_each_verdict_from_the_adjusted_p():
    from bbt_mini.book.notebook import compare, compare_together

    a, b = [0.60, 0.64, 0.62, 0.66], [0.56, 0.59, 0.58, 0.60]  # p in [0.025, 0.05): higher alone
    alone = compare(a, b, "A", "B")
    edge, null = compare_together((a, b, "A", "B"),
                                  ([0.60, 0.62, 0.61], [0.61, 0.60, 0.62], "C", "D", dict(what="loss")))
    assert alone.verdict == "higher" and edge.verdict == "no detectable difference"
    assert edge.p == pytest.approx(2 * alone.p) and "no detectable difference" in edge.sentence
    assert edge.sentence.endswith("over this claim's 2 primary comparisons)") and " loss" in null.sentence
    with pytest.raises(ValueError, match="two or more"):
        compare_together((a, b, "A", "B"))
    with pytest.raises(ValueError, match="name_b"):
        compare_together((a, b, "A"), (a, b, "A", "B"))
