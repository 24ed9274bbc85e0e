"""Experiment sizes: plain data, the one place that says how big each experiment is.

Read this first if you want to know why a chapter ran the numbers it ran. Every
experiment in the book has four sizes:

* ``ci``: the smallest sizes that still run every step of every chapter (a few calls, a
  few examples): CI executes the chapters in it to prove they run. Its numbers mean
  nothing; chapters say so. A separate test checks BBT's effect in ``small``.
* ``small``: sized for a laptop or CI runner with 2 CPU cores. The numbers are real
  runs of the real method, just fewer calls, fewer shots and shorter prompts. Chapters
  label them as small.
* ``colab``: sized for a free Colab GPU (a T4): the papers' prompt length, intrinsic
  dimension, population and shots, a quarter of their calls. The default on a GPU.
* ``full``: the papers' settings (Sun et al., 2022a, Table 2), for those who choose it.

How long a chapter takes in each profile is measured, not promised here: the table in
``results/chapter-times.md`` is the one place (each chapter also prints its own estimate on
the running device).

Choose with the environment variable ``BBT_PROFILE`` or the ``name`` argument; by
default ``colab`` when a CUDA GPU is present, otherwise ``small``. Settings that differ
between chapters' experiments are chosen with :meth:`Profile.pick`, so each chapter
states its sizes in one line. A method's settings at a profile's sizes are built beside the
methods (:func:`bbt_mini.methods.registry.config`); the device and the number format are
:mod:`bbt_mini.core.settings`'.

A profile holds sizes only: CMA-ES's initial step size, its step-size rule, the sampler of ``A`` and its
scale are a method's own settings (:class:`bbt_mini.methods.bbt.BBTConfig`,
:class:`bbt_mini.methods.bbtv2.BBTv2Config`), the same in every profile except one: BBTv2 runs its authors'
published ``sigma0`` and ``alpha`` in the profiles at the papers' sizes (colab, full), and ``deepbbt.py``'s
defaults below them (:data:`bbt_mini.methods.bbtv2.RECIPE_PROFILES`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from . import settings


@dataclass(frozen=True)
class Profile:
    """The sizes of one experiment profile. Each field says why it has its value."""

    name: str
    prompt_length: int  # L: soft-prompt tokens (paper: 50)
    intrinsic_dim: int  # d: size of z (paper: 500)
    popsize: int  # CMA-ES population = API calls per generation (paper: 20)
    budget: int  # API calls for one tuning run (paper: 8,000)
    k_shot: int  # training examples per class (paper: 16); dev gets as many again
    eval_every: int  # API calls between dev evaluations (paper: 100)
    test_size: int | None  # test examples (None: the whole test set)
    seeds: tuple[int, ...]  # seeds a chapter averages over (paper: 3); pycma reads 0 as "clock"
    bbtv2_budget: int  # API calls for one BBTv2 run (paper: 8,000, 7,680 used)

    def replace(self, **changes) -> "Profile":
        """A copy with some fields changed, e.g. ``profile.replace(budget=100)``."""
        return dataclasses.replace(self, **changes)

    def pick(self, **by_profile):
        """The value for this profile, e.g. ``profile.pick(small=100, colab=2000, full=8000)``.

        Every profile must be named, so that adding a profile cannot silently fall back on
        another one's size.
        """
        missing = sorted(set(PROFILES) - set(by_profile))
        unknown = sorted(set(by_profile) - set(PROFILES))
        if missing or unknown:
            raise ValueError(f"pick() needs one value for each profile {sorted(PROFILES)}; "
                             f"missing {missing}, unknown {unknown}")
        return by_profile[self.name]


# The papers' settings (Sun et al., 2022a, Table 2; 2022b): hours per chapter on a T4. The
# methods' config defaults are read from here (bbt_mini.methods.bbt.BBTConfig).
FULL = Profile(name="full", prompt_length=50, intrinsic_dim=500, popsize=20, budget=8000, k_shot=16, eval_every=100,
               test_size=None, seeds=(1, 2, 3), bbtv2_budget=8000)

PROFILES = {
    # Proves that each chapter executes (times: results/chapter-times.md): not an experiment. One
    # example per class and 10 test sentences: a CPU's time goes into the tokens the model reads.
    "ci": FULL.replace(name="ci", prompt_length=4, intrinsic_dim=16, popsize=4, budget=16, k_shot=1, eval_every=8,
                       test_size=10, seeds=(1, 2), bbtv2_budget=16),
    # Sized for 2 CPU cores with SmolLM2-135M on Rotten Tomatoes so that the search has a training
    # signal: 8 shots per class (16 training sentences per call, 16 dev sentences to pick the best
    # prompt by; at 2 shots the training accuracy sat at 0.50 in every generation and the dev check
    # chose by chance), 200 calls (20 generations) and 200 test sentences, which the verdict rule
    # pairs, so their sampling noise is counted. A BBT run takes about 4.5 minutes here (about 1.2 s a
    # call); chapters run fewer arms rather than smaller runs. What BBT gains at these sizes:
    # results/ (the README's first command over 5 seeds) and chapter 3.
    "small": FULL.replace(name="small", prompt_length=10, intrinsic_dim=100, popsize=10, budget=200, k_shot=8,
                          eval_every=50, test_size=200, bbtv2_budget=300),
    # A free Colab T4 (times: results/chapter-times.md): the papers' L, d, population and
    # shots; 2,000 calls, a quarter of the papers'.
    "colab": FULL.replace(name="colab", budget=2000, test_size=1000, bbtv2_budget=2000),
    "full": FULL,
}


# Sizes for tasks whose calls cost more than a short review: BBC News has 5 classes and
# 48-word texts, so the small and colab profiles use fewer shots, calls and test articles
# (small: 1 article per class, 5 a call, 100 test articles, as chapter 3's grid)
# (the full profile: the papers' settings). One place, so that chapters that share these
# runs (4 and 7) read each other's cached results.
TASK_SIZES = {
    "bbc_news": {"ci": dict(k=1, test_size=10), "small": dict(k=1, budget=50, eval_every=25, test_size=100),
                 "colab": dict(k=4, budget=600, test_size=500), "full": {}},
}


def task_sizes(task: str, profile: Profile) -> dict:
    """Run settings for ``task`` in ``profile`` that differ from the profile's (often none)."""
    return dict(TASK_SIZES.get(task, {}).get(profile.name, {}))


