"""Experiment sizes, the device and the number format: the one place that picks them.

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

How long a chapter takes in each profile is measured, not promised here: the README's
table "Measured chapter times" is the one place (each chapter also prints its own
estimate on the running device).

Choose with the environment variable ``BBT_PROFILE`` or the ``name`` argument; by
default ``colab`` when a CUDA GPU is present, otherwise ``small``. Settings that differ
between chapters' experiments are chosen with :meth:`Profile.pick`, so each chapter
states its sizes in one line.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import torch

PROFILE_ENV = "BBT_PROFILE"
DEVICE_ENV = "BBT_DEVICE"
DTYPE_ENV = "BBT_DTYPE"


@dataclass(frozen=True)
class Profile:
    """The sizes of one experiment profile. Each field says why it has its value."""

    name: str
    prompt_length: int  # L: soft-prompt tokens (paper: 50)
    intrinsic_dim: int  # d: size of z (paper: 500)
    popsize: int  # CMA-ES population = API calls per generation (paper: 20)
    budget: int  # API calls for one tuning run (paper: 8,000)
    sigma0: float  # CMA-ES initial step size (bbt.py from commit 3e922bc on: 1; ICML-era code: 0.5)
    k_shot: int  # training examples per class (paper: 16); dev gets as many again
    eval_every: int  # API calls between dev evaluations (paper: 100)
    test_size: int | None  # test examples (None: the whole test set)
    seeds: tuple[int, ...]  # seeds a chapter averages over (paper: 3); pycma reads 0 as "clock"
    bbtv2_budget: int  # API calls for one BBTv2 run (paper: 8,000, 7,680 used)
    sampler: str  # BBT's A: "uniform" (the BBT paper) or "normal" (BBTv2's, much faster at small budgets)
    alpha: float  # scale of the normal sampler (1: A z as large as a word embedding)

    def replace(self, **changes) -> "Profile":
        """A copy with some fields changed, e.g. ``profile.replace(budget=100)``."""
        return dataclasses.replace(self, **changes)

    def config(self, method: str, **overrides):
        """BBT's or BBTv2's settings at this profile's sizes, then ``overrides``: the one place a
        method's settings are made from a profile (see :meth:`bbt_mini.methods.bbt.BBTConfig.from_profile`)."""
        from ..methods.bbt import BBTConfig
        from ..methods.bbtv2 import BBTv2Config

        configs = {"bbt": BBTConfig, "bbtv2": BBTv2Config}
        if method not in configs:
            raise ValueError(f"profiles size the tuners {sorted(configs)}, not {method!r}")
        return configs[method].from_profile(self, **overrides)

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


PROFILES = {
    # Proves that each chapter executes (times: the README's measured table): not an experiment.
    "ci": Profile(
        name="ci",
        prompt_length=4,
        intrinsic_dim=16,
        popsize=4,
        budget=16,
        sigma0=1.0,
        k_shot=2,
        eval_every=8,
        test_size=20,
        seeds=(1, 2),
        bbtv2_budget=16,
        sampler="normal",
        alpha=1.0,
    ),
    # Sized for 2 CPU cores with SmolLM2-135M on Rotten Tomatoes (300 test sentences, 16
    # training sentences per call). What BBT gains at these sizes is measured by chapter 3
    # and tests/test_effect.py, not recorded here.
    "small": Profile(
        name="small",
        prompt_length=10,
        intrinsic_dim=100,
        popsize=10,
        budget=100,
        sigma0=1.0,
        k_shot=8,
        eval_every=50,
        test_size=300,
        seeds=(1, 2, 3),
        bbtv2_budget=100,
        sampler="normal",
        alpha=1.0,
    ),
    # A free Colab T4 (times: the README's measured table): the papers' L, d, population and
    # shots; 2,000 calls, a quarter of the papers'.
    "colab": Profile(
        name="colab",
        prompt_length=50,
        intrinsic_dim=500,
        popsize=20,
        budget=2000,
        sigma0=1.0,
        k_shot=16,
        eval_every=100,
        test_size=1000,
        seeds=(1, 2, 3),
        bbtv2_budget=2000,
        sampler="normal",
        alpha=1.0,
    ),
    "full": Profile(
        name="full",
        prompt_length=50,
        intrinsic_dim=500,
        popsize=20,
        budget=8000,
        sigma0=1.0,
        k_shot=16,
        eval_every=100,
        test_size=None,
        seeds=(1, 2, 3),
        bbtv2_budget=8000,
        sampler="uniform",
        alpha=1.0,
    ),
}


