"""The black-box tuners by name: their configs at a profile's sizes, and how to run each.

The one list of the tuners (``bbt``, ``bbtv2``): the command line, the run cache, the
timing plan and the benchmark read it from here. A profile is plain data
(:mod:`bbt_mini.core.profiles`); :func:`config` makes a tuner's settings from it.
"""
from __future__ import annotations

from ..core.profiles import Profile, get_profile
from .bbt import BBTConfig, run_bbt
from .bbtv2 import BBTv2Config, run_bbtv2

CONFIGS = {"bbt": BBTConfig, "bbtv2": BBTv2Config}
RUNNERS = {"bbt": run_bbt, "bbtv2": run_bbtv2}
TUNERS = tuple(CONFIGS)  # the black-box methods: settings from their configs, checkpoints, budgets


def config(method: str, profile: str | Profile | None = None, **overrides) -> BBTConfig:
    """``method``'s settings at ``profile``'s sizes, then ``overrides``: the one place a tuner's settings are
    made from a profile (see :meth:`bbt_mini.methods.bbt.BBTConfig.from_profile`)."""
    if method not in CONFIGS:
        raise ValueError(f"profiles size the tuners {sorted(CONFIGS)}, not {method!r}")
    return CONFIGS[method].from_profile(get_profile(profile), **overrides)
