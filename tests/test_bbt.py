"""The BBT and BBTv2 search on the one tuning loop: exact budgets, dev checks, labels, results, bad input.

All on a tiny random masked LM (plumbing and bookkeeping, never results); checkpoints and
resume are in test_resume.py.
"""
import json

import numpy as np
import pytest
from tiny import TINY, tiny_folder, tiny_lm, tiny_setup

from bbt_mini.core.paper import method_label
from bbt_mini.core.projection import P0_FIRST_TOKEN, build_p0
from bbt_mini.core.results import to_json
from bbt_mini.methods.bbt import BBTConfig, projection_for, run_bbt
from bbt_mini.core.optimizers import make_optimizer
from bbt_mini.methods.bbtv2 import (LAYER_SEEDS, BBTv2Config, Joint, deep_projections, layer_seed, layer_stats,
                                 run_bbtv2)
from bbt_mini.methods.experiment import evaluate


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    return tiny_lm(tiny_folder(tmp_path_factory))


@pytest.fixture()
def setup(lm):
    return tiny_setup(lm)


def test_bbt_spends_exactly_its_budget_and_meters_dev_and_test_apart(setup):
    r = run_bbt(setup, BBTConfig(**{**TINY, "budget": 14}), progress=False)
    assert [e["calls"] for e in r["curve"]] == [4, 8, 12, 14] and r["calls"] == 14
    # dev checks (one call each, at 8 and at the end if the incumbent changed) and the test (1) are
    # metered but not charged to the budget
    assert r["meter"]["calls"] == 14 + r["dev_calls"] + 1 and 1 <= r["dev_calls"] <= 2
    assert "dev_acc" in r["curve"][1] and "dev_acc" in r["curve"][3] and "dev_acc" not in r["curve"][0]


def test_tested_prompt_is_the_best_dev_prompt_and_its_scores_are_recomputable(setup):
    r = run_bbt(setup, BBTConfig(**TINY), progress=False)
    assert evaluate(setup.service, setup.test, r["_prompt"])["accuracy"] == r["test_accuracy"]
    assert evaluate(setup.service, setup.dev, r["_prompt"])["accuracy"] == r["best_dev_acc"]
    assert r["best_dev_acc"] == max(e["dev_acc"] for e in r["curve"] if "dev_acc" in e)


def test_result_records_the_runs_identity_with_resolved_device_and_dtype(setup):
    r = run_bbt(setup, BBTConfig(**TINY), progress=False)
    data = json.loads(to_json(r))
    assert (data["task"], data["method"], data["seed"], data["k"], data["test_size"]) == \
        ("rotten_tomatoes", "bbt", 1, 2, 8)
    assert data["device"] == "cpu" and data["dtype"] == "float32" and data["placement"] == "prepend"
    assert data["model"] == setup.service.model_name and data["config"]["intrinsic_dim"] == 6
    assert data["tokens"] == r["meter"]["tokens"] > 0 and set(data["versions"]) >= {"bbt_mini", "torch", "cma"}
    assert "_prompt" not in data


def test_same_seed_repeats_and_another_seed_searches_elsewhere(setup):
    a = run_bbt(setup, BBTConfig(**TINY), progress=False)
    b = run_bbt(setup, BBTConfig(**TINY), progress=False)
    assert a["curve"] == b["curve"]
    np.testing.assert_array_equal(a["_prompt"], b["_prompt"])
    c = run_bbt(setup, BBTConfig(**TINY), seed=2, progress=False)
    assert [e["train_loss"] for e in c["curve"]] != [e["train_loss"] for e in a["curve"]]


def test_bbtv2_spends_exactly_its_budget_layer_by_layer(setup):
    layers = setup.service.num_layers
    budget = 2 * layers + 3  # popsize 2: one full round, then a part of the next
    r = run_bbtv2(setup, BBTv2Config(**{**TINY, "popsize": 2, "budget": budget, "eval_every": 40}), progress=False)
    assert r["calls"] == budget
    assert [e["layer"] for e in r["curve"]] == list(range(layers)) + [0, 1]
    assert len(r["layer_stats"]) == layers and r["_prompt"].shape == (layers, 2, setup.service.hidden_size)


def test_bbtv2_moves_only_the_layer_whose_turn_it_is(setup):
    """Every layer but the first is zero before its turn: after one generation only layer 0 moved."""
    r = run_bbtv2(setup, BBTv2Config(**{**TINY, "budget": 4, "eval_every": 4}), progress=False)
    assert r["curve"][0]["layer"] == 0
    assert np.abs(r["_prompt"][1:]).max() == 0 and np.abs(r["_prompt"][0]).max() > 0


@pytest.mark.parametrize("runner,config,label", [(run_bbt, BBTConfig, "bbt-random"),
                                                 (run_bbtv2, BBTv2Config, "bbtv2-random")])
def test_another_optimizer_is_named_in_the_method_and_gets_its_own_row_label(setup, runner, config, label):
    other = runner(setup, config(**{**TINY, "budget": 8, "optimizer": "random"}), progress=False)
    cma = runner(setup, config(**{**TINY, "budget": 8}), progress=False)
    assert other["method"] == label and cma["method"] == label.split("-")[0]
    assert method_label(other) == method_label(cma) + " (random)"