def search_sizes(profile: Profile, layers: int) -> dict:
    """The sizes of chapter 4's comparison of searches on Rotten Tomatoes, which chapter 7's gradient
    baselines share (so they read each other's cached runs): shots and test sentences, and every tuner's
    population, calls and dev checks.

    Every BBTv2 run is whole rounds, as the authors' ``deepbbt.py`` runs it: a round is one generation for
    every one of the model's ``layers``, ``popsize x layers`` calls. ``small`` affords one round of a
    population of 5 (150 calls on SmolLM2's 30 layers) with 2 shots per class, to afford three seeds of
    five tuners; ``colab`` and ``full`` as many rounds of the profile's population as their BBTv2 budget
    holds, at the profile's shots; ``ci`` four generations, a part of one round.
    """
    popsize = profile.pick(ci=3, small=5, colab=profile.popsize, full=profile.popsize)
    rounds = max(1, profile.bbtv2_budget // (popsize * layers))
    calls = profile.pick(ci=4 * popsize, small=popsize * layers, colab=rounds * popsize * layers,
                         full=rounds * popsize * layers)
    shots = profile.pick(ci=dict(k=1, test_size=10), small=dict(k=2, test_size=200), colab={}, full={})
    return dict(shots, popsize=popsize, budget=calls, eval_every=min(calls, profile.eval_every))


def get_profile(name: str | Profile | None = None) -> Profile:
    """The profile called ``name`` (a :class:`Profile` passes through), else ``$BBT_PROFILE``, else colab on a
    GPU and small on a CPU."""
    if isinstance(name, Profile):
        return name
    name = name or settings.profile_name() or ("colab" if settings.cuda_available() else "small")
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}")
    return PROFILES[name]
