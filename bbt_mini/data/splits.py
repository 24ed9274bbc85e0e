"""k-shot splits: k examples per class for train and as many for dev, and a fixed test set.

The papers' k-shot protocol (Sun et al., 2022a): train and dev drawn per seed from the
training pool; the test set the same for every seed.
"""
from __future__ import annotations

import numpy as np

from .schema import Split, Task
from .tasks import get_task

TEST_HOLDOUT_SEED = 20220101  # fixed: the offline test set is the same for every run seed


_LOADED: dict = {}  # task name -> (the loader that produced the data, the data)


def load_data(task: Task) -> dict:
    """The task's data as ``{"train": [...], "test": [...]}``, loaded once per process.

    Offline tasks ship one pool of examples: ``task.test_pool`` of them, drawn with a fixed
    seed and balanced over classes, become the test set, the rest the training pool.
    The data is reused only for the very loader that produced it (the cache holds that
    loader, so its identity cannot pass to another): a task registered again, e.g. from
    an edited CSV, is loaded afresh.
    """
    loader, data = _LOADED.get(task.name, (None, None))
    if loader is not task.loader:
        data = task.loader()
        if "pool" in data:
            pool = data["pool"]
            rng = np.random.default_rng(TEST_HOLDOUT_SEED)
            # at most half of each class is held out, so that training keeps the other half
            test_idx = set(balanced_sample(_by_class(pool, len(task.classes)), task.test_pool // len(task.classes),
                                           rng, most=lambda idx: len(idx) // 2))
            data = {"train": [ex for i, ex in enumerate(pool) if i not in test_idx],
                    "test": [pool[i] for i in sorted(test_idx)]}
        _LOADED[task.name] = (task.loader, data)
    return data


def balanced_sample(by_class: list, per_class: int, rng: np.random.Generator, most=len) -> list[int]:
    """``per_class`` indices of each class (at most ``most(its indices)``), drawn without replacement with
    ``rng``, class after class: the one rule for the held-out test set and the test subsets."""
    out = []
    for idx in by_class:
        out += rng.choice(idx, size=min(per_class, most(idx)), replace=False).tolist()
    return out


def _by_class(examples: list, n_classes: int) -> list:
    idx = [[] for _ in range(n_classes)]
    for i, ex in enumerate(examples):
        if not 0 <= ex["label"] < n_classes:
            raise ValueError(f"example {i} has label {ex['label']}, outside 0..{n_classes - 1}")
        idx[ex["label"]].append(i)
    return idx


def kshot_split(task: Task | str, k: int, seed: int, test_size: int | None = None) -> Split:
    """k examples per class for ``train``, a disjoint k per class for ``dev``, and ``test``.

    Train and dev are drawn from the training pool with ``seed`` (the papers' k-shot
    protocol); the test set is fixed: the whole of it, or, with ``test_size``, a subset
    drawn with a fixed seed (balanced over classes) that is the same for every ``seed``.
    The same arguments always give the same split.
    """
    task = get_task(task) if isinstance(task, str) else task
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    data = load_data(task)
    rng = np.random.default_rng(seed)
    train, dev = [], []
    for c, idx in enumerate(_by_class(data["train"], len(task.classes))):
        if len(idx) < 2 * k:
            raise ValueError(
                f"class {task.classes[c]!r} of {task.name} has {len(idx)} training examples; "
                f"k={k} needs {2 * k} (k for train and k for dev)"
            )
        chosen = rng.choice(idx, size=2 * k, replace=False)
        train += [data["train"][i] for i in chosen[:k]]
        dev += [data["train"][i] for i in chosen[k:]]
    order = rng.permutation(len(train))
    train = [train[i] for i in order]
    test = data["test"]
    if test_size is not None and test_size < len(test):
        keep = balanced_sample(_by_class(test, len(task.classes)), test_size // len(task.classes),
                               np.random.default_rng(TEST_HOLDOUT_SEED + 1))
        test = [test[i] for i in sorted(keep)]
    info = {"task": task.name, "train_pool": len(data["train"]), "test_total": len(data["test"])}
    return Split(train=train, dev=dev, test=list(test), seed=seed, k=k, info=info)
