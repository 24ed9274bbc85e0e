"""BBTv2 (Sun et al., 2022b): deep prompts, divide and conquer, a normal sampler for ``A``.

A deep prompt puts ``L`` vectors at every layer. Layer 0 is BBT's prompt,
``A_0 z_0 + p0``; for each layer ``l >= 1``, ``A_l z_l`` is added to the hidden states at
the prompt positions as they enter layer ``l`` (the service does this with forward
pre-hooks). Each layer has its own fixed random ``A_l`` and its own ``z_l``.

Divide and conquer: the residual stream makes the output a sum of per-layer
contributions, ``h_L = h_0 + sum_l g_l(h_{l-1})``, so one layer's prompt can be tuned while
the others are held fixed. One CMA-ES per layer; a round runs one generation (ask,
evaluate, tell) for each layer from the bottom up, then fixes that layer's prompt at the
best ``z_l`` its optimiser has seen. The budget counts API calls exactly as BBT does, so
the two are compared at equal cost; a last round may stop part-way to spend it exactly
(the authors' code rounds down instead: 8,000 -> 16 rounds of 24 layers x 20 = 7,680).

The normal sampler (chapter 5): ``A_l`` entries ``N(0, std_l^2)`` with
``std_l = alpha * sigma_l / (sqrt(d) * sigma0)``, where ``sigma_0`` is the std of all
word-embedding entries and ``sigma_l`` (``l >= 1``) that of the hidden states entering
layer ``l`` on the training batch, clipped five times to mean +- 3 std.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.optimizers import Optimizer, make_optimizer, restore
from ..core.profiles import Profile
from ..core.projection import SAMPLERS, make_A
from ..service.blackbox import BlackBox
from .bbt import BBTConfig, Subspace, method_name, p0_for, setting
from .experiment import Setup
from .tuning import tune

SEARCHES = ("layerwise", "joint")

# Each layer's optimiser gets its own seed, seed * LAYER_SEEDS + layer + 1: distinct for every
# (seed, layer) pair as long as a model has fewer than LAYER_SEEDS layers, and never 0 (pycma
# reads 0 as "seed from the clock").
LAYER_SEEDS = 1000


# The authors' README recipe for BBTv2 (github.com/txsun1997/Black-Box-Tuning, "Using BBTv2":
# deepbbt.py --sigma 0.2 --alpha 0.2 --popsize 20 --bound 0 --budget 8000), whose population, bound and
# budget the full profile already has; deepbbt.py's own defaults are --sigma 1 --alpha 1 (BBTv2Config's).
PUBLISHED_RECIPE = {"sigma0": 0.2, "alpha": 0.2}
# The profiles that run BBTv2 as published: those with the papers' L, d and population (colab has a
# quarter of the calls, so colab and full differ in the budget alone). small and ci, at sizes the authors
# published no recipe for, keep deepbbt.py's defaults.
RECIPE_PROFILES = ("colab", "full")


@dataclass
class BBTv2Config(BBTConfig):
    """BBTv2's settings: BBT's, with the normal sampler as the default. The field defaults are
    ``deepbbt.py``'s (``sigma0 = alpha = 1``); :meth:`from_profile` gives the profiles of
    :data:`RECIPE_PROFILES` the authors' published recipe (:data:`PUBLISHED_RECIPE`)."""

    sampler: str = setting("normal", "A: normal (BBTv2's, the default here), normal-v1 or uniform", SAMPLERS)
    search: str = setting("layerwise", "layerwise: one CMA-ES per layer, in turns (BBTv2); joint: one CMA-ES "
                          "over all layers' z at once (not BBTv2: what divide and conquer avoids)", SEARCHES)

    @classmethod
    def from_profile(cls, profile: Profile, **overrides) -> "BBTv2Config":
        recipe = PUBLISHED_RECIPE if profile.name in RECIPE_PROFILES else {}
        return super().from_profile(profile, **{"budget": profile.bbtv2_budget, **recipe, **overrides})


def layer_stats(service: BlackBox, batch) -> np.ndarray:
    """(layers, 2): mean and std of what each layer's prompt is added to.

    Row 0: all word-embedding entries; row ``l >= 1``: the hidden states entering layer ``l``
    on ``batch`` (clipped as in BBTv2's code).
    """
    stats = service.hidden_stats(batch)
    stats[0] = service.embedding_stats()
    return stats


def deep_projections(service: BlackBox, config: BBTv2Config, seed: int, stats: np.ndarray | None) -> list:
    """One fixed random ``A_l`` per layer, and ``p0`` for layer 0; a function of the seed alone."""
    p0 = p0_for(service, config, seed)
    rng = np.random.default_rng([seed, 0xB])
    As = []
    for layer in range(service.num_layers):
        mu_hat, sigma_hat = (0.0, None) if stats is None else stats[layer]
        As.append(make_A(config.sampler, p0.size, config.intrinsic_dim, rng, mu_hat=mu_hat, sigma_hat=sigma_hat,
                         sigma0=config.sigma0, alpha=config.alpha))
    return As, p0


def layer_seed(seed: int, layer: int) -> int:
    """The seed of layer ``layer``'s optimiser in a run with ``seed`` (see :data:`LAYER_SEEDS`)."""
    return seed * LAYER_SEEDS + layer + 1


