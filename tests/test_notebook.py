"""The book's verdicts are computed: bbt_mini.book.notebook.compare and shape turn measured numbers into words."""
import numpy as np
import pytest

from bbt_mini.book.notebook import compare, design, difference, plain, shape
from bbt_mini.core import stats
from bbt_mini.core.stats import t_critical


def test_compare_says_higher_and_flips_to_lower_when_the_numbers_flip():
    bbt, rand = [0.71, 0.70, 0.72], [0.60, 0.61, 0.59]
    up = compare(bbt, rand, "BBT", "random search")
    down = compare(rand, bbt, "random search", "BBT")
    assert up.verdict == "higher" and down.verdict == "lower"
    assert "BBT (0.710 ± 0.010 over 3 seeds) is higher than random search" in up.sentence
    assert "random search (0.600 ± 0.010 over 3 seeds) is lower than BBT" in down.sentence
    assert up.diff == pytest.approx(0.11) and down.diff == pytest.approx(-0.11)
    assert "by 0.110" in up.sentence and "by 0.110" in down.sentence


def test_compare_standard_error_is_sample_std_over_sqrt_n_combined_for_two_groups():
    a, b = [0.70, 0.74, 0.72, 0.76], [0.60, 0.70, 0.65]
    c = compare(a, b, "a", "b")
    expected = np.sqrt(np.var(a, ddof=1) / 4 + np.var(b, ddof=1) / 3)
    assert c.se == pytest.approx(expected)
    half = t_critical(c.df) * expected
    assert c.low == pytest.approx(c.diff - half) and f"95% interval {c.low:+.3f} to {c.high:+.3f}" in c.sentence
    assert "Welch's t over seeds, nothing paired" in c.sentence


def test_compare_within_the_noise_is_no_detectable_difference():
    a, b = [0.70, 0.66, 0.74], [0.69, 0.71, 0.70]
    c = compare(a, b, "BBTv2", "BBT")
    assert c.p >= 0.05 and c.low < 0 < c.high
    assert c.verdict == "no detectable difference"
    assert "no detectable difference" in c.sentence and "higher" not in c.sentence and "lower" not in c.sentence


def test_compare_just_beyond_students_t_is_a_verdict_and_just_within_is_not():
    base = [0.0, 0.1, 0.2]  # sample std 0.1, se against a fixed reference 0.1 / sqrt(3), 2 degrees of freedom
    se, t = 0.1 / np.sqrt(3), 4.303
    assert compare(base, 0.1 - 1.01 * t * se, "a", "ref").verdict == "higher"
    assert compare(base, 0.1 - 0.99 * t * se, "a", "ref").verdict == "no detectable difference"
    assert compare(base, 0.1 - 2.1 * se, "a", "ref").verdict == "no detectable difference"  # the old rule's "higher"
    assert compare(base, 0.1 + 1.01 * t * se, "a", "ref").verdict == "lower"


def test_compare_against_a_fixed_reference_uses_only_the_seeds_spread():
    c = compare([0.70, 0.72, 0.71], 0.667, "BBT", "the manual prompt")
    assert c.se == pytest.approx(0.01 / np.sqrt(3))
    assert "the manual prompt (0.667)" in c.sentence and c.verdict == "higher"


def test_compare_without_spread_gives_no_verdict_but_says_why():
    one_each = compare([0.62], [0.70], "d = 10", "d = 400")
    single_vs_fixed = compare([0.62], 0.70, "BBT", "the manual prompt")
    identical_seeds = compare([0.60, 0.60], 0.70, "BBT", "the manual prompt")
    for c in (one_each, single_vs_fixed, identical_seeds):
        assert c.verdict == "cannot judge" and np.isnan(c.se)
        assert "cannot say whether it is more than noise" in c.sentence
        assert "higher" not in c.sentence and "lower" not in c.sentence
        assert "-0.080" in c.sentence or "-0.100" in c.sentence
    assert "one run on each side" in one_each.sentence
    assert "fixed reference" in single_vs_fixed.sentence
    assert "agree exactly" in identical_seeds.sentence


