"""BBT: Black-Box Tuning (Sun et al., 2022a).

    z* = argmin_z  loss( f(A z + p0; X_train), Y_train )

BBT's search (:class:`Subspace`): one derivative-free optimiser over ``z`` in ``R^d``; each
candidate becomes the prompt ``A z + p0`` through a fixed random projection. The loop
around it (ask, evaluate, tell, record, dev checks, checkpoints) is shared with BBTv2 and
lives in :mod:`bbt_mini.methods.tuning`; the result's schema in :mod:`bbt_mini.core.results`.

:class:`BBTConfig` is the one place BBT's settings are defined: the command line's flags,
their help and their choices are read from its fields.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.metrics import LOSSES
from ..core.optimizers import OPTIMIZERS, PYCMA, STEP_SIZE_RULES, Optimizer, make_optimizer, restore
from ..core.profiles import FULL, Profile
from ..core.projection import P0_FIRST_TOKEN, SAMPLERS, Projection, build_p0, check_p0, make_A
from ..service.blackbox import BlackBox
from .experiment import Setup
from .tuning import tune

LOSS_NAMES = tuple(sorted(LOSSES))


def setting(default, help: str, choices: tuple | None = None):
    """A config field with its command-line help (and choices): the flag is derived from it."""
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass
class BBTConfig:
    """BBT's settings. Defaults are the papers' (Table 2 and the authors' code): the sizes are read from
    the full profile (:data:`bbt_mini.core.profiles.FULL`), the one copy of them."""

    prompt_length: int = setting(FULL.prompt_length, "L: soft-prompt tokens")
    intrinsic_dim: int = setting(FULL.intrinsic_dim, "d: size of z")
    popsize: int = setting(FULL.popsize, "candidates per generation (= API calls per generation)")
    budget: int = setting(FULL.budget, "API calls spent on the training set")
    sigma0: float = setting(1.0, "CMA-ES initial step size")  # the authors' bbt.py: 1 (their ICML-era code: 0.5)
    bound: float | None = setting(None, "box on z (the ICML-era code: 5); default unbounded")
    loss: str = setting("ce", "training loss: cross-entropy, the authors' hinge (margin 2) or -accuracy", LOSS_NAMES)
    eval_every: int = setting(FULL.eval_every, "API calls between dev checks")
    sampler: str = setting("uniform", "A: uniform (BBT), normal or normal-v1 (BBTv2)", SAMPLERS)
    alpha: float = setting(1.0, "scale of the normal sampler")
    optimizer: str = setting("cma", "the derivative-free optimiser over z", OPTIMIZERS)
    # The papers ran pycma of 2022, which adapted the step size by CSA at every d; pycma 4.5 switches to
    # two-point adaptation (TPA) from d = 300 on, the papers' d = 500 included, unless told the rule.
    adapt_sigma: str = setting("csa", "pycma's step-size rule: csa (cumulative, as the papers ran at every d) or "
                               "tpa (two-point: pycma 4.5's own choice from d = 300)", tuple(STEP_SIZE_RULES))
    p0: str = setting("tokens", f"tokens: embeddings of tokens {P0_FIRST_TOKEN}.. (the papers); zeros; "
                      "random-tokens; words:<text>; file:<prompt.npy>")
    checkpoint_every: int = setting(0, "API calls between checkpoints (0: at every dev check)")

    @classmethod
    def from_profile(cls, profile: Profile, **overrides) -> "BBTConfig":
        """The profile's sizes (the fields both share by name), the papers' choices for the rest, then ``overrides``."""
        names = {f.name for f in dataclasses.fields(profile)}
        base = {f.name: getattr(profile, f.name) for f in dataclasses.fields(cls) if f.name in names}
        return cls(**{**base, **overrides})

    def check(self) -> None:
        """Refuse settings that cannot run, with a message naming the setting."""
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                raise ValueError(f"unknown {f.name} {getattr(self, f.name)!r}; choose one of {choices}")
        for name in ("prompt_length", "intrinsic_dim", "popsize", "budget", "eval_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1; got {getattr(self, name)}")
        check_p0(self.p0)
        if self.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be 0 or more; got {self.checkpoint_every}")
        if self.popsize < 2:
            raise ValueError("CMA-ES needs a population of at least 2")
        if self.sigma0 <= 0:
            raise ValueError(f"sigma0 must be positive; got {self.sigma0}")
        if self.bound is not None and self.bound <= 0:
            raise ValueError(f"bound must be positive; got {self.bound}")
        if self.adapt_sigma != "csa" and self.optimizer not in PYCMA:
            raise ValueError(f"adapt_sigma {self.adapt_sigma!r} is a pycma rule, for the optimizers {PYCMA}; "
                             f"{self.optimizer} adapts by CSA or not at all")


def settings(config_class=BBTConfig) -> list:
    """``(name, type, help, choices)`` of each setting, the command line's source for its flags."""
    hints = typing.get_type_hints(config_class)
    out = []
    for f in dataclasses.fields(config_class):
        kind = next(t for t in typing.get_args(hints[f.name]) or (hints[f.name],) if t is not type(None))
        out.append((f.name, kind, f.metadata["help"], f.metadata["choices"]))
    return out


def p0_for(service: BlackBox, config: BBTConfig, seed: int | None = None) -> np.ndarray:
    """``p0`` (:func:`bbt_mini.core.projection.build_p0`): by default the embeddings of ``L`` real tokens
    (ids from :data:`P0_FIRST_TOKEN`, as the authors' code); ``seed`` draws ``random-tokens``."""
    return build_p0(config.p0, service, config.prompt_length, seed, first=P0_FIRST_TOKEN)


def projection_for(service: BlackBox, config: BBTConfig, seed: int) -> Projection:
    """The fixed random projection of a BBT run, a function of the seed alone."""
    p0 = p0_for(service, config, seed)
    rng = np.random.default_rng([seed, 0xA])
    mu_hat, sigma_hat = service.embedding_stats() if config.sampler != "uniform" else (0.0, None)
    A = make_A(config.sampler, p0.size, config.intrinsic_dim, rng, mu_hat=mu_hat, sigma_hat=sigma_hat,
               sigma0=config.sigma0, alpha=config.alpha)
    return Projection(A, p0)


class Subspace:
    """BBT's search: one optimiser over ``z``; a candidate's prompt is ``A z + p0``."""

    def __init__(self, projection: Projection, optimizer: Optimizer):
        self.projection, self.optimizer = projection, optimizer

    def ask(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        Z = self.optimizer.ask()[:n]
        return Z, self.projection(Z)

    def tell(self, Z: np.ndarray, prompts: np.ndarray, losses: np.ndarray) -> dict:
        if len(Z) == self.optimizer.popsize:  # a last, partial generation only spends the budget
            self.optimizer.tell(Z, losses)
        return {}

    def state(self) -> dict:
        return {"optimizer": self.optimizer.state()}

    def load(self, state: dict) -> None:
        self.optimizer = restore(state["optimizer"])


def method_name(method: str, config: BBTConfig) -> str:
    """``bbt``/``bbtv2`` with CMA-ES; with another optimiser its name is added (``bbtv2-sep-cma``)."""
    return method if config.optimizer == "cma" else f"{method}-{config.optimizer}"


def run_bbt(setup: Setup, config: BBTConfig, seed: int | None = None, checkpoint: str | Path | None = None,
            resume: bool = False, progress: bool = True, test: bool = True, test_at=()) -> dict:
    """Tune a soft prompt with BBT on ``setup``'s training set; test the best-dev prompt.

    ``checkpoint``: a file written every ``checkpoint_every`` calls (default: at every dev
    check); with ``resume=True`` a run continues from it and ends exactly as an
    uninterrupted run with the same seed would. A checkpoint of another run (another
    model, task, seed, shots, test set, placement, device, number format or setting) is
    refused with the differences named. ``test_at``: budgets at which the prompt a run of that budget would
    return is also tested (:mod:`bbt_mini.methods.tuning`).
    """
    config.check()
    seed = setup.seed if seed is None else seed
    search = Subspace(projection_for(setup.service, config, seed),
                      make_optimizer(config.optimizer, config.intrinsic_dim, config.sigma0, config.popsize, seed,
                                     config.bound, config.adapt_sigma))
    return tune(setup, config, seed, method_name("bbt", config), search, checkpoint, resume, progress, test, test_at)
