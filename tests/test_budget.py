"""Test accuracy at several budgets within one run (``test_at``), and the verdict on the gain by budget."""
import numpy as np
import pytest
from tiny import TINY, tiny_folder, tiny_lm, tiny_setup

from bbt_mini.methods.bbt import BBTConfig, run_bbt
from bbt_mini.methods.bbtv2 import BBTv2Config, run_bbtv2
from bbt_mini.core.cost import accuracy_by_budget, gain_from, incumbent_curve, results_by_budget, train_accuracy
from bbt_mini.methods.experiment import evaluate
from bbt_mini.run.runs import cache_path
from bbt_mini.run.spec import RunSpec


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    return tiny_lm(tiny_folder(tmp_path_factory, "roberta"))


@pytest.mark.parametrize("runner,config", [(run_bbt, BBTConfig(**TINY)), (run_bbtv2, BBTv2Config(**TINY))])
def test_the_numbers_at_the_last_budget_equal_the_runs_final_test(lm, runner, config):
    r = runner(tiny_setup(lm), config, progress=False, test_at=(4, 8, config.budget))
    assert [e["budget"] for e in r["test_at"]] == [4, 8, config.budget]
    last = r["test_at"][-1]
    assert last["test_accuracy"] == r["test_accuracy"] and last["best_dev_acc"] == r["best_dev_acc"]
    setup = tiny_setup(lm)
    assert last["test_loss"] == pytest.approx(evaluate(setup.service, setup.test, r["_prompt"])["loss"], abs=1e-6)
    # Each distinct prompt is scored on the test set once: a budget that returns the same prompt as the
    # budget before it reuses its scores, and the final result reuses the last side test's (a prompt
    # once replaced never comes back, so a changed test loss marks a new prompt).
    plain = runner(tiny_setup(lm), config, progress=False)
    losses = [e["test_loss"] for e in r["test_at"]]
    distinct = 1 + sum(a != b for a, b in zip(losses, losses[1:]))
    test_examples = len(setup.test)
    assert r["meter"]["examples"] - plain["meter"]["examples"] == (distinct - 1) * test_examples + (
        r["meter"]["calls"] - plain["meter"]["calls"] - (distinct - 1)) * len(setup.dev)


@pytest.mark.parametrize("budget", [4, 12])
def test_each_budget_scores_the_prompt_a_run_of_that_budget_returns(lm, budget):
    whole = run_bbt(tiny_setup(lm), BBTConfig(**TINY), progress=False, test_at=(budget,))
    short = run_bbt(tiny_setup(lm), BBTConfig(**{**TINY, "budget": budget}), progress=False)
    entry = whole["test_at"][0]
    assert entry["calls"] == budget and entry["test_accuracy"] == short["test_accuracy"]
    assert entry["best_dev_acc"] == short["best_dev_acc"] and entry["best_dev_calls"] == short["best_dev_calls"]
    setup = tiny_setup(lm)
    assert entry["test_loss"] == pytest.approx(evaluate(setup.service, setup.test, short["_prompt"])["loss"], abs=1e-6)


def test_testing_along_the_way_leaves_the_run_unchanged(lm):
    plain = run_bbt(tiny_setup(lm), BBTConfig(**TINY), progress=False)
    tested = run_bbt(tiny_setup(lm), BBTConfig(**TINY), progress=False, test_at=(4, 12))
    assert tested["curve"] == plain["curve"] and tested["dev_calls"] == plain["dev_calls"]
    assert tested["test_accuracy"] == plain["test_accuracy"] and "test_at" not in plain
    np.testing.assert_array_equal(tested["_prompt"], plain["_prompt"])


@pytest.mark.parametrize("runner,config", [(run_bbt, BBTConfig(**TINY)), (run_bbtv2, BBTv2Config(**TINY))])
def test_train_accuracy_is_the_returned_prompts_accuracy_on_the_training_set(lm, runner, config):
    whole = runner(tiny_setup(lm), config, progress=False, test_at=(4, 12, config.budget))
    setup = tiny_setup(lm)
    for budget in (4, 12, config.budget):
        short = runner(tiny_setup(lm), type(config)(**{**TINY, "budget": budget}), progress=False)
        on_train = evaluate(setup.service, setup.train, short["_prompt"])["accuracy"]
        assert train_accuracy(whole, budget) == train_accuracy(short) == pytest.approx(on_train)
    with pytest.raises(ValueError, match="no test_at entry for 8 calls"):
        train_accuracy(whole, 8)


def test_the_incumbent_is_the_lowest_training_loss_so_far_and_the_first_of_a_tie():
    curve = [{"calls": 4, "train_loss": 0.9, "train_acc": 0.50}, {"calls": 8, "train_loss": 0.7, "train_acc": 0.75},
             {"calls": 12, "train_loss": 0.8, "train_acc": 1.00}, {"calls": 16, "train_loss": 0.7, "train_acc": 0.25}]
    calls, acc = incumbent_curve(curve)
    assert calls.tolist() == [4, 8, 12, 16] and acc.tolist() == [0.50, 0.75, 0.75, 0.75]
    run = {"curve": curve, "calls": 16, "best_dev_calls": 4, "test_at": [{"budget": 16, "calls": 16,
                                                                          "best_dev_calls": 0}]}
    assert train_accuracy(run) == 0.50 and train_accuracy(run, 16) == 0.75  # 0: never checked, the last incumbent