def test_compare_one_run_against_several_seeds_borrows_their_spread():
    c = compare([0.60, 0.64], [0.70], "prompt tuning", "BBT")
    s = np.std([0.60, 0.64], ddof=1)
    assert c.se == pytest.approx(np.sqrt(s ** 2 / 2 + s ** 2 / 1))
    assert "BBT (0.700, one run)" in c.sentence


@pytest.mark.parametrize("bad", [[], [0.5, np.nan], [[0.5, 0.6]]])
def test_compare_refuses_empty_non_finite_or_nested_values(bad):
    with pytest.raises(ValueError):
        compare(bad, 0.5, "a", "b")


def test_compare_refuses_two_fixed_numbers():
    with pytest.raises(ValueError, match="fixed reference"):
        compare(0.7, 0.6, "a", "b")


def test_compare_sentence_is_a_plain_str_myst_nb_can_glue():
    s = compare([0.7, 0.72], 0.6, "a", "b").sentence
    assert type(s) is str and eval(repr(s)) == s  # myst-nb literal-evals the text/plain repr


def test_shape_with_one_seed_per_point_states_the_paper_not_a_shape():
    text = shape({10: [0.70], 100: [0.68], 400: [0.65]}, "d", paper="that larger d helps, then saturates")
    assert "cannot show a shape" in text and "one seed per point" in text
    assert "The paper found that larger d helps, then saturates." in text
    assert "d = 10: 0.700" in text and "d = 400: 0.650" in text


def test_shape_rises_then_falls_only_when_both_ends_are_detectably_below_the_peak():
    peaked = shape({3: [0.70, 0.71, 0.69], 10: [0.80, 0.79, 0.81], 25: [0.65, 0.66, 0.64]}, "L")
    assert "highest mean is at L = 10" in peaked
    assert "against L = 3: higher" in peaked and "against L = 25: higher" in peaked
    flat = shape({3: [0.70, 0.74, 0.66], 10: [0.71, 0.75, 0.67], 25: [0.69, 0.73, 0.65]}, "L")
    assert "against L = 3: no detectable difference" in flat and "against L = 25: no detectable difference" in flat


def test_shape_refuses_a_single_point():
    with pytest.raises(ValueError):
        shape({10: [0.7, 0.7, 0.7]}, "d")


# Each chapter's verdict path, with the shapes of data the chapter passes (per-seed lists,
# a fixed manual-prompt number, single-seed grid points) in the ci profile's 2 seeds and the
# small profile's 3: the sentence must flip when the numbers flip.
CHAPTER_SHAPES = {
    "03 BBT vs manual": (lambda hi, lo: ([hi, hi + 0.01, hi - 0.01], lo)),
    "03 BBT vs random search": (lambda hi, lo: ([hi, hi + 0.01, hi - 0.01], [lo, lo + 0.01, lo - 0.01])),
    "04 BBTv2 vs BBT, ci's 2 seeds": (lambda hi, lo: ([hi, hi + 0.01], [lo, lo - 0.01])),
    "05 normal vs uniform A": (lambda hi, lo: ([hi, hi - 0.01, hi + 0.02], [lo, lo + 0.02, lo])),
    "06 prompt tuning (one seed) vs BBT": (lambda hi, lo: ([hi], [lo, lo + 0.01, lo - 0.01])),
    "07 many shots vs few, one seed": (lambda hi, lo: ([hi], [lo])),
}


@pytest.mark.parametrize("chapter", CHAPTER_SHAPES)
def test_each_chapters_verdict_flips_when_its_numbers_flip(chapter):
    make = CHAPTER_SHAPES[chapter]
    first, second = make(0.80, 0.60)
    up = compare(first, second, "X", "Y")
    flipped_first, flipped_second = make(0.60, 0.80)
    down = compare(flipped_first, flipped_second, "X", "Y")
    if np.size(first) == 1 and np.size(second) == 1:
        assert up.verdict == down.verdict == "cannot judge"
        assert "+0.200" in up.sentence and "-0.200" in down.sentence
    else:
        assert (up.verdict, down.verdict) == ("higher", "lower")
        assert "X (0.8" in up.sentence and "is higher than Y" in up.sentence
        assert "is lower than Y" in down.sentence
    same = compare(*make(0.70, 0.70), "X", "Y")
    assert same.verdict in ("no detectable difference", "cannot judge")


