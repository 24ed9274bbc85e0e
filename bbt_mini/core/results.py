"""What a run returns: one schema for every method, written as JSON.

Every result (BBT, BBTv2 and the baselines) starts with the run's :func:`identity`
(task, method, model, seed, placement, shots, test size, device, number format and
settings), says how it scored on the test set (:func:`test_fields`) and what it cost
(:func:`metering`: tokens, wall time, the service's meter since the run began
(:func:`used_since`), library versions). :func:`result` puts the three together; a baseline
calls ``result(setup, "manual", scores, used_since(service.meter, before), **its_own_fields)``.
The same identity is what a checkpoint must match before a run may continue from it
(:func:`differences`).

Keys that start with ``_`` (the tuned prompt itself) stay in Python; :func:`to_json`
leaves them out.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
from pathlib import Path

from .. import __version__
from .settings import dtype_name

LIBRARIES = ("torch", "transformers", "cma", "numpy")  # the libraries a result's numbers depend on
# Settings that change how often a run saves itself, not what it computes: not part of its identity.
NOT_IDENTITY = ("checkpoint_every",)


def versions() -> dict:
    """The versions of the libraries a result depends on (as installed: nothing is imported to read them)."""
    return {"bbt_mini": __version__, **{name: importlib.metadata.version(name) for name in LIBRARIES}}


def identity(setup, method: str, seed: int | None = None, config=None) -> dict:
    """What makes two runs the same run: a checkpoint must match it, every result records it."""
    service = setup.service
    settings = None if config is None else {k: v for k, v in dataclasses.asdict(config).items()
                                            if k not in NOT_IDENTITY}
    return {"task": setup.task.name, "method": method, "model": service.model_name,
            "seed": setup.seed if seed is None else seed, "placement": setup.placement, "k": setup.split.k,
            "test_size": len(setup.test), "device": str(service.device), "dtype": dtype_name(service.dtype),
            "config": settings}


def differences(mine: dict, theirs: dict) -> list[str]:
    """``"name: here X, there Y"`` for each entry where two identities differ (config entry by entry)."""
    out = []
    for key in sorted(set(mine) | set(theirs)):
        a, b = mine.get(key), theirs.get(key)
        if key == "config" and isinstance(a, dict) and isinstance(b, dict):
            out += [f"config.{line}" for line in differences(a, b)]
        elif a != b:
            out.append(f"{key}: {a!r} here, {b!r} in the checkpoint")
    return out


def test_set_id(examples: list) -> str:
    """A short hash of a test set's examples (texts and labels): two results pair only if theirs agree."""
    text = json.dumps(examples, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def test_fields(setup, scores: dict, labels: bool = True) -> dict:
    """The test score under the task's metric (accuracy, and F1 where the task reports it), and per sentence
    the class answered (``test_answers``), with the test set's hash (``test_set``) and, if ``labels``, its
    labels (``test_labels``): enough to pair two results sentence by sentence (:mod:`bbt_mini.core.stats`)."""
    out = {"test_accuracy": scores["accuracy"]}
    if setup.task.metric == "f1":
        out["test_f1"] = scores["f1"]
    if "answers" in scores:
        out["test_answers"] = [int(a) for a in scores["answers"]]
        out["test_set"] = test_set_id(setup.split.test)
        if labels:
            out["test_labels"] = [int(y) for y in setup.test.labels]
    return out


def used_since(meter, before: dict) -> dict:
    """What the service's meter counted since the snapshot ``before`` (calls, tokens, seconds...)."""
    return {k: v - before[k] for k, v in meter.snapshot().items()}


def metering(used: dict, wall_s: float | None = None) -> dict:
    """What the run cost: tokens, wall time (default: the service's), the meter, and the library versions."""
    return {"tokens": used["tokens"], "wall_s": used["wall_s"] if wall_s is None else wall_s, "meter": used,
            "versions": versions()}


def result(setup, method: str, scores: dict | None, used: dict, *, seed: int | None = None, config=None,
           wall_s: float | None = None, **extra) -> dict:
    """One run's result: its identity, its profile, ``extra`` (method-specific), its test score, its cost.

    ``config`` (a settings dataclass) is recorded in full; ``scores`` is ``None`` for a run not tested.
    """
    out = {**identity(setup, method, seed, config), "profile": setup.profile.name}
    if config is None:
        del out["config"]
    else:
        out["config"] = dataclasses.asdict(config)
    out.update(extra)
    if scores is not None:
        out.update(test_fields(setup, scores))
    out.update(metering(used, wall_s))
    return out


def to_json(result: dict, path: str | Path | None = None) -> str:
    """The result as JSON (keys starting with ``_`` left out); written to ``path`` if given."""
    text = json.dumps({k: v for k, v in result.items() if not k.startswith("_")}, indent=2, default=float)
    if path:
        Path(path).write_text(text)
    return text
