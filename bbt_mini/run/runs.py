"""One run of one method: what the command line and the chapters call.

:func:`run` prepares a task, a model and a seed, runs a method (``manual``, ``calibrated``, ``icl``, ``bbt``,
``bbtv2``, ``prompt_tuning``, ``feature_mlp``) and returns its JSON-ready result.

:func:`cached_run` is the same with a memory: results are kept under
``$BBT_MINI_CACHE/runs`` keyed by every argument, the profile's sizes and a hash of the
package's source, so an identical run later (another chapter, a rebuilt book) is read back
instead of recomputed, and a changed setting or changed code never reuses an old result.
Set ``BBT_RECOMPUTE=1`` to ignore the memory.

:func:`pretrained_p0` is a cached prompt-tuning run whose prompt becomes BBT's ``p0``.

:func:`cached_runs` does a list of such runs with one progress bar for all of them, one after
another by default. ``workers`` (or ``$BBT_WORKERS``) > 1 runs them in separate processes
that share the device. Measured on an H100 (results/gpu/workers.json), three processes were
slower than one after another: GPU time is sliced between processes rather than shared, and
each process pays for its own start, model and CUDA context. So it is off by default; it
can pay on a machine with several GPUs or CUDA's multi-process service.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..core import settings
from ..core.profiles import Profile, get_profile
from ..core.results import to_json, versions
from ..core.settings import cache_dir, default_device, default_dtype, dtype_name
from ..methods import baselines
from ..methods.bbt import BBTConfig
from ..methods.registry import RUNNERS, TUNERS
from ..methods.registry import config as tuner_settings
from ..methods.tuning import check_test_at
from .prepare import prepare

METHODS = ("manual", "calibrated", "icl", "bbt", "bbtv2", "prompt_tuning", "feature_mlp")
REMOTE_METHODS = ("manual", "bbt")  # what runs through an OpenAI-compatible server (bbt_mini.service.remote)
CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(BBTConfig))
# The BBT settings a baseline also takes (its own options, steps= or per_class=, go in method_kw).
BASELINE_OPTIONS = {"manual": (), "calibrated": (), "icl": (), "prompt_tuning": ("prompt_length",), "feature_mlp": ()}


def check_options(method: str, config: dict, method_kw: dict, checkpoint=None, k=None,
                  test_size: int | None | str = "profile", test_at=None) -> None:
    """Refuse, before any model loads, settings that are out of range or do not apply to ``method``."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
    if test_at and method not in TUNERS:
        raise ValueError(f"test_at (test accuracy at several budgets) is for the tuners {TUNERS}, not {method}")
    unknown = set(config) - set(CONFIG_FIELDS)
    if unknown:
        raise ValueError(f"unknown settings {sorted(unknown)}; BBT/BBTv2 take {CONFIG_FIELDS}")
    if k is not None and k < 1:
        raise ValueError(f"k must be at least 1 (examples per class); got {k}")
    if test_size not in (None, "profile") and test_size < 1:
        raise ValueError(f"test_size must be at least 1 (or None for the whole test set); got {test_size}")
    for name, value in method_kw.items():
        if isinstance(value, int) and value < 1:
            raise ValueError(f"{name} must be at least 1; got {value}")
    if method in TUNERS:
        if method_kw:
            raise ValueError(f"{method} does not use {sorted(method_kw)}; its settings: {list(CONFIG_FIELDS)}")
        return
    unused = sorted(set(config) - set(BASELINE_OPTIONS[method])) + ["checkpoint"] * bool(checkpoint)
    if unused:
        raise ValueError(f"{method} does not use {unused}; its options: {list(BASELINE_OPTIONS[method])}")