# Sizes for tasks whose calls cost more than a short review: BBC News has 5 classes and
# 48-word texts, so the small and colab profiles use fewer shots, calls and test articles
# (the full profile: the papers' settings). One place, so that chapters that share these
# runs (4 and 7) read each other's cached results.
TASK_SIZES = {
    "bbc_news": {"ci": dict(k=1, test_size=20), "small": dict(k=2, budget=50, eval_every=25, test_size=200),
                 "colab": dict(k=4, budget=600, test_size=500), "full": {}},
}


def task_sizes(task: str, profile: Profile) -> dict:
    """Run settings for ``task`` in ``profile`` that differ from the profile's (often none)."""
    return dict(TASK_SIZES.get(task, {}).get(profile.name, {}))


def get_profile(name: str | None = None) -> Profile:
    """The profile called ``name``, else ``$BBT_PROFILE``, else colab on a GPU and small on a CPU."""
    name = name or os.environ.get(PROFILE_ENV) or ("colab" if torch.cuda.is_available() else "small")
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}")
    return PROFILES[name]


def default_device(device: str | torch.device | None = None) -> torch.device:
    """The device experiments run on: the argument, else ``$BBT_DEVICE``, else CUDA if present, else CPU."""
    device = device or os.environ.get(DEVICE_ENV) or ("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def cpu_has_fast_bf16() -> bool:
    """True when this CPU has bfloat16 dot-product instructions (AVX512-BF16 or AMX)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}
NATIVE_BF16_CAPABILITY = (8, 0)  # Ampere (A100, RTX 30xx) and later have bf16 tensor cores


def gpu_dtype(capability: tuple[int, int]) -> torch.dtype:
    """The number format for a CUDA GPU of this compute capability.

    bf16 only where the tensor cores run it (8.0 and later). Earlier GPUs (T4 = 7.5,
    V100 = 7.0) get float16: ``torch.cuda.is_bf16_supported()`` says True on a T4, but
    it has no bf16 tensor cores, so bf16 is emulated there, while float16 runs on its
    tensor cores. float16 has a narrower range; the black box takes the label logits to
    float32 before any softmax or loss, so only the transformer itself runs in float16.
    """
    return torch.bfloat16 if tuple(capability) >= NATIVE_BF16_CAPABILITY else torch.float16


def default_dtype(device: torch.device, dtype: str | torch.dtype | None = None) -> torch.dtype:
    """The number format the black box computes in.

    CUDA: bf16 on GPUs with native bf16, float16 on older ones (:func:`gpu_dtype`). CPU:
    bf16 where the processor has bf16 dot-product instructions (AVX512-BF16/AMX), float32
    elsewhere. Override with the argument or ``$BBT_DTYPE`` (``float32``, ``bfloat16`` or
    ``float16``). The book's appendix ("Does bf16 change the outcome?") measures the test
    accuracies in both formats where this machine picks bf16; on a CPU without bf16 there is
    one format and nothing to compare.
    """
    dtype = dtype or os.environ.get(DTYPE_ENV)
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype:
        if dtype not in DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(DTYPES)}")
        return DTYPES[dtype]
    if device.type == "cuda":
        return gpu_dtype(torch.cuda.get_device_capability(device))
    if device.type == "cpu" and cpu_has_fast_bf16():
        return torch.bfloat16
    return torch.float32