@pytest.mark.parametrize("test_at,message", [([8, 32], "beyond this run's budget of 16"), ([0, 8], "at least 1"),
                                             ([8, 8], "twice")])
def test_a_budget_beyond_the_run_or_out_of_range_is_refused_before_the_model_loads(test_at, message):
    with pytest.raises(ValueError, match=message):
        RunSpec("bbt", "rotten_tomatoes", "no-such-model", profile="ci", config={"budget": 16}, test_at=test_at)


def test_a_budget_beyond_the_run_is_refused_by_the_tuning_loop_too(lm):
    with pytest.raises(ValueError, match="beyond this run's budget"):
        run_bbt(tiny_setup(lm), BBTConfig(**TINY), progress=False, test_at=(20,))


def test_test_at_is_refused_for_a_baseline():
    with pytest.raises(ValueError, match="test_at"):
        RunSpec("manual", "rotten_tomatoes", "no-such-model", profile="ci", test_at=[8])


def test_the_cache_key_includes_the_budgets_tested(tmp_path, monkeypatch):
    monkeypatch.setenv("BBT_MINI_CACHE", str(tmp_path))
    def path(test_at):
        return cache_path(RunSpec("bbt", "rotten_tomatoes", "smollm2", 1, "ci", test_at=test_at))

    plain = path(())
    assert path([8, 16]) != plain and path([8, 16]) != path([4, 16])
    assert path([16, 8]) == path([8, 16]) and path(None) == plain


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
    assert since is None and "is not detectable at the last budget" in sentence
    lost = {10: [0.60, 0.61, 0.62], 50: [0.45, 0.55, 0.50]}  # beyond at 10, not at the last budget
    since, _, sentence = gain_from(lost, 0.5, "task A")
    assert since is None and "it was at 10 calls" in sentence
    below = {10: [0.30, 0.31, 0.32]}
    assert "detectably below the manual prompt" in gain_from(below, 0.5, "task A")[2]


def test_gain_from_pairs_runs_by_test_sentence_with_results_by_budget():
    labels = [0, 1] * 50
    manual = {"test_set": "t", "test_labels": labels, "test_answers": labels[:70] + [1 - y for y in labels[70:]],
              "test_accuracy": 0.7}

    def run(seed, right):  # right: sentences answered correctly at budget 10 and 50
        entries = [{"budget": b, "test_set": "t", "test_accuracy": n / 100,
                    "test_answers": labels[:n] + [1 - y for y in labels[n:]]} for b, n in right.items()]
        return {"seed": seed, "test_labels": labels, "test_at": entries}

    runs = [run(s, {10: 70 + s - 1, 50: 85 + s}) for s in range(3)]
    by_budget = results_by_budget(runs)
    assert by_budget[50][2]["test_labels"] == labels and by_budget[50][2]["seed"] == 2
    since, comps, sentence = gain_from(by_budget, manual, "task A")
    assert since == 50 and comps[50].rule == "paired" and "paired over 100 test sentences" in sentence
    assert comps[10].verdict == "no detectable difference"
    with pytest.raises(ValueError, match="different test sets"):
        gain_from(by_budget, {**manual, "test_set": "u"}, "task A")


def test_every_method_records_its_answer_per_test_sentence_so_any_two_results_pair(lm):
    """BBT, BBTv2 (and their test_at entries), manual, in-context learning, prompt tuning and the
    Feature-MLP each record the class answered per test sentence, the labels and the test set's hash."""
    from bbt_mini.core import stats
    from bbt_mini.methods import baselines

    setup = tiny_setup(lm)
    made = {"bbt": run_bbt(setup, BBTConfig(**TINY), progress=False, test_at=(4,)),
            "bbtv2": run_bbtv2(tiny_setup(lm), BBTv2Config(**TINY), progress=False, test_at=(4,)),
            "manual": baselines.manual_prompt(setup), "icl": baselines.in_context(setup),
            "prompt_tuning": baselines.prompt_tuning(setup, steps=2, progress=False),
            "feature_mlp": baselines.feature_mlp(setup, steps=2)}
    labels = [int(y) for y in setup.test.labels]
    for name, r in made.items():
        assert r["test_labels"] == labels and len(r["test_answers"]) == len(labels), name
        assert np.mean(np.array(r["test_answers"]) == labels) == pytest.approx(r["test_accuracy"]), name
        assert r["test_set"] == made["manual"]["test_set"], name
        assert stats.judge([r], made["manual"]).rule == "paired"
    entry = results_by_budget([made["bbt"]])[4][0]
    assert entry["test_set"] == made["manual"]["test_set"] and len(entry["test_answers"]) == len(labels)
    other = tiny_setup(lm, test_size=6)
    assert baselines.manual_prompt(other)["test_set"] != made["manual"]["test_set"]
    with pytest.raises(ValueError, match="different test sets"):
        stats.judge([made["bbt"]], baselines.manual_prompt(other))
