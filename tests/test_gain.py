"""Chapter 3's central experiment as data: which runs it makes (the runs themselves: tests/test_effect.py)."""
import pytest

from bbt_mini.data.tasks import get_task
from bbt_mini.run import gain


def test_strong_and_weak_name_each_tasks_templates():
    rt, bbc = get_task("rotten_tomatoes"), get_task("bbc_news")
    assert rt.verbalizer("causal", "strong") == rt.verbalizer("causal")
    assert rt.verbalizer("causal", "weak") == rt.verbalizer("causal", "paper")
    assert bbc.verbalizer("causal", "weak") == bbc.verbalizer("causal")
    assert bbc.verbalizer("causal", "strong") == bbc.verbalizer("causal", "about")
    with pytest.raises(ValueError, match="names no weak template"):
        get_task("imdb").verbalizer("causal", "weak")


@pytest.mark.parametrize("profile", ["ci", "small", "colab", "full"])
def test_every_run_is_bbt_with_the_uniform_A_tested_up_to_its_own_budget(profile):
    for task in gain.TASKS:
        for strength in gain.STRENGTHS:
            bbt, rand = (gain.jobs(task, strength, s, profile) for s in gain.SEARCHES)
            assert [j["seed"] for j in bbt] == [j["seed"] for j in rand] == list(gain.seeds(task, strength, profile))
            for j in bbt + rand:
                assert j["sampler"] == "uniform" and j["variant"] == strength
                budget = j.get("budget") or gain._profile(profile).budget
                assert j["test_at"][-1] == budget
            assert all("optimizer" not in j for j in bbt) and all(j["optimizer"] == "random" for j in rand)
    assert len(gain.seeds(*gain.PRIMARY, "small")) == 5 and len(gain.seeds("rotten_tomatoes", "weak", "small")) == 3


def test_the_references_share_the_runs_test_set():
    job = gain.jobs("bbc_news", "weak", "BBT", "small")[0]
    ref = gain.reference("bbc_news", "weak", "small")
    assert ref["k"] == job["k"] and ref["test_size"] == job["test_size"] and ref["variant"] == job["variant"]
    with pytest.raises(ValueError, match="strength"):
        gain.reference("bbc_news", "medium", "small")

