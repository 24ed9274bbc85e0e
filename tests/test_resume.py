"""Checkpoints: an interrupted run resumes to the identical result; a checkpoint of another run is refused."""
import dataclasses
import json
import pickle

import numpy as np
import pytest
import torch
from tiny import TINY, tiny_folder, tiny_lm, tiny_setup

from bbt_mini.__main__ import main
from bbt_mini.methods.bbt import BBTConfig, run_bbt
from bbt_mini.methods.bbtv2 import BBTv2Config, run_bbtv2
from bbt_mini.service.blackbox import BlackBox
from bbt_mini.service.base import BudgetExhausted
from bbt_mini.methods.tuning import Run


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return {family: tiny_folder(tmp_path_factory, family) for family in ("roberta", "bert")}


@pytest.fixture(scope="module")
def lm(folders):
    return tiny_lm(folders["roberta"])


def _cut_off(setup, runner, config, ckpt, after_calls, test_at=()):
    """Run until the service refuses call ``after_calls + 1`` (a run killed part-way)."""
    setup.service.budget = setup.service.meter.calls + after_calls
    with pytest.raises(BudgetExhausted):
        runner(setup, config, checkpoint=ckpt, progress=False, test_at=test_at)
    setup.service.budget = None


@pytest.mark.parametrize("runner,config", [(run_bbt, BBTConfig(**{**TINY, "checkpoint_every": 4})),
                                           (run_bbtv2, BBTv2Config(**{**TINY, "budget": 12, "checkpoint_every": 4})),
                                           (run_bbtv2, BBTv2Config(**{**TINY, "budget": 12, "checkpoint_every": 4,
                                                                      "search": "joint"}))])
def test_interrupted_run_resumes_to_the_identical_result(lm, tmp_path, runner, config):
    whole = runner(tiny_setup(lm), config, progress=False)
    setup, ckpt = tiny_setup(lm), tmp_path / "run.ckpt"
    _cut_off(setup, runner, config, ckpt, after_calls=9)
    assert pickle.loads(ckpt.read_bytes())["calls"] < config.budget  # it stopped part-way
    resumed = runner(setup, config, checkpoint=ckpt, resume=True, progress=False)
    assert resumed["curve"] == whole["curve"] and resumed["test_accuracy"] == whole["test_accuracy"]
    assert resumed["calls"] == whole["calls"] and resumed["dev_calls"] == whole["dev_calls"]
    np.testing.assert_array_equal(resumed["_prompt"], whole["_prompt"])


def test_bbtv2_resume_uses_the_saved_fixed_prompts_not_a_recomputation(lm, tmp_path):
    config = BBTv2Config(**{**TINY, "budget": 12, "checkpoint_every": 4})
    whole = run_bbtv2(tiny_setup(lm), config, progress=False)
    setup, ckpt = tiny_setup(lm), tmp_path / "run.ckpt"
    _cut_off(setup, run_bbtv2, config, ckpt, after_calls=9)
    state = pickle.loads(ckpt.read_bytes())
    assert np.abs(state["search"]["fixed"]).max() > 0
    state["search"]["z_best"] = np.full_like(state["search"]["z_best"], 1e3)  # if resume recomputed from z: garbage
    ckpt.write_bytes(pickle.dumps(state))
    resumed = run_bbtv2(setup, config, checkpoint=ckpt, resume=True, progress=False)
    assert resumed["curve"] == whole["curve"]


def _checkpoint(lm, tmp_path):
    ckpt = tmp_path / "run.ckpt"
    run_bbt(tiny_setup(lm), BBTConfig(**{**TINY, "budget": 8, "checkpoint_every": 4}), checkpoint=ckpt,
            progress=False)
    return ckpt


@pytest.mark.parametrize("change,named", [
    ("model", "model:"), ("dtype", "dtype: 'bfloat16' here, 'float32' in the checkpoint"), ("device", "device:"),
    ("k", "k: 3 here, 2 in the checkpoint"), ("test_size", "test_size: 6 here, 8 in the checkpoint"),
    ("placement", "placement:"), ("seed", "seed:"), ("config", "config.intrinsic_dim: 7 here, 6"),
])
def test_checkpoint_of_another_run_is_refused_naming_what_differs(lm, folders, tmp_path, monkeypatch, change, named):
    ckpt = _checkpoint(lm, tmp_path)
    setup, config = tiny_setup(lm), BBTConfig(**{**TINY, "budget": 8})
    if change == "model":
        setup = tiny_setup(tiny_lm(folders["bert"]))
    elif change == "dtype":
        setup = tiny_setup(tiny_lm(folders["roberta"], dtype=torch.bfloat16))
    elif change == "device":
        monkeypatch.setattr(BlackBox, "device", property(lambda self: torch.device("cuda", 0)))
    elif change == "k":
        setup = tiny_setup(lm, k=3)
    elif change == "test_size":
        setup = tiny_setup(lm, test_size=6)
    elif change == "placement":
        setup = dataclasses.replace(setup, placement="between")
    elif change == "seed":
        setup = tiny_setup(lm, seed=2)
    else:
        config = BBTConfig(**{**TINY, "budget": 8, "intrinsic_dim": 7})
    with pytest.raises(ValueError, match="belongs to another run") as err:
        run_bbt(setup, config, checkpoint=ckpt, resume=True, progress=False)
    assert named in str(err.value)
    assert str(err.value).count("here") == 1  # only what differs is named


