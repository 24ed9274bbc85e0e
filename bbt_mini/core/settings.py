"""The machine's settings: the device, the number format and every ``BBT_*`` environment variable.

The one module that reads the environment (the README lists the variables in one table):

=================  ==========================================================  =====================
variable           what it sets                                                default
=================  ==========================================================  =====================
``BBT_PROFILE``    the experiment size (:mod:`bbt_mini.core.profiles`)          colab on a GPU, else small
``BBT_DEVICE``     the device experiments run on                                CUDA if present, else CPU
``BBT_DTYPE``      the number format (``float32``, ``bfloat16``, ``float16``)   :func:`default_dtype`
``BBT_MODEL``      the model a chapter runs                                     ``smollm2`` (offline)
``BBT_MINI_CACHE`` converted models, cached runs and prompts                    ``~/.cache/bbt_mini``
``BBT_RECOMPUTE``  ``1``: ignore the run cache                                   off
``BBT_API_KEY``    the remote service's key (client and ``serve``)              none
``BBT_SERVE_VENV`` the vLLM server's own environment                            ``$BBT_MINI_CACHE/serve-venv``
=================  ==========================================================  =====================

Each is read when it is used, never at import time, so a notebook may set one and go on.
"""
from __future__ import annotations

import os
import resource
import sys
from pathlib import Path

import torch

PROFILE_ENV = "BBT_PROFILE"
DEVICE_ENV = "BBT_DEVICE"
DTYPE_ENV = "BBT_DTYPE"
MODEL_ENV = "BBT_MODEL"
CACHE_ENV = "BBT_MINI_CACHE"
RECOMPUTE_ENV = "BBT_RECOMPUTE"
API_KEY_ENV = "BBT_API_KEY"
SERVE_VENV_ENV = "BBT_SERVE_VENV"

DEFAULT_MODEL = "smollm2"
DEFAULT_PORT = 8011  # the remote service's port (``python -m bbt_mini serve``, the chapters' URL)
DEFAULT_MAX_MODEL_LEN = 512  # the most tokens of one sequence the server accepts


def _env(name: str) -> str | None:
    return os.environ.get(name) or None


def profile_name() -> str | None:
    """``$BBT_PROFILE`` (None when unset)."""
    return _env(PROFILE_ENV)


def cuda_available() -> bool:
    return torch.cuda.is_available()


def chosen_model() -> str:
    """The model a chapter runs: ``$BBT_MODEL`` if set, else the offline ``smollm2``.

    Each chapter reads it once, into its ``MODEL`` variable, and passes that to every run: set
    ``BBT_MODEL=roberta-large`` (the papers' backbone; needs the hub, e.g. on Colab), any hub
    name or a local folder, or edit that one line.
    """
    return _env(MODEL_ENV) or DEFAULT_MODEL


def cache_dir() -> Path:
    """Where converted models, cached runs and prompts are kept: ``$BBT_MINI_CACHE`` or ``~/.cache/bbt_mini``."""
    return Path(_env(CACHE_ENV) or Path.home() / ".cache" / "bbt_mini")


def recompute() -> bool:
    """``$BBT_RECOMPUTE=1``: ignore stored results."""
    return os.environ.get(RECOMPUTE_ENV) == "1"


def api_key(key: str | None = None) -> str | None:
    """The remote service's key: the argument, else ``$BBT_API_KEY``, else none."""
    return key or _env(API_KEY_ENV)


def serve_venv() -> Path:
    """Where the server's environment lives: ``$BBT_SERVE_VENV``, else ``$BBT_MINI_CACHE/serve-venv``."""
    return Path(_env(SERVE_VENV_ENV) or cache_dir() / "serve-venv")


# ------------------------------------------------------------------ device and number format


def default_device(device: str | torch.device | None = None) -> torch.device:
    """The device experiments run on: the argument, else ``$BBT_DEVICE``, else CUDA if present, else CPU."""
    device = device or _env(DEVICE_ENV) or ("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def peak_memory(device: torch.device | None = None) -> int:
    """The most memory used so far, in bytes: on a CUDA ``device`` the peak of its tensors
    (since ``torch.cuda.reset_peak_memory_stats``), else this process's peak resident set.

    On Linux that is ``VmHWM`` in ``/proc/self/status``: ``getrusage``'s ``ru_maxrss`` is kept
    across ``exec``, so a process started by a larger one (pytest under a launcher) would report
    its parent's peak. Elsewhere ``ru_maxrss`` (KiB on Linux and BSD, bytes on macOS)."""
    if device is not None and device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


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
DTYPE_NAMES = ("float32", "bfloat16", "float16")  # the canonical names (results, the server's --dtype)
NATIVE_BF16_CAPABILITY = (8, 0)  # Ampere (A100, RTX 30xx) and later have bf16 tensor cores


def dtype_name(dtype: str | torch.dtype) -> str:
    """``torch.bfloat16`` or ``"bf16"`` -> ``"bfloat16"``: the one spelling results and the server use."""
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(DTYPES)}")
        dtype = DTYPES[dtype]
    return str(dtype).removeprefix("torch.")


def gpu_dtype(capability: tuple[int, int]) -> torch.dtype:
    """The number format for a CUDA GPU of this compute capability.

    bf16 only where the tensor cores run it (8.0 and later). Earlier GPUs (T4 = 7.5,
    V100 = 7.0) get float16: ``torch.cuda.is_bf16_supported()`` says True on a T4, but
    it has no bf16 tensor cores, so bf16 is emulated there (and vLLM refuses it), while
    float16 runs on its tensor cores. float16 has a narrower range; the black box takes the
    label logits to float32 before any softmax or loss, so only the transformer itself runs
    in float16.
    """
    return torch.bfloat16 if tuple(capability) >= NATIVE_BF16_CAPABILITY else torch.float16


def default_dtype(device: torch.device, dtype: str | torch.dtype | None = None) -> torch.dtype:
    """The number format the black box computes in.

    CUDA: bf16 on GPUs with native bf16, float16 on older ones (:func:`gpu_dtype`). CPU:
    bf16 where the processor has bf16 dot-product instructions (AVX512-BF16/AMX), float32
    elsewhere. Override with the argument or ``$BBT_DTYPE`` (``float32``, ``bfloat16`` or
    ``float16``). The book's appendix checks that the fast format does not change the outcome.
    """
    dtype = dtype or _env(DTYPE_ENV)
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


def server_dtype() -> str:
    """The vLLM server's number format: the package's rule on a GPU (:func:`gpu_dtype`: float16 on a
    Colab T4, where vLLM refuses bfloat16); float32 on a CPU (a CPU without native bf16 emulates it,
    slower: results/2026-11-26-vllm-cpu-lmaas.md)."""
    if not torch.cuda.is_available():
        return "float32"
    return dtype_name(gpu_dtype(torch.cuda.get_device_capability()))
