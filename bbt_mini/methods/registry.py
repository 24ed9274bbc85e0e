"""The methods by name: one row per method, the one place that says what each is and how it runs.

Every place that offers or dispatches on a method (the command line's choices, :func:`bbt_mini.run.runs.run`,
the grid, the timing plan, the benchmark) reads this table. A row says

* ``runner``: how it runs on a :class:`~bbt_mini.methods.experiment.Setup` with its settings;
* ``tunes``: a black-box tuner (its budget is API calls, it checkpoints, it can be tested at several budgets):
  its settings are its config class's (``config``), made from a profile by :meth:`Method.settings`;
* ``remote``: whether it runs through an OpenAI-compatible server (:mod:`bbt_mini.service.remote`);
* ``options``: the settings it takes; ``sized``: those of them whose default is the profile's value;
* ``deep``: its prompt enters every layer; ``steps``: its budget is gradient steps through the model;
* ``label``: its row in the papers' tables (:data:`bbt_mini.core.paper.METHOD_NAMES`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

from ..core.paper import METHOD_NAMES
from ..core.profiles import Profile, get_profile
from . import baselines, finetune
from .bbt import BBTConfig, run_bbt
from .bbtv2 import BBTv2Config, run_bbtv2


def _manual(setup, options: dict, progress: bool = True) -> dict:
    return baselines.manual_prompt(setup)


def _calibrated(setup, options: dict, progress: bool = True) -> dict:
    return baselines.calibrated_prompt(setup)


def _icl(setup, options: dict, progress: bool = True) -> dict:
    return baselines.in_context(setup, **options)


def _prompt_tuning(setup, options: dict, progress: bool = True) -> dict:
    return baselines.prompt_tuning(setup, progress=progress, **options)


def _feature_mlp(setup, options: dict, progress: bool = True) -> dict:
    return baselines.feature_mlp(setup, **options)


def _feature_bilstm(setup, options: dict, progress: bool = True) -> dict:
    return baselines.feature_bilstm(setup, **options)


def _finetune(name: str) -> Callable:
    """The runner of a method of :mod:`bbt_mini.methods.finetune`: its :data:`~bbt_mini.methods.finetune.SETTINGS`,
    then the options given."""
    def run(setup, options: dict, progress: bool = True) -> dict:
        defaults = {k: v for k, v in finetune.SETTINGS[name].items() if k != "source"}
        return getattr(finetune, name)(setup, progress=progress, **{**defaults, **options})
    return run


@dataclass(frozen=True)
class Method:
    """One method: see the module doc."""

    name: str
    runner: Callable
    tunes: bool = False
    remote: bool = False
    options: tuple = ()
    sized: tuple = ()
    config: type | None = None
    deep: bool = False
    steps: bool = False

    @property
    def label(self) -> str:
        return METHOD_NAMES[self.name]

    def settings(self, profile: Profile, **given):
        """The method's settings at ``profile``'s sizes, then ``given``: a tuner's config, a baseline's options."""
        if self.config is not None:
            return self.config.from_profile(profile, **given)
        return {**{name: getattr(profile, name) for name in self.sized}, **given}


def _fields(config: type) -> tuple:
    return tuple(f.name for f in dataclasses.fields(config))


METHODS = {m.name: m for m in (
    Method("manual", _manual, remote=True),
    Method("calibrated", _calibrated),
    Method("icl", _icl, options=("per_class",)),
    Method("bbt", run_bbt, tunes=True, remote=True, options=_fields(BBTConfig), config=BBTConfig),
    Method("bbtv2", run_bbtv2, tunes=True, options=_fields(BBTv2Config), config=BBTv2Config, deep=True),
    Method("prompt_tuning", _prompt_tuning, options=("prompt_length", "steps", "lr", "eval_every", "init"),
           sized=("prompt_length",), steps=True),
    Method("feature_mlp", _feature_mlp, options=("hidden", "steps", "lr", "weight_decay", "eval_every")),
    Method("feature_bilstm", _feature_bilstm, options=("hidden", "steps", "lr", "weight_decay", "eval_every")),
    Method("model_tuning", _finetune("model_tuning"), options=("steps", "lr", "eval_every"), steps=True),
    Method("bitfit", _finetune("bitfit"), options=("steps", "lr", "eval_every", "terms"), steps=True),
    Method("lora", _finetune("lora"), options=("steps", "lr", "eval_every", "rank", "alpha"), steps=True),
    Method("p_tuning_v2", _finetune("p_tuning_v2"), options=("prompt_length", "steps", "lr", "eval_every"),
           sized=("prompt_length",), steps=True),
    Method("adapter", _finetune("adapter"), options=("steps", "lr", "eval_every", "bottleneck"), steps=True),
)}
TUNERS = tuple(name for name, m in METHODS.items() if m.tunes)


def method(name: str) -> Method:
    """The row of ``name``; refused, naming the methods, if there is none."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {tuple(METHODS)}")
    return METHODS[name]


def config(name: str, profile: str | Profile | None = None, **overrides) -> BBTConfig:
    """A tuner's settings at ``profile``'s sizes, then ``overrides`` (see :meth:`BBTConfig.from_profile`)."""
    if not method(name).tunes:
        raise ValueError(f"profiles size the tuners {sorted(TUNERS)}, not {name!r}")
    return METHODS[name].settings(get_profile(profile), **overrides)
