"""Chapter 3's central experiment, defined once: BBT's gain against the budget.

On Rotten Tomatoes and BBC News, each with a strong and a weak manual prompt
(:data:`bbt_mini.data.tasks.STRENGTHS`), BBT and random search in the same space
(``optimizer="random"``) are run once per seed with ``test_at``, so each run gives the test
accuracy of the prompt a run of every budget shown would return; the manual prompt and
contextual calibration are the references. BBT is BBT's design: the uniform ``A``, passed
explicitly so that no profile's default can turn it into another method.

:func:`jobs` gives the runs as :func:`bbt_mini.run.runs.cached_runs` takes them, and
:func:`reference` the settings of the baselines. The experiment is computed and judged in
chapter 3 only; chapter 6 defines the gain at a budget and links to it.
"""
from __future__ import annotations

from ..core.profiles import Profile, get_profile, task_sizes

TASKS = ("rotten_tomatoes", "bbc_news")
STRENGTHS = ("strong", "weak")
SEARCHES = {"BBT": {}, "random search": {"optimizer": "random"}}
SAMPLER = "uniform"  # BBT's A (Sun et al., 2022a): torch.nn.Linear's default initialisation
PRIMARY = ("bbc_news", "weak")  # the chapter's primary comparison: more seeds
PRIMARY_SEEDS = {"ci": (1, 2), "small": (1, 2, 3, 4, 5), "colab": (1, 2, 3, 4, 5), "full": (1, 2, 3, 4, 5)}

# Sizes beside the profile's, chosen so that the whole grid (28 runs of 50 calls) fits the small
# profile's time on 2 CPU cores: 2 shots per class on Rotten Tomatoes (4 training sentences a call), 1 on BBC News
# (5 articles a call), 100 test sentences each (the verdict rule pairs them, so the test sample's
# noise is counted, not ignored). Colab and full: the profile's and BBC News's own sizes
# (bbt_mini.core.profiles.TASK_SIZES).
SIZES = {"rotten_tomatoes": {"ci": {}, "small": dict(k=2, test_size=100), "colab": {}, "full": {}},
         "bbc_news": {"ci": {}, "small": dict(k=1, test_size=100), "colab": {}, "full": {}}}
BUDGETS = {  # test_at: the budgets shown; the last one is each run's own budget
    "rotten_tomatoes": {"ci": (4, 8, 16), "small": (10, 20, 50), "colab": (200, 500, 1000, 2000),
                        "full": (1000, 2000, 4000, 8000)},
    "bbc_news": {"ci": (4, 8, 16), "small": (10, 20, 50), "colab": (100, 200, 400, 600),
                 "full": (1000, 2000, 4000, 8000)},
}


def _profile(profile: str | Profile | None) -> Profile:
    return profile if isinstance(profile, Profile) else get_profile(profile)


def sizes(task: str, profile: str | Profile | None = None) -> dict:
    """The run settings of ``task`` in this experiment that differ from the profile's."""
    p = _profile(profile)
    if task not in TASKS:
        raise ValueError(f"the gain experiment runs on {TASKS}, not {task!r}")
    out = task_sizes(task, p)
    out.update(SIZES.get(task, {}).get(p.name, {}))
    return out


def budgets(task: str, profile: str | Profile | None = None) -> tuple:
    """The budgets (API calls) at which each run is tested; the last is the runs' own."""
    return BUDGETS[task][_profile(profile).name]


def seeds(task: str, strength: str, profile: str | Profile | None = None) -> tuple:
    """The seeds of one panel: the primary comparison gets more than the profile's."""
    p = _profile(profile)
    return PRIMARY_SEEDS[p.name] if (task, strength) == PRIMARY else tuple(p.seeds)


def reference(task: str, strength: str, profile: str | Profile | None = None) -> dict:
    """Settings of a baseline (``manual``, ``calibrated``) on the same test set as the runs."""
    if strength not in STRENGTHS:
        raise ValueError(f"strength must be one of {STRENGTHS}, got {strength!r}")
    s = sizes(task, profile)
    return {"variant": strength, **{k: s[k] for k in ("k", "test_size") if k in s}}


def jobs(task: str, strength: str, search: str, profile: str | Profile | None = None, model="smollm2",
         seed_list: tuple | None = None) -> list[dict]:
    """The runs of one panel and one search (``"BBT"`` or ``"random search"``), one per seed."""
    if search not in SEARCHES:
        raise ValueError(f"search must be one of {list(SEARCHES)}, got {search!r}")
    p = _profile(profile)
    at = budgets(task, p)
    settings = {**sizes(task, p), "variant": reference(task, strength, p)["variant"], "budget": at[-1]}
    return [dict(method="bbt", task=task, model=model, seed=s, profile=p, sampler=SAMPLER,
                 test_at=at, **SEARCHES[search], **settings)
            for s in (seeds(task, strength, p) if seed_list is None else seed_list)]