def test_compare_names_the_unit_of_the_spread():
    c = compare([1.0, 2.0, 3.0], [0.0, 0.5, 1.0], "positive reviews", "negative ones", what="logit gap",
                unit="sentences")
    assert "over 3 sentences" in c.sentence and "seeds" not in c.sentence


def test_mean_std_is_the_sample_std_that_compare_quotes():
    from bbt_mini.book.notebook import mean_std

    m, s = mean_std([0.55, 0.60])
    assert (m, s) == pytest.approx((0.575, np.std([0.55, 0.60], ddof=1)))
    assert f"{m:.3f} ± {s:.3f}" in compare([0.55, 0.60], 0.5, "BBT", "ref").sentence
    assert mean_std([0.7]) == (0.7, 0.0)


def test_compare_pairs_results_by_test_sentence_and_says_so():
    labels = [0, 1] * 100
    def res(seed, n):  # the first n of 200 sentences answered correctly
        return {"seed": seed, "test_set": "t", "test_labels": labels, "test_accuracy": n / 200,
                "test_answers": labels[:n] + [1 - y for y in labels[n:]]}
    manual = res(0, 140)
    tuned = [res(s, 150 + s) for s in range(3)]
    c = compare(tuned, manual, "BBT", "the manual prompt")
    assert c.rule == "paired" and c.verdict == "higher"
    assert "the manual prompt (0.700)" in c.sentence  # a fixed reference has no seeds to pair
    assert "paired over 200 test sentences, against a fixed reference" in c.sentence
    plain = compare([r["test_accuracy"] for r in tuned], 0.7, "BBT", "the manual prompt")
    assert plain.rule == "welch" and "nothing paired" in plain.sentence


def test_shape_takes_per_seed_results_and_pairs_them():
    labels = [0, 1] * 50

    def res(n):  # the first n of 100 sentences right
        return {"test_set": "t", "test_labels": labels, "test_accuracy": n / 100,
                "test_answers": labels[:n] + [1 - y for y in labels[n:]]}
    text = shape({3: [res(60), res(61), res(59)], 10: [res(80), res(81), res(79)],
                  25: [res(78), res(80), res(79)]}, "L")
    assert "L = 10: 0.800" in text and "against L = 3: higher by 0.200" in text
    assert "against L = 25: no detectable difference" in text


def test_plain_log_ticks_label_a_log_budget_axis_with_plain_numbers():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bbt_mini.book.notebook import plain_log_ticks

    fig, ax = plt.subplots()
    ax.plot([10, 30, 40, 100, 2000], [0.5, 0.6, 0.6, 0.7, 0.8])
    ax.set_xscale("log")
    plain_log_ticks(ax)
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ["10", "30", "40", "100", "2,000"]
    assert not any("10^" in t or "times" in t for t in labels)
    plt.close(fig)


def test_against_prediction_says_which_happened_and_never_counts_a_null_as_confirmation():
    from bbt_mini.book.notebook import against_prediction

    higher = compare([0.70, 0.71, 0.72], [0.60, 0.61, 0.62], "a", "b")
    null = compare([0.70, 0.60, 0.65], [0.66, 0.64, 0.65], "a", "b")
    assert null.verdict == "no detectable difference"
    assert against_prediction(higher, "higher") == "as predicted"
    assert against_prediction(higher, "lower") == "against the prediction"
    assert against_prediction(higher, "no detectable difference") == "against the prediction"
    consistent = against_prediction(null, "no detectable difference")
    assert consistent.startswith("consistent") and "cannot confirm" in consistent
    assert f"{null.detectable:.3f} or more 80% of the time" in consistent
    assert "no verdict" in against_prediction(compare([0.7], [0.6], "a", "b"), "higher")
    with pytest.raises(ValueError, match="predicted must be"):
        against_prediction(higher, "better")


