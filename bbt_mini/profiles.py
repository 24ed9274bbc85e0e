"""Experiment sizes, the device and the number format: the one place that picks them.

Read this first if you want to know why a chapter ran the numbers it ran. Every
experiment in the book has two sizes:

* ``small``: what a laptop or CI runner with 2 CPU cores finishes in minutes. The
  numbers are real runs of the real method, just fewer calls, fewer shots and
  shorter prompts. Chapters label them as small.
* ``full``: the papers' settings (Sun et al., 2022a, Table 2), meant for a GPU.

Choose with the environment variable ``BBT_PROFILE`` or the ``name`` argument; by
default ``full`` when a CUDA GPU is present, otherwise ``small``.
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
    sigma0: float  # CMA-ES initial step size (later BBT code: 1)
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


PROFILES = {
    # Calibrated on 2 CPU cores with SmolLM2-135M on Rotten Tomatoes (3 seeds each, 300 test
    # sentences; manual prompt 0.667): about 0.5 s per call of 16 sentences. At L=10, d=100,
    # population 10, the best-dev prompt was found within 100 calls on every seed
    # (test 0.707 +- 0.007 with the normal sampler; 0.67 with the uniform one).
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


def get_profile(name: str | None = None) -> Profile:
    """The profile called ``name``, else ``$BBT_PROFILE``, else full on a GPU and small on a CPU."""
    name = name or os.environ.get(PROFILE_ENV) or ("full" if torch.cuda.is_available() else "small")
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


def default_dtype(device: torch.device, dtype: str | torch.dtype | None = None) -> torch.dtype:
    """The number format the black box computes in.

    bfloat16 where the hardware runs it fast (CUDA GPUs with bf16 support, CPUs with
    AVX512-BF16/AMX); float32 elsewhere. Override with the argument or ``$BBT_DTYPE``
    (``float32`` or ``bfloat16``). The book's appendix checks that bf16 does not change
    the outcome.
    """
    dtype = dtype or os.environ.get(DTYPE_ENV)
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype:
        table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
        if dtype not in table:
            raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(table)}")
        return table[dtype]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if device.type == "cpu" and cpu_has_fast_bf16():
        return torch.bfloat16
    return torch.float32
