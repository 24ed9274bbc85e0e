"""RunSpec: one value per run. Its settings resolve in one place, and what identifies a run (the run cache's key,
the grid's cell, the checkpoint's identity) changes exactly when a setting that changes the result changes."""
import dataclasses
import inspect

import pytest
from tiny import tiny_folder

from bbt_mini.core.optimizers import make_optimizer
from bbt_mini.core.profiles import PROFILES
from bbt_mini.core.results import identity
from bbt_mini.run import grid, runs
from bbt_mini.run.spec import RunSpec


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(tiny_folder(tmp_path_factory))


CI_K = PROFILES["ci"].k_shot  # the ci profile's shots, which k=None resolves to


def base(tiny, **changes) -> RunSpec:
    fields = dict(method="bbt", task="rotten_tomatoes", model=tiny, seed=1, profile="ci", k=CI_K, test_size=8,
                  device="cpu", dtype="float32", config={"p0": "zeros"})
    return RunSpec(**{**fields, **changes})


def marks(spec: RunSpec) -> dict:
    """Everything that names a run: the run cache's key, the grid's manifest entry and its name if the setting is
    swept, and the identity a checkpoint must match (from the setup and config the spec makes)."""
    setup = runs.setup_for(spec)
    return {"key": runs.cache_key(spec), "cell": spec.as_dict(),
            "name": grid.cell_name(spec, ("budget", "k", "test_size")),
            "checkpoint": identity(setup, spec.method, spec.seed, spec.config)}


@pytest.mark.parametrize("change", [dict(seed=2), dict(config={"p0": "zeros", "budget": 8}), dict(k=3),
                                    dict(test_size=6), dict(model="bert"), dict(dtype="bfloat16"),
                                    dict(config={"p0": "zeros", "sampler": "normal"})])
def test_a_setting_that_changes_the_result_changes_every_mark_of_the_run(tiny, tmp_path_factory, change):
    if change.get("model") == "bert":  # another model
        change = dict(model=str(tiny_folder(tmp_path_factory, "bert")))
    mine, theirs = marks(base(tiny)), marks(base(tiny, **change))
    assert all(mine[mark] != theirs[mark] for mark in ("key", "cell", "checkpoint"))


def test_a_swept_setting_names_its_grid_cell(tiny):
    names = {grid.cell_name(base(tiny, **c), ("budget", "k", "test_size"))
             for c in (dict(), dict(config={"p0": "zeros", "budget": 8}), dict(k=3), dict(test_size=6))}
    assert len(names) == 4 and f"rotten_tomatoes-bbt-budget_16-k_{CI_K}-test_size_8-s1" in names


@pytest.mark.parametrize("same", [dict(config={"p0": "zeros", "budget": 16}),  # the ci profile's budget, given
                                  dict(dtype="fp32"),  # float32 by another name
                                  dict(k=None)])  # the ci profile's own shots
def test_the_same_run_written_another_way_keeps_every_mark(tiny, same):
    assert marks(base(tiny, **same)) == marks(base(tiny))


def test_budgets_tested_along_the_way_change_the_key_and_the_cell_in_any_order(tiny):
    plain, tested = base(tiny), base(tiny, test_at=(8, 16))
    assert runs.cache_key(tested) != runs.cache_key(plain) and tested.as_dict() != plain.as_dict()
    assert base(tiny, test_at=[16, 8]) == tested  # (the checkpoint records its test_at: tests/test_resume.py)


def test_a_checkpoints_frequency_and_the_progress_bar_are_not_part_of_the_run(tiny):
    every = base(tiny, config={"p0": "zeros", "checkpoint_every": 4})
    assert marks(every)["checkpoint"] == marks(base(tiny))["checkpoint"]
    assert "progress" not in {f.name for f in dataclasses.fields(RunSpec)}


def test_settings_resolve_from_the_profile_then_the_tasks_sizes_then_the_given():
    small = PROFILES["small"]
    plain = RunSpec("bbt", "bbc_news", profile="small")
    assert (plain.config.budget, plain.config.eval_every, plain.k) == (small.budget, small.eval_every, small.k_shot)
    per_task = RunSpec("bbt", "bbc_news", profile="small", per_task=True, config={"budget": 40})
    assert (per_task.config.budget, per_task.config.eval_every, per_task.k, per_task.test_size) == (40, 25, 1, 100)
    v2 = RunSpec("bbtv2", "bbc_news", profile="small", per_task=True)
    assert (v2.config.budget, v2.config.sampler, v2.config.sigma0) == (50, "normal", 1.0)  # its own sampler
    pt = RunSpec("prompt_tuning", "bbc_news", profile="small", per_task=True, config={"steps": 3})
    assert (pt.config, pt.k) == ({"prompt_length": small.prompt_length, "steps": 3}, 1)  # budgets: the tuners'
    papers = RunSpec("bbtv2", "rte", profile="full", per_task=True)
    assert papers.config.loss == "hinge" and RunSpec("bbtv2", "rte", profile="full").config.loss == "ce"
    assert dataclasses.replace(per_task, seed=2).config == per_task.config  # a resolved spec resolves to itself


def test_run_takes_a_spec_and_how_to_run_it():
    assert list(inspect.signature(runs.run).parameters) == ["spec", "checkpoint", "resume", "progress"]


def test_seed_zero_is_refused_by_one_rule_everywhere():
    messages = set()
    for refuse in (lambda: RunSpec("manual", seed=0), lambda: grid.plan(["rotten_tomatoes"], ["manual"], [0], "ci"),
                   lambda: make_optimizer("cma", 4, 1.0, 4, seed=0)):
        with pytest.raises(ValueError, match="seed from the clock") as err:
            refuse()
        messages.add(str(err.value))
    assert len(messages) == 1


def test_the_api_key_is_never_part_of_the_spec(monkeypatch):
    monkeypatch.setenv("BBT_API_KEY", "a-secret")
    spec = RunSpec("bbt", service="http://127.0.0.1:9/v1", profile="ci")
    assert "a-secret" not in repr(spec) + repr(spec.as_dict())
    assert not {"api_key", "key"} & {f.name for f in dataclasses.fields(RunSpec)}
