"""Profiles, the number format per device, the chapters' time estimates and the run cache."""
import dataclasses

import numpy as np
import pytest
import torch

from bbt_mini.core import settings
from bbt_mini.core.profiles import PROFILES, get_profile, task_sizes
from bbt_mini.core.settings import default_dtype, gpu_dtype
from bbt_mini.methods.bbt import BBTConfig
from bbt_mini.methods.bbtv2 import PUBLISHED_RECIPE, RECIPE_PROFILES
from bbt_mini.methods.registry import config
from bbt_mini.run.timing import Plan


@pytest.mark.parametrize("capability, expected", [
    ((7, 0), torch.float16),   # V100: no bf16 tensor cores
    ((7, 5), torch.float16),   # T4: torch calls bf16 "supported", but it is emulated
    ((8, 0), torch.bfloat16),  # A100
    ((8, 9), torch.bfloat16),  # L4
    ((9, 0), torch.bfloat16),  # H100
])
def test_gpu_gets_bf16_only_from_compute_capability_8(monkeypatch, capability, expected):
    monkeypatch.delenv(settings.DTYPE_ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # what a T4 reports
    assert default_dtype(torch.device("cuda")) == expected


@pytest.mark.parametrize("fast_bf16, expected", [(True, torch.bfloat16), (False, torch.float32)])
def test_cpu_gets_bf16_only_with_bf16_instructions(monkeypatch, fast_bf16, expected):
    monkeypatch.delenv(settings.DTYPE_ENV, raising=False)
    monkeypatch.setattr(settings, "cpu_has_fast_bf16", lambda: fast_bf16)
    assert default_dtype(torch.device("cpu")) == expected


def test_dtype_override_by_environment_and_clear_error(monkeypatch):
    monkeypatch.setenv(settings.DTYPE_ENV, "fp16")
    assert default_dtype(torch.device("cpu")) == torch.float16
    monkeypatch.setenv(settings.DTYPE_ENV, "float8")
    with pytest.raises(ValueError, match="unknown dtype 'float8'"):
        default_dtype(torch.device("cpu"))


def test_gpu_dtype_boundary_is_ampere():
    assert gpu_dtype((7, 9)) == torch.float16 and gpu_dtype((8, 0)) == torch.bfloat16


def test_default_profile_is_colab_on_a_gpu_and_small_on_a_cpu(monkeypatch):
    monkeypatch.delenv(settings.PROFILE_ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert get_profile().name == "colab"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert get_profile().name == "small"
    monkeypatch.setenv(settings.PROFILE_ENV, "full")
    assert get_profile().name == "full"
    with pytest.raises(ValueError, match="unknown profile"):
        get_profile("huge")


def test_pick_returns_this_profiles_value_and_demands_every_profile():
    values = {name: i for i, name in enumerate(PROFILES)}
    for name in PROFILES:
        assert PROFILES[name].pick(**values) == values[name]
    with pytest.raises(ValueError, match="missing"):
        PROFILES["small"].pick(small=1, full=2)
    with pytest.raises(ValueError, match="unknown"):
        PROFILES["small"].pick(**values, tiny=3)


def test_colab_profile_keeps_the_papers_prompt_and_subspace_with_fewer_calls():
    colab, full = PROFILES["colab"], PROFILES["full"]
    assert (colab.prompt_length, colab.intrinsic_dim, colab.popsize, colab.k_shot) == \
        (full.prompt_length, full.intrinsic_dim, full.popsize, full.k_shot)
    assert colab.budget < full.budget and len(colab.seeds) >= 3


def test_task_sizes_are_per_profile_and_copied():
    small = task_sizes("bbc_news", PROFILES["small"])
    assert small["k"] == 1 and task_sizes("bbc_news", PROFILES["full"]) == {}
    small["k"] = 99
    assert task_sizes("bbc_news", PROFILES["small"])["k"] == 1
    assert task_sizes("rotten_tomatoes", PROFILES["colab"]) == {}


# The plan's arithmetic at fixed sizes (the small profile's sizes may change; this must not).
SIZED = PROFILES["small"].replace(k_shot=8, test_size=300, budget=100, eval_every=50, popsize=10)
PROBE = {"population_s": 2.0, "one_s": 0.5, "examples": 16, "text_tokens": 30.0, "prompt_length": 10, "popsize": 10}


def test_plan_prices_tuning_dev_checks_and_test_from_the_probe():
    p = SIZED  # popsize 10, budget 100, eval_every 50, k 8, test 300
    plan = Plan(p).add("bbt", n=3)
    # tuning: 100 / 10 requests x 2 s; dev: 100 / 50 checks x 0.5 s; test: 300 / 16 x 0.5 s
    expected = 3 * (10 * 2.0 + 2 * 0.5 + 300 / 16 * 0.5)
    assert plan.seconds(PROBE) == pytest.approx([expected])
    assert plan.calls() == 300


def test_plan_scales_with_examples_and_prompt_length():
    p = SIZED
    base = Plan(p).add("x").seconds(PROBE)[0]
    more_shots = Plan(p).add("x", k=32).seconds(PROBE)[0]
    longer = Plan(p).add("x", prompt_length=50).seconds(PROBE)[0]
    test_part = 300 / 16 * 0.5  # the test set does not grow with the shots
    assert more_shots - test_part == pytest.approx(4 * (base - test_part))  # 4x the examples per call
    assert longer == pytest.approx(base * (50 + 30) / (10 + 30))
    assert Plan(p).add("m", method="manual").seconds(PROBE)[0] == pytest.approx(300 / 16 * 0.5)
    with pytest.raises(ValueError):
        Plan(p).add("bad", n=-1)
    for zero in ({"k": 0}, {"eval_every": 0}):  # a zero is refused, not read as "the profile's"
        with pytest.raises(ValueError, match="at least 1"):
            Plan(p).add("zero", **zero)


def test_plan_report_names_device_profile_and_every_item(monkeypatch):
    plan = Plan(PROFILES["small"]).add("BBT seeds", n=3).add("prompt tuning", method="prompt_tuning", budget=20)
    monkeypatch.setattr(Plan, "probe", lambda self: PROBE)
    text = plan.report()
    assert "small profile" in text and "BBT seeds" in text and "prompt tuning" in text and "20 steps" in text
    assert "0.2000 s per call" in text


def test_cached_runs_give_each_jobs_result_in_order_and_read_them_back(tmp_path, monkeypatch):
    """One after another, in the jobs' order; the same jobs again are read from the run cache."""
    from bbt_mini.lm.tiny import tiny_random_masked_lm
    from bbt_mini.run.runs import cached_runs

    monkeypatch.setenv("BBT_MINI_CACHE", str(tmp_path))
    monkeypatch.delenv("BBT_RECOMPUTE", raising=False)
    model = str(tiny_random_masked_lm(tmp_path / "tiny"))
    jobs = [dict(method="bbt", task="rotten_tomatoes", model=model, seed=s, profile="ci", budget=8, k=1, test_size=4,
                 p0="zeros", device="cpu", dtype="float32") for s in (1, 2)]
    first = cached_runs(jobs, progress=False)
    again = cached_runs(jobs, progress=False)
    assert [r["seed"] for r in first] == [1, 2] and [r["cached"] for r in first + again] == [False] * 2 + [True] * 2
    for a, b in zip(first, again):
        assert a["curve"] == b["curve"] and a["test_accuracy"] == b["test_accuracy"]
    assert [e["train_loss"] for e in first[0]["curve"]] != [e["train_loss"] for e in first[1]["curve"]]


def test_cached_runs_rejects_bad_jobs_before_any_runs():
    from bbt_mini.run.runs import cached_runs

    with pytest.raises(ValueError, match="needs a method"):
        cached_runs([dict(task="rotten_tomatoes")])
    with pytest.raises(ValueError, match="manual does not use"):
        cached_runs([dict(method="bbt", model="no-such-model"), dict(method="manual", budget=8)])


def test_device_comes_from_the_argument_then_bbt_device(monkeypatch):
    monkeypatch.setenv(settings.DEVICE_ENV, "meta")
    assert settings.default_device() == torch.device("meta")
    assert settings.default_device("cpu") == torch.device("cpu")
    monkeypatch.delenv(settings.DEVICE_ENV)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert settings.default_device() == torch.device("cpu")


@pytest.fixture()
def counted_runs(tmp_path, monkeypatch):
    """cached_run with run() replaced by a counter: which calls compute, which read the cache."""
    import bbt_mini.run.runs as runs

    monkeypatch.setenv("BBT_MINI_CACHE", str(tmp_path))
    monkeypatch.delenv("BBT_RECOMPUTE", raising=False)
    monkeypatch.delenv(settings.DTYPE_ENV, raising=False)
    monkeypatch.delenv(settings.DEVICE_ENV, raising=False)
    computed = []

    def fake_run(spec, checkpoint=None, resume=False, progress=True):
        computed.append(spec)
        return {"method": spec.method, "task": spec.task, "seed": spec.seed,
                "test_accuracy": 0.5 + len(computed) / 100, "_prompt": np.zeros(2)}

    monkeypatch.setattr(runs, "run", fake_run)
    return computed


def test_cached_run_reads_back_an_identical_run(counted_runs, tmp_path):
    from bbt_mini.run.runs import cached_run

    first = cached_run("bbt", "rotten_tomatoes", seed=1, profile="ci", budget=8, device="cpu")
    again = cached_run("bbt", "rotten_tomatoes", seed=1, profile="ci", budget=8, device="cpu", progress=False)
    assert (first["cached"], again["cached"]) == (False, True) and len(counted_runs) == 1
    assert again["test_accuracy"] == first["test_accuracy"] and "_prompt" not in again
    assert len(list((tmp_path / "runs").glob("rotten_tomatoes-bbt-s1-*.json"))) == 1  # under $BBT_MINI_CACHE
    other = cached_run("bbt", "rotten_tomatoes", seed=1, profile="ci", budget=9, device="cpu")
    assert other["cached"] is False and len(counted_runs) == 2


def test_cached_run_key_changes_with_the_resolved_dtype(counted_runs, monkeypatch):
    from bbt_mini.run.runs import cached_run

    monkeypatch.setenv(settings.DTYPE_ENV, "bfloat16")
    cached_run("bbt", "rotten_tomatoes", seed=1, profile="ci", device="cpu")
    monkeypatch.setenv(settings.DTYPE_ENV, "float32")  # as the appendix suggests: must not read the bf16 result
    r = cached_run("bbt", "rotten_tomatoes", seed=1, profile="ci", device="cpu")
    assert r["cached"] is False and len(counted_runs) == 2
    monkeypatch.setenv(settings.DTYPE_ENV, "bf16")  # the same format by another name: the same run
    assert cached_run("bbt", "rotten_tomatoes", seed=1, profile="ci", device="cpu")["cached"] is True


def test_cached_run_key_changes_with_library_versions(counted_runs, monkeypatch):
    import bbt_mini.run.runs as runs

    runs.cached_run("bbt", "rotten_tomatoes", seed=1, profile="ci", device="cpu")
    monkeypatch.setattr(runs, "versions", lambda: {"torch": "99.0"})
    assert runs.cached_run("bbt", "rotten_tomatoes", seed=1, profile="ci", device="cpu")["cached"] is False


def test_bbt_recompute_ignores_the_cache(counted_runs, monkeypatch):
    from bbt_mini.run.runs import cached_run

    cached_run("manual", "rotten_tomatoes", seed=1, profile="ci", device="cpu")
    monkeypatch.setenv("BBT_RECOMPUTE", "1")
    assert cached_run("manual", "rotten_tomatoes", seed=1, profile="ci", device="cpu")["cached"] is False
    assert len(counted_runs) == 2


def test_the_registry_makes_each_tuners_config_and_bbtv2_gets_its_own_budget():
    p = PROFILES["small"].replace(bbtv2_budget=70, budget=40)
    bbt, v2 = config("bbt", p), config("bbtv2", p, popsize=5)
    assert (bbt.budget, bbt.sampler, bbt.prompt_length, bbt.intrinsic_dim) == (40, "uniform", 10, 100)
    assert (v2.budget, v2.sampler, v2.popsize) == (70, "normal", 5) and type(v2).__name__ == "BBTv2Config"
    with pytest.raises(ValueError, match="not 'manual'"):
        config("manual", p)
    assert Plan(p).add("v2", method="bbtv2").calls() == 70


def test_chosen_model_reads_the_environment_else_the_offline_default(monkeypatch):
    from bbt_mini.core.settings import chosen_model

    monkeypatch.delenv("BBT_MODEL", raising=False)
    assert chosen_model() == "smollm2"
    monkeypatch.setenv("BBT_MODEL", "roberta-large")
    assert chosen_model() == "roberta-large"


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_bbt_means_bbts_uniform_A_in_every_profile(name):
    """Issue 17: BBT's sampler is its paper's (nn.Linear's default init) in every profile; BBTv2 keeps its normal."""
    assert config("bbt", name).sampler == "uniform"
    assert config("bbtv2", name).sampler == "normal"


def test_the_papers_settings_have_one_copy():
    """BBTConfig's defaults are the full profile's sizes; BBT's step size, scale and sampler are its own, the same
    in every profile. BBTv2 runs its authors' README recipe (sigma0 = alpha = 0.2) in the profiles at the papers'
    sizes and deepbbt.py's defaults (1, 1) below them; a setting given still wins."""
    full = PROFILES["full"]
    assert config("bbt", full) == BBTConfig()
    papers_search = (full.prompt_length, full.intrinsic_dim, full.popsize)
    assert set(RECIPE_PROFILES) == {n for n, p in PROFILES.items()
                                    if (p.prompt_length, p.intrinsic_dim, p.popsize) == papers_search}
    assert PUBLISHED_RECIPE == {"sigma0": 0.2, "alpha": 0.2}  # the README's deepbbt.py example
    for name, p in PROFILES.items():
        bbt, v2 = config("bbt", p), config("bbtv2", p)
        assert (bbt.sigma0, bbt.alpha, bbt.sampler) == (1.0, 1.0, "uniform"), name
        assert (v2.sigma0, v2.alpha) == ((0.2, 0.2) if name in RECIPE_PROFILES else (1.0, 1.0)), name
        assert v2.sampler == "normal" and bbt.adapt_sigma == v2.adapt_sigma == "csa"
        assert not {"sigma0", "alpha", "sampler", "adapt_sigma"} & {f.name for f in dataclasses.fields(p)}
    assert config("bbtv2", "full", alpha=1.0).alpha == 1.0


def test_the_server_and_the_package_share_one_dtype_rule_on_a_t4(monkeypatch, tmp_path):
    """A T4 (7.5): torch calls bf16 "supported", vLLM refuses it there; server and package both choose float16."""
    from pathlib import Path

    from bbt_mini.core.settings import dtype_name
    from bbt_mini.run import server

    monkeypatch.delenv(settings.DTYPE_ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **kw: True)  # what torch answers on a T4
    (tmp_path / "config.json").write_text("{}")
    for capability, expected in (((7, 5), "float16"), ((8, 0), "bfloat16")):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None, c=capability: c)
        cmd = server.command(Path("python"), str(tmp_path))
        assert cmd[cmd.index("--dtype") + 1] == expected == dtype_name(default_dtype(torch.device("cuda")))


def test_the_run_cache_key_is_the_code_hash_so_a_comment_keeps_it_and_code_does_not(counted_runs, monkeypatch):
    """An edit to a module's code (in any layer's folder) gives new keys; a comment or docstring does not."""
    import bbt_mini.run.runs as runs

    runs.cached_run("manual", "rotten_tomatoes", seed=1, profile="ci", device="cpu")
    monkeypatch.setattr(runs, "code_hash", lambda: "another code")
    assert runs.cached_run("manual", "rotten_tomatoes", seed=1, profile="ci", device="cpu")["cached"] is False
    assert len(counted_runs) == 2


def test_search_sizes_are_whole_bbtv2_rounds_where_a_profile_affords_them():
    from bbt_mini.core.profiles import PROFILES, search_sizes

    small = search_sizes(PROFILES["small"], 30)
    assert small == dict(k=2, test_size=200, popsize=5, budget=150, eval_every=50)
    for name in ("colab", "full"):
        p = PROFILES[name]
        s = search_sizes(p, 24)
        assert s["budget"] % (s["popsize"] * 24) == 0 and s["budget"] <= max(p.bbtv2_budget, s["popsize"] * 24)
        assert "k" not in s  # the profile's shots
    assert search_sizes(PROFILES["ci"], 30)["budget"] == 12  # a part of one round: four generations of 3
