"""One run's settings in one value: :class:`RunSpec`.

A spec says what runs (the method and its settings), on what (the task, the model, the seed, the shots,
the test set, the template variant and where the prompt goes, the budgets tested along the way) and where
(the device, the number format, a remote service's URL). Making one is the one place a run's settings are
resolved, from the lowest layer up:

1. the method's own defaults (:class:`bbt_mini.methods.bbt.BBTConfig`'s fields, a baseline's arguments);
2. the profile's sizes (:mod:`bbt_mini.core.profiles`);
3. with ``per_task=True`` (the grid), the task's sizes in the profile (:data:`~bbt_mini.core.profiles.TASK_SIZES`)
   and the book's per-task recipe (:func:`bbt_mini.core.paper.task_settings`: the loss on sentence pairs);
4. the settings given (``config``, ``k``, ``test_size``).

A spec holds the resolved settings, so two specs are the same run exactly when they are equal:
:func:`bbt_mini.run.runs.run` runs one, and the run cache's key and the grid's cells are made from it (the
result's and the checkpoint's identity from the setup and config it makes). Settings that do not apply to the
method or are out of range are refused when the spec is made, before any model loads. A remote service's API
key is a secret and never part of a spec: the run reads it from ``$BBT_API_KEY``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import InitVar, dataclass, field
from pathlib import PurePath

from ..core.optimizers import check_seed
from ..core.paper import task_settings
from ..core.profiles import Profile, get_profile, task_sizes
from ..core.settings import dtype_name
from ..data.schema import Task
from ..methods.experiment import PLACEMENTS
from ..methods.registry import METHODS, TUNERS, Method, method
from ..methods.tuning import check_test_at

RUN_SIZES = ("k", "test_size")  # sizes every method takes; the method's own settings go in ``config``


@dataclass(frozen=True)
class RunSpec:
    """One run. ``config``: the method's settings (given as a dict of overrides, held resolved: a tuner's
    config, a baseline's options); ``k``: shots per class (None: the profile's); ``test_size``: test examples
    (``"profile"``: the profile's, None: the whole test set); ``test_at``: budgets at which a tuner also tests
    its would-be result; ``service``: a remote black box's URL. See the module doc."""

    method: str
    task: str | Task = "rotten_tomatoes"
    model: str = "smollm2"
    seed: int = 1
    profile: str | Profile | None = None
    config: object = field(default_factory=dict)
    k: int | None = None
    test_size: int | None | str = "profile"
    variant: str | None = None
    placement: str = "prepend"
    test_at: tuple = ()
    device: str | None = None
    dtype: str | None = None
    service: str | None = None
    per_task: InitVar[bool] = False

    def __post_init__(self, per_task: bool) -> None:
        row = method(self.method)
        profile = get_profile(self.profile)
        given = dataclasses.asdict(self.config) if dataclasses.is_dataclass(self.config) else dict(self.config or {})
        test_at = tuple(self.test_at or ())
        _check_applies(row, given, test_at)
        if self.k is not None and self.k < 1:
            raise ValueError(f"k must be at least 1 (examples per class); got {self.k}")
        if self.test_size not in (None, "profile") and self.test_size < 1:
            raise ValueError(f"test_size must be at least 1 (or None for the whole test set); got {self.test_size}")
        check_seed(self.seed)
        if self.service is not None and not row.remote:
            raise ValueError(f"{row.name} cannot run through a remote service: "
                             + ("its deep prompt enters the model's layers, which the API does not expose"
                                if row.deep else "it needs the model itself")
                             + f"; remote: {tuple(m.name for m in METHODS.values() if m.remote)}")
        if self.placement not in PLACEMENTS:
            raise ValueError(f"unknown placement {self.placement!r}; choose one of {PLACEMENTS}")
        layer = _per_task(row, self.task_name, profile) if per_task else {}
        config = row.settings(profile, **{**{k: v for k, v in layer.items() if k not in RUN_SIZES}, **given})
        if row.tunes:
            config.check()
            test_at = check_test_at(test_at, config.budget)
        sizes = {"k": layer.get("k", profile.k_shot) if self.k is None else self.k,
                 "test_size": layer.get("test_size", profile.test_size) if self.test_size == "profile"
                 else self.test_size}
        resolved = {"profile": profile, "config": config, "test_at": test_at, **sizes,
                    "dtype": None if self.dtype is None else dtype_name(self.dtype),  # one spelling: fp32 is float32
                    "model": str(self.model) if isinstance(self.model, PurePath) else self.model}
        for name, value in resolved.items():
            object.__setattr__(self, name, value)

    @property
    def task_name(self) -> str:
        return self.task if isinstance(self.task, str) else self.task.name

    @property
    def tunes(self) -> bool:
        return METHODS[self.method].tunes

    def setting(self, name: str):
        """One resolved setting by name: ``k``, ``test_size`` or one of the method's."""
        if name in RUN_SIZES:
            return getattr(self, name)
        return self.config[name] if isinstance(self.config, dict) else getattr(self.config, name)

    def as_dict(self) -> dict:
        """The spec as JSON-ready data (the profile by name, the task by its name)."""
        config = self.config if isinstance(self.config, dict) else dataclasses.asdict(self.config)
        return {"method": self.method, "task": self.task_name, "model": self.model, "seed": self.seed,
                "profile": self.profile.name, "config": dict(config), "k": self.k, "test_size": self.test_size,
                "variant": self.variant, "placement": self.placement, "test_at": list(self.test_at),
                "device": self.device, "dtype": self.dtype, "service": self.service}

    @classmethod
    def make(cls, method: str, task: str | Task = "rotten_tomatoes", model: str = "smollm2", seed: int = 1,
             profile: str | Profile | None = None, method_kw: dict | None = None, **kw) -> "RunSpec":
        """A spec from keyword arguments as the chapters write a run: the spec's fields by name, every other
        keyword (and ``method_kw``, a baseline's options) a setting of the method."""
        names = {f.name for f in dataclasses.fields(cls)} | {"per_task"}
        settings = {k: v for k, v in kw.items() if k not in names}
        twice = sorted(set(settings) & set(method_kw or {}))
        if twice:
            raise ValueError(f"{twice} given both as settings and in method_kw")
        return cls(method, task, model, seed, profile, config={**settings, **(method_kw or {})},
                   **{k: v for k, v in kw.items() if k in names})


def _check_applies(row: Method, given: dict, test_at: tuple) -> None:
    """Refuse settings that no method takes, or that ``row`` does not take, and values below 1."""
    if test_at and not row.tunes:
        raise ValueError(f"test_at (test accuracy at several budgets) is for the tuners {TUNERS}, not {row.name}")
    known = {name for m in METHODS.values() for name in m.options}
    unknown = sorted(set(given) - known)
    if unknown:
        raise ValueError(f"unknown settings {unknown}; the methods take {sorted(known)}")
    if not row.tunes:
        for name, value in given.items():
            if isinstance(value, int) and value < 1:
                raise ValueError(f"{name} must be at least 1; got {value}")
    unused = sorted(set(given) - set(row.options))
    if unused:
        raise ValueError(f"{row.name} does not use {unused}; its options: {list(row.options)}")


def _per_task(row: Method, task: str, profile: Profile) -> dict:
    """The task's sizes in ``profile`` and the book's per-task recipe for the method: every method takes the shots
    and the test size, a tuner the rest (budgets in API calls, the loss)."""
    layer = {**task_sizes(task, profile), **task_settings(row.name, task)}
    return {k: v for k, v in layer.items() if k in RUN_SIZES or row.tunes}