def run(method: str, task="rotten_tomatoes", model="smollm2", seed: int = 1, profile: str | Profile | None = None,
        variant: str | None = None, placement: str = "prepend", k: int | None = None,
        test_size: int | None | str = "profile", checkpoint=None, resume: bool = False, progress: bool = True,
        device=None, dtype=None, method_kw: dict | None = None, service=None, test_at=None,
        api_key: str | None = None, **config) -> dict:
    """Run ``method`` once. ``config`` overrides BBT/BBTv2 settings (``budget=``, ``sampler=``...);
    ``method_kw`` passes options to a baseline (``steps=``, ``per_class=``...). ``test_at``
    (BBT/BBTv2): budgets at which the prompt a run of that budget would return is also tested,
    listed in ``result["test_at"]`` (see :mod:`bbt_mini.methods.tuning`). Settings that
    are out of range or do not apply to the method are refused before the model loads.
    ``service``: a remote black box, its URL or a :class:`bbt_mini.service.remote.RemoteService` (``bbt`` and
    ``manual`` only: the others need the model's layers or gradients); ``api_key``: its key (default
    ``$BBT_API_KEY``)."""
    kw = dict(method_kw or {})
    check_options(method, config, kw, checkpoint, k, test_size, test_at)
    if seed < 1:
        raise ValueError("seed must be 1 or more (pycma reads 0 as 'seed from the clock')")
    if service is not None and method not in REMOTE_METHODS:
        raise ValueError(f"{method} cannot run through a remote service: "
                         + ("BBTv2's deep prompt enters the model's layers, which the API does not expose"
                            if method == "bbtv2" else "it needs the model itself") + f"; remote: {REMOTE_METHODS}")
    profile = get_profile(profile)
    tuner_config = None
    if method in TUNERS:
        tuner_config = tuner_settings(method, profile, **config)
        tuner_config.check()
        test_at = check_test_at(test_at, tuner_config.budget)
    setup = prepare(task, model, seed, profile, variant=variant, placement=placement, k=k, test_size=test_size,
                    device=device, dtype=dtype, service=service, api_key=api_key)
    setup.test_at = test_at or ()
    if method == "manual":
        return baselines.manual_prompt(setup)
    if method == "calibrated":
        return baselines.calibrated_prompt(setup)
    if method == "icl":
        return baselines.in_context(setup, **kw)
    if method == "prompt_tuning":
        kw.setdefault("prompt_length", config.get("prompt_length", profile.prompt_length))
        return baselines.prompt_tuning(setup, progress=progress, **kw)
    if method == "feature_mlp":
        return baselines.feature_mlp(setup, **kw)
    return RUNNERS[method](setup, tuner_config, checkpoint=checkpoint, resume=resume, progress=progress)


PACKAGE = Path(__file__).resolve().parents[1]


@functools.lru_cache(maxsize=1)
def source_hash() -> str:
    """A hash of the package's source files: results computed by other code are not reused."""
    return hash_sources(PACKAGE)