def test_against_prediction_a_null_is_undecided_when_too_weak_and_says_its_power():
    from bbt_mini.book.notebook import against_prediction

    null = compare([0.70, 0.60, 0.65], [0.66, 0.64, 0.65], "a", "b")  # detects about 0.16
    plain = against_prediction(null, "higher")
    assert plain.startswith("not decided") and "against" not in plain
    assert f"{null.detectable:.3f}" in plain
    weak = against_prediction(null, "higher", effect=0.05)
    expected = stats.power(0.05, null.se, null.df)
    assert expected < 0.8 and weak.startswith("not decided") and f"power {expected:.2f}" in weak
    assert "0.050" in weak
    strong = against_prediction(null, "lower", effect=-0.5)  # far beyond what it detects
    assert strong.startswith("not as predicted") and "against" not in strong
    assert f"power {stats.power(0.5, null.se, null.df):.2f}" in strong


def test_design_says_whether_the_comparison_can_decide_the_predicted_effect():
    se, df = stats.planned_se(3, 200, 0.01, 0.15)
    found = stats.detectable(se, df)
    can = design("BBT against the manual prompt", 2 * found, se, df)
    cannot = design("BBT against the manual prompt", -found / 2, se, df)
    assert can.decidable and not cannot.decidable
    assert str(can).endswith(f"it can decide it (power {stats.power(2 * found, se, df):.2f} against {2 * found:+.3f})")
    assert "it cannot decide it here" in cannot and f"{found:.3f} or more 80% of the time" in cannot
    assert cannot.power == pytest.approx(stats.power(found / 2, se, df)) and cannot.power < 0.8 < can.power
    assert plain(can) == str(can) and type(plain(can)) is str  # glue stores its words
    null = design("BBT against random search", 0.0, se, df)
    assert not null.decidable and "consistent" in null and "confirming" in null and f"{found:.3f}" in null
    none = design("one run against the manual prompt", 0.05, *stats.planned_se(1, 200, 0.01, 0.15))
    assert not none.decidable and "cannot judge" in none


def test_design_of_a_family_plans_at_holms_strictest_level():
    se, df = stats.planned_se(3, 200, 0.01, 0.15)
    alone, one_of_3 = design("d", 0.05, se, df), design("d", 0.05, se, df, family=3)
    assert one_of_3.detectable == pytest.approx(stats.detectable(se, df, alpha=stats.ALPHA / 3))
    assert one_of_3.detectable > alone.detectable and one_of_3.power < alone.power
    assert "5% / 3" in one_of_3 and "5% / 3" not in alone
    with pytest.raises(ValueError, match="1 or more"):
        design("d", 0.05, se, df, family=0)


def test_a_null_sentence_states_what_the_comparison_detects():
    null = compare([0.70, 0.60, 0.65], [0.66, 0.64, 0.65], "a", "b")
    assert null.sentence.endswith(f"(this comparison detects a difference of {null.detectable:.3f} or more "
                                  "80% of the time)")
    assert stats.power(null.detectable, null.se, null.df) == pytest.approx(0.8)
    assert "80% of the time" not in compare([0.70, 0.71, 0.72], [0.60, 0.61, 0.62], "a", "b").sentence
    flat = shape({1: [0.70, 0.60, 0.65], 2: [0.66, 0.64, 0.65]}, "x")
    assert "no detectable difference (it detects" in flat


@pytest.mark.parametrize("a, b", [([0.71, 0.70, 0.72], [0.60, 0.61, 0.59]),  # a clear difference
                                  ([0.60, 0.61, 0.59], [0.71, 0.70, 0.72]),  # the same, flipped
                                  ([0.70, 0.72, 0.69], [0.71, 0.70, 0.70]),  # a null
                                  ([0.70], 0.60)])  # cannot judge
def test_difference_shows_the_numbers_and_interval_without_verdict_words(a, b):
    c, judged = difference(a, b, "X", "Y"), compare(a, b, "X", "Y")
    assert c.verdict == judged.verdict and c.diff == pytest.approx(judged.diff)  # the same rule underneath
    for word in ("higher", "lower", "detectable", "cannot say"):
        assert word not in c.sentence
    assert f"{c.diff:+.3f}" in c.sentence and c.sentence.startswith("X (")
    assert ("95% interval" in c.sentence) == (judged.verdict != "cannot judge")