def test_checkpoint_frequency_is_not_part_of_a_runs_identity(lm, tmp_path):
    ckpt = _checkpoint(lm, tmp_path)
    r = run_bbt(tiny_setup(lm), BBTConfig(**{**TINY, "budget": 8, "checkpoint_every": 8}), checkpoint=ckpt,
                resume=True, progress=False)
    assert r["calls"] == 8


def test_checkpoint_without_an_identity_is_refused(lm, tmp_path):
    ckpt = _checkpoint(lm, tmp_path)
    state = pickle.loads(ckpt.read_bytes())
    del state["identity"]
    ckpt.write_bytes(pickle.dumps(state))
    with pytest.raises(ValueError, match="older bbt_mini"):
        run_bbt(tiny_setup(lm), BBTConfig(**{**TINY, "budget": 8}), checkpoint=ckpt, resume=True, progress=False)


def test_cli_resume_continues_a_killed_run_and_refuses_another_runs_checkpoint(folders, tmp_path, monkeypatch, capsys):
    args = ["run", "--task", "rotten_tomatoes", "--model", str(folders["roberta"]), "--method", "bbt",
            "--profile", "ci", "--budget", "12", "--popsize", "4", "--prompt-length", "2", "--intrinsic-dim", "6",
            "--eval-every", "4", "--p0", "zeros", "--k", "2", "--test-size", "8", "--dtype", "float32",
            "--device", "cpu", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "whole.json")]) == 0
    ckpt = tmp_path / "run.ckpt"
    save = Run.save

    def save_then_die(self, path, state):  # killed right after its first checkpoint
        save(self, path, state)
        raise KeyboardInterrupt

    monkeypatch.setattr(Run, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        main([*args, "--checkpoint", str(ckpt), "--out", str(tmp_path / "cut.json")])
    monkeypatch.setattr(Run, "save", save)
    assert pickle.loads(ckpt.read_bytes())["calls"] == 4 and not (tmp_path / "cut.json").exists()
    assert main([*args, "--checkpoint", str(ckpt), "--resume", "--out", str(tmp_path / "resumed.json")]) == 0
    whole, resumed = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("whole", "resumed"))
    assert resumed["curve"] == whole["curve"] and resumed["test_accuracy"] == whole["test_accuracy"]
    capsys.readouterr()
    args[args.index("--k") + 1] = "3"
    assert main([*args, "--checkpoint", str(ckpt), "--resume"]) == 2
    assert "k: 3 here, 2 in the checkpoint" in capsys.readouterr().err


def test_a_run_tested_at_several_budgets_resumes_to_the_same_numbers(lm, tmp_path):
    config = BBTConfig(**{**TINY, "checkpoint_every": 4})
    whole = run_bbt(tiny_setup(lm), config, progress=False, test_at=(4, 12, 16))
    setup, ckpt = tiny_setup(lm), tmp_path / "run.ckpt"
    _cut_off(setup, run_bbt, config, ckpt, after_calls=9, test_at=(4, 12, 16))
    assert len(pickle.loads(ckpt.read_bytes())["tested"]) == 1  # 4 was tested before the cut, 12 not yet
    resumed = run_bbt(setup, config, checkpoint=ckpt, resume=True, progress=False, test_at=(4, 12, 16))
    def numbers(r):
        return [{k: v for k, v in e.items() if k != "seconds"} for e in r["test_at"]]

    assert numbers(resumed) == numbers(whole) and resumed["curve"] == whole["curve"]


def test_a_checkpoint_tested_at_other_budgets_is_refused(lm, tmp_path):
    ckpt = _checkpoint(lm, tmp_path)  # written without test_at
    with pytest.raises(ValueError, match=r"test_at: \[4\] here, \[\] in the checkpoint"):
        run_bbt(tiny_setup(lm), BBTConfig(**{**TINY, "budget": 8}), checkpoint=ckpt, resume=True, progress=False,
                test_at=(4,))
