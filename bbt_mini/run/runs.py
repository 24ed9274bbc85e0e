"""One run of one method: what the command line, the grid and the chapters call.

:func:`run` prepares what a :class:`~bbt_mini.run.spec.RunSpec` names (task, model, seed, sizes) and runs its
method (:data:`bbt_mini.methods.registry.METHODS`), returning its JSON-ready result.

Results are kept in one kind of store, a folder of result files written by :func:`save` and read by
:func:`load`: the run cache (below) and a grid's folder (:mod:`bbt_mini.run.grid`, whose manifest names the
spec of each file). :func:`cached_run` is :func:`run` with the run cache: results are kept under
``$BBT_MINI_CACHE/runs``, keyed by the spec, the machine (device, number format, library versions) and
a hash of the package's code (:func:`bbt_mini.core.source.code_hash`: docstrings and comments do not count),
so an identical run later (another chapter, a rebuilt book) is read back instead of recomputed, and a
changed setting or changed code never reuses an old result. Set ``BBT_RECOMPUTE=1`` to ignore the cache.
:func:`cached_runs` does a list of runs one after another with one progress bar for all of them (the
grid on Ray is the way to run many at once).

:func:`pretrained_p0` is a cached prompt-tuning run whose prompt becomes BBT's ``p0``.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..core import settings
from ..core.profiles import Profile, get_profile
from ..core.results import to_json, versions
from ..core.settings import cache_dir, default_device, default_dtype, dtype_name
from ..core.source import code_hash
from ..methods.experiment import Setup
from ..methods.registry import METHODS
from .prepare import prepare
from .spec import RunSpec


def run(spec: RunSpec, checkpoint=None, resume: bool = False, progress: bool = True) -> dict:
    """Run ``spec`` once and return its result. ``checkpoint`` (tuners): a file the run saves its state to at
    every dev check; with ``resume``, the run continues from it if it exists (see
    :mod:`bbt_mini.methods.tuning`). A remote service's key is read from ``$BBT_API_KEY``."""
    return run_with_setup(spec, checkpoint, resume, progress)[0]


def run_with_setup(spec: RunSpec, checkpoint=None, resume: bool = False, progress: bool = True) -> tuple:
    """:func:`run`, and the :class:`~bbt_mini.methods.experiment.Setup` it ran on: ``(result, setup)`` (what
    saving the tuned prompt needs: the service that regenerates ``A``, the template, the label words)."""
    row = METHODS[spec.method]
    check_checkpoint(spec, checkpoint)
    setup = setup_for(spec)
    if row.tunes:
        return row.runner(setup, spec.config, checkpoint=checkpoint, resume=resume, progress=progress,
                          test_at=spec.test_at), setup
    return row.runner(setup, spec.config, progress=progress), setup


def setup_for(spec: RunSpec) -> Setup:
    """The model, the service and the encoded examples ``spec`` names (:func:`bbt_mini.run.prepare.prepare`)."""
    return prepare(spec.task, spec.model, spec.seed, spec.profile, variant=spec.variant, placement=spec.placement,
                   k=spec.k, test_size=spec.test_size, device=spec.device, dtype=spec.dtype, service=spec.service)


def check_checkpoint(spec: RunSpec, checkpoint) -> None:
    """Refuse a checkpoint for a method that does not tune (it has no state to save)."""
    if checkpoint and not spec.tunes:
        options = list(METHODS[spec.method].options)
        raise ValueError(f"{spec.method} does not use ['checkpoint']; its options: {options}")


def save(result: dict, path: Path) -> None:
    """Store ``result`` at ``path`` as JSON, atomically (a cut-off write never leaves half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    to_json(result, tmp)
    os.replace(tmp, path)


def load(path: Path) -> dict:
    """A result stored by :func:`save`."""
    return json.loads(path.read_text())


def cache_key(spec: RunSpec) -> str:
    """A hash of the spec, the machine it runs on (device, number format, library versions) and the code."""
    device = default_device(spec.device)
    machine = {"device": str(device), "dtype": dtype_name(default_dtype(device, spec.dtype)),
               "versions": versions()}  # resolved: $BBT_DTYPE or another GPU gives another key
    text = json.dumps({**spec.as_dict(), **machine, "code": code_hash()}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def cache_path(spec: RunSpec) -> Path:
    """Where :func:`cached` keeps this run's result: a file named by :func:`cache_key`."""
    if not isinstance(spec.task, str):
        raise ValueError("the run cache takes a registered task name; call run() for other tasks")
    return cache_dir() / "runs" / f"{spec.task}-{spec.method}-s{spec.seed}-{cache_key(spec)}.json"


def cached(spec: RunSpec, progress: bool = True) -> dict:
    """:func:`run`, or its stored result if this exact run was done before (see the module doc).

    The result says where it came from: ``result["cached"]`` is True when it was read back.
    Stored results have no ``_prompt`` (the tuned prompt itself); call :func:`run` if you need it.
    """
    path = cache_path(spec)
    if path.exists() and not settings.recompute():
        return {**load(path), "cached": True}
    result = run(spec, progress=progress)
    save(result, path)
    result["cached"] = False
    return result


def cached_run(method: str, task="rotten_tomatoes", model="smollm2", seed: int = 1,
               profile: str | Profile | None = None, progress: bool = True, **kw) -> dict:
    """:func:`cached` for the run these arguments name (:meth:`RunSpec.make`: the spec's fields by name, the
    method's settings, ``method_kw``: a baseline's options)."""
    return cached(RunSpec.make(method, task, model, seed, profile, **kw), progress)


def pretrained_p0(task: str, model: str, profile, steps: int, seed: int = 1, progress: bool = True,
                  **run_kw) -> tuple[str, dict]:
    """A ``p0`` tuned with gradients on ``task`` (prompt tuning, the white box): ``("file:<path>", result)``.

    The prompt has the profile's length; it and the run's result are kept under
    ``$BBT_MINI_CACHE/p0``, keyed as :func:`cached` keys the run, so the same call later reads them back.
    """
    profile = get_profile(profile)
    spec = RunSpec.make("prompt_tuning", task, model, seed, profile,
                        method_kw={"steps": steps, "prompt_length": profile.prompt_length}, **run_kw)
    stem = cache_dir() / "p0" / f"{task}-pt-{cache_key(spec)}"
    npy, meta = stem.with_suffix(".npy"), stem.with_suffix(".json")
    if npy.exists() and meta.exists():
        return f"file:{npy}", {**load(meta), "cached": True}
    result = run(spec, progress=progress)
    npy.parent.mkdir(parents=True, exist_ok=True)
    np.save(npy, np.asarray(result["_prompt"], np.float32))
    save(result, meta)
    result["cached"] = False
    return f"file:{npy}", result


def cached_runs(jobs: list[dict], desc: str = "runs", progress: bool = True) -> list[dict]:
    """:func:`cached_run` for each job (a dict of its arguments), one after another, results in the jobs' order.

    Every job's spec is made (and checked) before the first runs; a progress bar counts the tuning calls
    of finished runs and estimates the time left.
    """
    for job in jobs:
        if "method" not in job:
            raise ValueError(f"a job needs a method: {job}")
    specs = [RunSpec.make(**{k: v for k, v in job.items() if k != "progress"}) for job in jobs]
    calls = [spec.config.budget if spec.tunes else 0 for spec in specs]
    results = []
    with tqdm(total=sum(calls), unit="call", desc=f"{desc} ({len(specs)} runs)", disable=not progress,
              mininterval=2.0) as bar:
        for spec, n in zip(specs, calls):
            results.append(cached(spec, progress=False))
            bar.update(n)
    return results