class LayerByLayer:
    """BBTv2's search: one optimiser per layer; a generation moves one layer's ``z_l``.

    The other layers' prompts stay fixed. Layers take turns from the bottom up. After
    its generation a layer's prompt is fixed at the best ``z_l`` its optimiser has seen
    (``fixed``), and the next layer's turn begins.
    """

    def __init__(self, As: list, p0: np.ndarray, optimizers: list[Optimizer]):
        self.As, self.p0, self.optimizers = As, p0, optimizers
        layers, d = len(As), As[0].shape[1]
        self.layer = 0  # the layer whose turn it is
        self.z_best = np.zeros((layers, d))  # each layer's best z so far
        self.f_best = np.full(layers, np.inf)  # and its training loss
        self.fixed = np.stack([self.layer_prompt(self.z_best[i:i + 1], i)[0]
                               for i in range(layers)]).astype(np.float32)

    def layer_prompt(self, Z: np.ndarray, at: int) -> np.ndarray:
        """Layer ``at``'s prompts for ``Z`` (n, d): ``A_l z_l`` (+ ``p0`` at layer 0)"""
        AZ = (Z @ self.As[at].T).reshape(len(Z), *self.p0.shape)
        return AZ + (self.p0 if at == 0 else 0)

    def ask(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(n, layers, L, H): the fixed prompts, candidates at the current layer."""
        Z = self.optimizers[self.layer].ask()[:n]
        prompts = np.repeat(self.fixed[None], len(Z), 0)
        prompts[:, self.layer] = self.layer_prompt(Z, self.layer)
        return Z, prompts

    def tell(self, Z: np.ndarray, prompts: np.ndarray, losses: np.ndarray) -> dict:
        layer = self.layer
        # a last, partial generation only spends the budget
        if len(Z) == self.optimizers[layer].popsize:
            self.optimizers[layer].tell(Z, losses)
        i = int(np.argmin(losses))
        if losses[i] < self.f_best[layer]:
            self.z_best[layer], self.f_best[layer] = Z[i], losses[i]
            self.fixed[layer] = prompts[i, layer]
        self.layer = (layer + 1) % len(self.optimizers)
        return {"layer": layer}

    def state(self) -> dict:
        """The fixed prompts are saved as they are (not recomputed from ``z_best``)."""
        return {"optimizers": [o.state() for o in self.optimizers],
                "z_best": self.z_best.copy(), "f_best": self.f_best.copy(),
                "fixed": self.fixed.copy(), "layer": self.layer}

    def load(self, state: dict) -> None:
        self.optimizers = [restore(s) for s in state["optimizers"]]
        self.z_best, self.f_best = state["z_best"], state["f_best"]
        self.fixed = state["fixed"]
        self.layer = state["layer"]


class Joint(Subspace):
    """One optimiser over all layers' ``z`` at once: ``(z_0, ..., z_{N-1})``.

    That is ``N x d`` numbers, searched as BBT searches its ``z`` (:class:`Subspace`);
    a candidate's prompt at layer ``l`` is built from block ``l`` as
    :class:`LayerByLayer` builds it (the same ``A_l`` and ``p0``), so every candidate
    moves every layer and nothing is fixed between generations.
    """

    def __init__(self, As: list, p0: np.ndarray, optimizer: Optimizer):
        layers = LayerByLayer(As, p0, [])

        def prompts(Z: np.ndarray) -> np.ndarray:
            """(n, layers, L, H): each layer's prompt from its own block of ``z``."""
            blocks = Z.reshape(len(Z), len(As), -1)
            built = [layers.layer_prompt(blocks[:, at], at) for at in range(len(As))]
            return np.stack(built, 1).astype(np.float32)

        super().__init__(prompts, optimizer)


def search_name(config: BBTv2Config) -> str:
    """``bbtv2`` (``bbtv2-<optimiser>``) for BBTv2's own search; ``deep-joint`` (...) for the joint one."""
    return method_name("bbtv2" if config.search == "layerwise" else "deep-joint", config)


def run_bbtv2(setup: Setup, config: BBTv2Config, seed: int | None = None, checkpoint: str | Path | None = None,
              resume: bool = False, progress: bool = True, test: bool = True, test_at=()) -> dict:
    """Tune a deep prompt with BBTv2's divide and conquer; test the best-dev prompt.

    Same contract as :func:`bbt_mini.methods.bbt.run_bbt` (budget, dev checks, checkpoints, ``test_at``, result).
    """
    config.check()
    seed = setup.seed if seed is None else seed
    service = setup.service
    stats = layer_stats(service, setup.train) if config.sampler != "uniform" else None
    As, p0 = deep_projections(service, config, seed, stats)
    layers, d = service.num_layers, config.intrinsic_dim
    if config.search == "joint":
        search = Joint(As, p0, make_optimizer(config.optimizer, layers * d, config.sigma0, config.popsize,
                                              layer_seed(seed, 0), config.bound, config.adapt_sigma))
    else:
        search = LayerByLayer(As, p0, [make_optimizer(config.optimizer, d, config.sigma0, config.popsize,
                                                      layer_seed(seed, layer), config.bound, config.adapt_sigma)
                                       for layer in range(layers)])
    return tune(setup, config, seed, search_name(config), search, checkpoint, resume, progress, test, test_at,
                layer_stats=None if stats is None else stats.tolist())
