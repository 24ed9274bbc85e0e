"""The BBT and BBTv2 loops: exact budgets, determinism, checkpoint and resume, bad input."""
import json

import numpy as np
import pytest

from bbt_mini.bbt import BBTConfig, run_bbt, to_json
from bbt_mini.bbtv2 import BBTv2Config, run_bbtv2
from bbt_mini.blackbox import BudgetExhausted

TINY = dict(prompt_length=2, intrinsic_dim=6, popsize=4, budget=16, eval_every=8, sigma0=1.0)


def test_bbt_spends_exactly_its_budget_and_reports_the_curve(tiny_setup):
    r = run_bbt(tiny_setup, BBTConfig(**{**TINY, "budget": 14}), progress=False)
    assert r["calls"] == 14 and r["curve"][-1]["calls"] == 14
    # dev checks (4 examples) and the test (8) are metered but not charged to the budget
    assert r["meter"]["calls"] == 14 + r["dev_calls"] + 1 and 1 <= r["dev_calls"] <= 2
    assert [e["calls"] for e in r["curve"]] == [4, 8, 12, 14]
    assert 0 <= r["test_accuracy"] <= 1 and "dev_acc" in r["curve"][1]
    data = json.loads(to_json(r))
    for key in ("task", "method", "model", "seed", "profile", "config", "calls", "tokens", "wall_s", "curve",
                "test_accuracy", "versions"):
        assert key in data
    assert "_prompt" not in data and data["versions"]["cma"]


def test_same_seed_same_result_on_cpu(tiny_setup):
    a = run_bbt(tiny_setup, BBTConfig(**TINY), progress=False)
    b = run_bbt(tiny_setup, BBTConfig(**TINY), progress=False)
    assert a["curve"] == b["curve"] and a["test_accuracy"] == b["test_accuracy"]
    np.testing.assert_array_equal(a["_prompt"], b["_prompt"])
    c = run_bbt(tiny_setup, BBTConfig(**TINY), seed=2, progress=False)
    assert c["curve"] != a["curve"]


@pytest.mark.parametrize("runner,config", [(run_bbt, BBTConfig(**TINY)),
                                           (run_bbtv2, BBTv2Config(**{**TINY, "budget": 12}))])
def test_resume_equals_an_uninterrupted_run(tiny_setup, tmp_path, runner, config):
    whole = runner(tiny_setup, config, progress=False)
    ckpt = tmp_path / "run.ckpt"
    config.checkpoint_every = 4
    tiny_setup.service.budget = tiny_setup.service.meter.calls + 9  # cut the run off part-way
    with pytest.raises(BudgetExhausted):
        runner(tiny_setup, config, checkpoint=ckpt, progress=False)
    assert ckpt.exists()
    tiny_setup.service.budget = None
    resumed = runner(tiny_setup, config, checkpoint=ckpt, resume=True, progress=False)
    assert resumed["curve"] == whole["curve"]
    assert resumed["test_accuracy"] == whole["test_accuracy"]
    np.testing.assert_array_equal(resumed["_prompt"], whole["_prompt"])


def test_checkpoint_of_another_run_is_refused(tiny_setup, tmp_path):
    ckpt = tmp_path / "run.ckpt"
    run_bbt(tiny_setup, BBTConfig(**{**TINY, "checkpoint_every": 4}), checkpoint=ckpt, progress=False)
    with pytest.raises(ValueError, match="belongs to another run"):
        run_bbt(tiny_setup, BBTConfig(**{**TINY, "intrinsic_dim": 7}), checkpoint=ckpt, resume=True, progress=False)


def test_bbtv2_spends_exactly_its_budget_layer_by_layer(tiny_setup):
    layers = tiny_setup.service.num_layers
    budget = 2 * layers + 3  # one full round, then a part of the next
    r = run_bbtv2(tiny_setup, BBTv2Config(**{**TINY, "popsize": 2, "budget": budget, "eval_every": 40}),
                  progress=False)
    assert r["calls"] == budget
    assert [e["layer"] for e in r["curve"]] == list(range(layers)) + [0, 1]
    assert len(r["layer_stats"]) == layers


@pytest.mark.parametrize("bad,match", [({"loss": "mse"}, "unknown loss"), ({"sampler": "laplace"}, "unknown sampler"),
                                       ({"popsize": 1}, "population of at least 2"), ({"budget": 0}, "budget"),
                                       ({"optimizer": "sgd"}, "unknown optimizer"), ({"sigma0": 0}, "sigma0")])
def test_bad_configs_are_refused(tiny_setup, bad, match):
    with pytest.raises(ValueError, match=match):
        run_bbt(tiny_setup, BBTConfig(**{**TINY, **bad}), progress=False)
