"""Test accuracy at several budgets within one run (``test_at``), and the verdict on the gain by budget."""
import numpy as np
import pytest
from tiny import TINY, tiny_folder, tiny_lm, tiny_setup

from bbt_mini.methods.bbt import BBTConfig, run_bbt
from bbt_mini.methods.bbtv2 import BBTv2Config, run_bbtv2
from bbt_mini.core.cost import accuracy_by_budget, gain_from
from bbt_mini.methods.experiment import evaluate
from bbt_mini.run.runs import cache_path, run


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    return tiny_lm(tiny_folder(tmp_path_factory, "roberta"))


def _setup(lm, test_at=()):
    setup = tiny_setup(lm)
    setup.test_at = tuple(test_at)
    return setup


@pytest.mark.parametrize("runner,config", [(run_bbt, BBTConfig(**TINY)), (run_bbtv2, BBTv2Config(**TINY))])
def test_the_numbers_at_the_last_budget_equal_the_runs_final_test(lm, runner, config):
    r = runner(_setup(lm, (4, 8, config.budget)), config, progress=False)
    assert [e["budget"] for e in r["test_at"]] == [4, 8, config.budget]
    last = r["test_at"][-1]
    assert last["test_accuracy"] == r["test_accuracy"] and last["best_dev_acc"] == r["best_dev_acc"]
    setup = _setup(lm)
    assert last["test_loss"] == pytest.approx(evaluate(setup.service, setup.test, r["_prompt"])["loss"], abs=1e-6)
    # That prompt is scored on the test set once, not again for the final result: 3 side tests, no fourth.
    plain = runner(_setup(lm), config, progress=False)
    test_examples = len(setup.test)
    assert r["meter"]["examples"] - plain["meter"]["examples"] == 2 * test_examples + (
        r["meter"]["calls"] - plain["meter"]["calls"] - 2) * len(setup.dev)


@pytest.mark.parametrize("budget", [4, 12])
def test_each_budget_scores_the_prompt_a_run_of_that_budget_returns(lm, budget):
    whole = run_bbt(_setup(lm, (budget,)), BBTConfig(**TINY), progress=False)
    short = run_bbt(_setup(lm), BBTConfig(**{**TINY, "budget": budget}), progress=False)
    entry = whole["test_at"][0]
    assert entry["calls"] == budget and entry["test_accuracy"] == short["test_accuracy"]
    assert entry["best_dev_acc"] == short["best_dev_acc"] and entry["best_dev_calls"] == short["best_dev_calls"]
    setup = _setup(lm)
    assert entry["test_loss"] == pytest.approx(evaluate(setup.service, setup.test, short["_prompt"])["loss"], abs=1e-6)


def test_testing_along_the_way_leaves_the_run_unchanged(lm):
    plain = run_bbt(_setup(lm), BBTConfig(**TINY), progress=False)
    tested = run_bbt(_setup(lm, (4, 12)), BBTConfig(**TINY), progress=False)
    assert tested["curve"] == plain["curve"] and tested["dev_calls"] == plain["dev_calls"]
    assert tested["test_accuracy"] == plain["test_accuracy"] and "test_at" not in plain
    np.testing.assert_array_equal(tested["_prompt"], plain["_prompt"])


@pytest.mark.parametrize("test_at,message", [([8, 32], "beyond this run's budget of 16"), ([0, 8], "at least 1"),
                                             ([8, 8], "twice")])
def test_a_budget_beyond_the_run_or_out_of_range_is_refused_before_the_model_loads(test_at, message):
    with pytest.raises(ValueError, match=message):
        run("bbt", "rotten_tomatoes", "no-such-model", profile="ci", budget=16, test_at=test_at)


def test_a_budget_beyond_the_run_is_refused_by_the_tuning_loop_too(lm):
    with pytest.raises(ValueError, match="beyond this run's budget"):
        run_bbt(_setup(lm, (20,)), BBTConfig(**TINY), progress=False)


def test_test_at_is_refused_for_a_baseline():
    with pytest.raises(ValueError, match="test_at"):
        run("manual", "rotten_tomatoes", "no-such-model", profile="ci", test_at=[8])


def test_the_cache_key_includes_the_budgets_tested(tmp_path, monkeypatch):
    monkeypatch.setenv("BBT_MINI_CACHE", str(tmp_path))
    plain = cache_path("bbt", "rotten_tomatoes", "smollm2", 1, "ci")
    assert cache_path("bbt", "rotten_tomatoes", "smollm2", 1, "ci", test_at=[8, 16]) != plain
    assert (cache_path("bbt", "rotten_tomatoes", "smollm2", 1, "ci", test_at=[8, 16])
            != cache_path("bbt", "rotten_tomatoes", "smollm2", 1, "ci", test_at=[4, 16]))
    assert (cache_path("bbt", "rotten_tomatoes", "smollm2", 1, "ci", test_at=[16, 8])
            == cache_path("bbt", "rotten_tomatoes", "smollm2", 1, "ci", test_at=[8, 16]))
    assert cache_path("bbt", "rotten_tomatoes", "smollm2", 1, "ci", test_at=None) == plain


def _runs(by_budget):
    """Fake results: ``{budget: per-seed accuracies}`` as runs made with test_at."""
    seeds = len(next(iter(by_budget.values())))
    return [{"test_at": [{"budget": b, "test_accuracy": v[s]} for b, v in by_budget.items()]} for s in range(seeds)]


def test_accuracy_by_budget_collects_each_budget_over_the_runs():
    got = accuracy_by_budget(_runs({50: [0.5, 0.6, 0.7], 10: [0.1, 0.2, 0.3]}))
    assert list(got) == [10, 50] and got[50] == [0.5, 0.6, 0.7]
    with pytest.raises(ValueError, match="without test_at"):
        accuracy_by_budget([{"test_accuracy": 0.5}])


def test_the_gain_verdict_names_the_budget_from_which_it_is_beyond_the_noise_and_flips_with_the_numbers():
    rising = {10: [0.49, 0.52, 0.50], 50: [0.60, 0.62, 0.61], 100: [0.70, 0.71, 0.72]}
    since, comps, sentence = gain_from(rising, 0.5, "task A")
    assert since == 50 and "from 50 calls on" in sentence and comps[10].verdict == "no detectable difference"
    flat = {b: [0.45, 0.55, 0.50] for b in rising}  # the same gains now within the noise
    since, _, sentence = gain_from(flat, 0.5, "task A")
    assert since is None and "does not exceed two standard errors" in sentence
    lost = {10: [0.60, 0.61, 0.62], 50: [0.45, 0.55, 0.50]}  # beyond at 10, not at the last budget
    since, _, sentence = gain_from(lost, 0.5, "task A")
    assert since is None and "it did at 10 calls" in sentence
    below = {10: [0.30, 0.31, 0.32]}
    assert "below the manual prompt beyond the noise" in gain_from(below, 0.5, "task A")[2]