def hash_sources(package: Path) -> str:
    """A hash of every module under ``package`` (in every layer's folder), by path and content."""
    h = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        h.update(path.relative_to(package).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def cache_path(method: str, task="rotten_tomatoes", model="smollm2", seed: int = 1,
               profile: str | Profile | None = None, **kwargs) -> Path:
    """Where :func:`cached_run` keeps this run's result: a file named by a hash of every setting."""
    profile = get_profile(profile)
    if not isinstance(task, str):
        raise ValueError("cached_run takes a registered task name; call run() for other tasks")
    settings = {k: v for k, v in kwargs.items() if k != "progress"}  # a progress bar changes no result
    if settings.get("test_at"):  # the budgets as run() uses them: (100, 50) is (50, 100)
        settings["test_at"] = sorted(settings["test_at"])
    else:  # no budgets: the same run as without the option
        settings.pop("test_at", None)
    device = default_device(kwargs.get("device"))
    machine = {"device": str(device), "dtype": dtype_name(default_dtype(device, kwargs.get("dtype"))),
               "versions": versions()}  # resolved: $BBT_DTYPE or another GPU gives another key
    key = json.dumps({"method": method, "task": task, "model": str(model), "seed": seed,
                      "profile": dataclasses.asdict(profile), "kwargs": settings, "source": source_hash(),
                      **machine}, sort_keys=True, default=str)
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    return cache_dir() / "runs" / f"{task}-{method}-s{seed}-{digest}.json"


def cached_run(method: str, task="rotten_tomatoes", model="smollm2", seed: int = 1,
               profile: str | Profile | None = None, **kwargs) -> dict:
    """:func:`run`, or its stored result if this exact run was done before (see the module doc).

    The result says where it came from: ``result["cached"]`` is True when it was read back.
    Stored results have no ``_prompt`` (the tuned prompt itself); call :func:`run` if you need it.
    """
    profile = get_profile(profile)
    path = cache_path(method, task, model, seed, profile, **kwargs)
    if path.exists() and not settings.recompute():
        result = json.loads(path.read_text())
        result["cached"] = True
        return result
    result = run(method, task, model, seed, profile, **kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    to_json(result, tmp)
    os.replace(tmp, path)
    result["cached"] = False
    return result


def pretrained_p0(task: str, model: str, profile, steps: int, seed: int = 1, progress: bool = True,
                  **run_kw) -> tuple[str, dict]:
    """A ``p0`` tuned with gradients on ``task`` (prompt tuning, the white box): ``("file:<path>", result)``.

    The prompt has the profile's length; it and the run's result are kept under
    ``$BBT_MINI_CACHE/p0``, keyed by the settings and the package's source (like
    :func:`cached_run`), so the same call later reads them back.
    """
    profile = get_profile(profile)
    key = json.dumps({"task": task, "model": str(model), "profile": profile.name, "L": profile.prompt_length,
                      "steps": steps, "seed": seed, "run": run_kw, "source": source_hash()},
                     sort_keys=True, default=str)
    stem = cache_dir() / "p0" / f"{task}-pt-{hashlib.sha256(key.encode()).hexdigest()[:20]}"
    npy, meta = stem.with_suffix(".npy"), stem.with_suffix(".json")
    if npy.exists() and meta.exists():
        result = json.loads(meta.read_text())
        result["cached"] = True
        return f"file:{npy}", result
    result = run("prompt_tuning", task, model, seed, profile, progress=progress,
                 method_kw={"steps": steps, "prompt_length": profile.prompt_length}, **run_kw)
    npy.parent.mkdir(parents=True, exist_ok=True)
    np.save(npy, np.asarray(result["_prompt"], np.float32))
    meta.write_text(json.dumps({k: v for k, v in result.items() if not k.startswith("_")}, default=float))
    result["cached"] = False
    return f"file:{npy}", result


def default_workers() -> int:
    """How many runs go at once: ``$BBT_WORKERS``, else 1 (see the module doc for why)."""
    return settings.workers()


def _job_calls(job: dict) -> int:
    """The tuning calls a job will spend (for the progress bar): its budget, else its profile's."""
    if job.get("method") not in TUNERS:
        return 0
    if "budget" in job:
        return int(job["budget"])
    return tuner_settings(job["method"], job.get("profile")).budget


def _cached_run_job(job: dict) -> dict:
    return cached_run(**{**job, "progress": False})


def cached_runs(jobs: list[dict], workers: int | None = None, desc: str = "runs", progress: bool = True) -> list[dict]:
    """:func:`cached_run` for each job (a dict of its arguments), results in the jobs' order.

    ``workers`` runs go at once in separate processes (default :func:`default_workers`); a
    progress bar counts the tuning calls of finished runs and estimates the time left.
    Results are the same as one after another: each run has its own seed and model copy.
    """
    jobs = [dict(job) for job in jobs]
    for job in jobs:
        if "method" not in job:
            raise ValueError(f"a job needs a method: {job}")
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    total = sum(_job_calls(job) for job in jobs)
    bar = tqdm(total=total, unit="call", desc=f"{desc} ({len(jobs)} runs, {min(workers, len(jobs))} at once)",
               disable=not progress, mininterval=2.0)
    results: list[dict | None] = [None] * len(jobs)
    try:
        if workers == 1 or len(jobs) == 1:
            for i, job in enumerate(jobs):
                results[i] = _cached_run_job(job)
                bar.update(_job_calls(job))
        else:
            # spawn: a forked child would inherit the parent's CUDA context, which CUDA forbids.
            with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=mp.get_context("spawn")) as pool:
                futures = {pool.submit(_cached_run_job, job): i for i, job in enumerate(jobs)}
                for future in as_completed(futures):
                    i = futures[future]
                    results[i] = future.result()
                    bar.update(_job_calls(jobs[i]))
    finally:
        bar.close()
    return results