def test_joint_search_spends_the_same_calls_and_moves_every_layer_at_once(setup):
    """One CMA-ES over all layers' z: the same calls as BBTv2's layer-by-layer search (a partial last
    generation included), a deep prompt of the same shape, every layer moved from the first generation."""
    layers = setup.service.num_layers
    budget = 3 * layers + 2
    config = {**TINY, "popsize": 3, "budget": budget, "eval_every": 40}
    joint = run_bbtv2(setup, BBTv2Config(**config, search="joint"), progress=False)
    layerwise = run_bbtv2(setup, BBTv2Config(**config), progress=False)
    assert joint["calls"] == layerwise["calls"] == budget
    assert [e["calls"] for e in joint["curve"]] == [e["calls"] for e in layerwise["curve"]]
    assert joint["method"] == "deep-joint" and layerwise["method"] == "bbtv2" and "layer" not in joint["curve"][0]
    assert joint["_prompt"].shape == layerwise["_prompt"].shape == (layers, 2, setup.service.hidden_size)
    first = run_bbtv2(setup, BBTv2Config(**{**TINY, "budget": 4, "eval_every": 4, "search": "joint"}),
                      progress=False)
    assert all(np.abs(first["_prompt"][layer]).max() > 0 for layer in range(layers))


def test_joint_candidates_are_each_layers_A_times_its_block_of_z(setup):
    """The joint search draws layers x d numbers and builds layer l's prompt from block l with BBTv2's own
    A_l (and p0 at layer 0)."""
    config = BBTv2Config(**TINY)
    As, p0 = deep_projections(setup.service, config, 1, layer_stats(setup.service, setup.train))
    layers, d = len(As), config.intrinsic_dim
    search = Joint(As, p0, make_optimizer("cma", layers * d, config.sigma0, 3, seed=1))
    Z, prompts = search.ask(3)
    assert Z.shape == (3, layers * d) and prompts.shape == (3, layers, *p0.shape)
    for layer in range(layers):
        block = Z[:, layer * d:(layer + 1) * d]
        expected = (block @ As[layer].T).reshape(3, *p0.shape) + (p0 if layer == 0 else 0)
        np.testing.assert_allclose(prompts[:, layer], expected, rtol=1e-5, atol=1e-6)


def test_layer_seeds_differ_for_every_seed_and_layer_and_are_never_zero():
    seeds = [layer_seed(s, layer) for s in range(1, 4) for layer in range(LAYER_SEEDS - 1)]
    assert len(set(seeds)) == len(seeds) and min(seeds) > 0
    assert layer_seed(1, 0) == 1001  # the first landing's seeds: runs repeat


def test_p0_from_tokens_beyond_the_vocabulary_says_use_zeros(setup):
    fits = setup.service.vocab_size - P0_FIRST_TOKEN  # the longest prompt whose p0 tokens all exist
    projection_for(setup.service, BBTConfig(**{**TINY, "p0": "tokens", "prompt_length": fits}), seed=1)
    with pytest.raises(ValueError, match="use p0='zeros'"):
        projection_for(setup.service, BBTConfig(**{**TINY, "p0": "tokens", "prompt_length": fits + 1}), seed=1)


@pytest.mark.parametrize("bad,match", [({"loss": "mse"}, "unknown loss"), ({"sampler": "laplace"}, "unknown sampler"),
                                       ({"popsize": 1}, "population of at least 2"), ({"budget": 0}, "budget"),
                                       ({"optimizer": "sgd"}, "unknown optimizer"), ({"sigma0": 0}, "sigma0"),
                                       ({"p0": "ones"}, "unknown p0"), ({"bound": -1.0}, "bound"),
                                       ({"checkpoint_every": -4}, "checkpoint_every")])
def test_bad_configs_are_refused(setup, bad, match):
    with pytest.raises(ValueError, match=match):
        run_bbt(setup, BBTConfig(**{**TINY, **bad}), progress=False)


def test_an_unknown_search_is_refused(setup):
    with pytest.raises(ValueError, match="unknown search"):
        run_bbtv2(setup, BBTv2Config(**{**TINY, "search": "greedy"}), progress=False)


def test_two_point_adaptation_refuses_a_population_below_3_and_csa_takes_2(setup):
    """TPA spends two candidates of each population on its test; CSA (the default) runs with 2."""
    with pytest.raises(ValueError, match="at least 3"):
        run_bbtv2(setup, BBTv2Config(**{**TINY, "search": "joint", "popsize": 2, "adapt_sigma": "tpa"}),
                  progress=False)
    result = run_bbtv2(setup, BBTv2Config(**{**TINY, "search": "joint", "popsize": 2}), progress=False)
    assert result["calls"] > 0 and method_label(result) == "deep prompt, joint search"


def test_config_sizes_come_from_the_profile_and_bbtv2_takes_its_own_budget():
    from bbt_mini.core.profiles import PROFILES

    p = PROFILES["small"].replace(bbtv2_budget=70)
    bbt, v2 = BBTConfig.from_profile(p), BBTv2Config.from_profile(p, popsize=5)
    assert (bbt.prompt_length, bbt.intrinsic_dim, bbt.popsize, bbt.budget, bbt.eval_every, bbt.sampler) == \
        (p.prompt_length, p.intrinsic_dim, p.popsize, p.budget, p.eval_every, "uniform")
    assert (v2.budget, v2.sampler, v2.popsize) == (70, "normal", 5)


def test_bbtv2_draws_a_random_tokens_p0_from_the_runs_seed(setup):
    """BBTv2 with p0="random-tokens" runs (it used to fail: p0_for was called without the seed), and its p0 is
    the seed's draw, as BBT's is."""
    config = BBTv2Config(**{**TINY, "p0": "random-tokens", "sampler": "uniform"})
    r = run_bbtv2(setup, config, progress=False)
    assert r["calls"] == TINY["budget"]
    p0 = {seed: deep_projections(setup.service, config, seed, None)[1] for seed in (1, 2)}
    np.testing.assert_array_equal(p0[1], build_p0("random-tokens", setup.service, TINY["prompt_length"], 1))
    assert not np.array_equal(p0[1], p0[2])
