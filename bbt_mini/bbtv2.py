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

from .bbt import BBTConfig, Run, p0_for
from .blackbox import BlackBox
from .experiment import Setup
from .optimizers import make_optimizer, restore
from .profiles import Profile
from .projection import make_A


@dataclass
class BBTv2Config(BBTConfig):
    """BBTv2's settings: BBT's, with the normal sampler as the default."""

    sampler: str = "normal"

    @classmethod
    def from_profile(cls, profile: Profile, **overrides) -> "BBTv2Config":
        return super().from_profile(profile, **{"budget": profile.bbtv2_budget, "sampler": "normal", **overrides})


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
    p0 = p0_for(service, config)
    rng = np.random.default_rng([seed, 0xB])
    As = []
    for layer in range(service.num_layers):
        mu_hat, sigma_hat = (0.0, None) if stats is None else stats[layer]
        As.append(make_A(config.sampler, p0.size, config.intrinsic_dim, rng, mu_hat=mu_hat, sigma_hat=sigma_hat,
                         sigma0=config.sigma0, alpha=config.alpha))
    return As, p0


def run_bbtv2(setup: Setup, config: BBTv2Config, seed: int | None = None, checkpoint: str | Path | None = None,
              resume: bool = False, progress: bool = True, test: bool = True) -> dict:
    """Tune a deep prompt with BBTv2's divide and conquer; test the best-dev prompt.

    Same contract as :func:`bbt_mini.bbt.run_bbt` (budget, dev checks, checkpoints, result).
    """
    config.check()
    seed = setup.seed if seed is None else seed
    service = setup.service
    layers, d = service.num_layers, config.intrinsic_dim
    stats = layer_stats(service, setup.train) if config.sampler != "uniform" else None
    As, p0 = deep_projections(service, config, seed, stats)
    L, H = p0.shape
    optimizers = [make_optimizer(config.optimizer, d, config.sigma0, config.popsize, seed * 1000 + layer + 1,
                                 config.bound) for layer in range(layers)]
    z_best = np.zeros((layers, d))  # each layer's prompt, fixed at the best z its optimiser has seen
    f_best = np.full(layers, np.inf)
    layer = 0  # the layer whose turn it is
    run = Run(setup, config, seed, method="bbtv2")
    if resume and checkpoint and Path(checkpoint).exists():
        saved = run.load(checkpoint)
        optimizers = [restore(s) for s in saved["optimizers"]]
        z_best, f_best, layer = saved["z_best"], saved["f_best"], saved["layer"]

    def layer_prompt(Z: np.ndarray, at: int) -> np.ndarray:
        """Layer ``at``'s prompts for vectors ``Z`` (n, d): ``A_l z_l`` (+ ``p0`` at layer 0)."""
        return (Z @ As[at].T).reshape(len(Z), L, H) + (p0 if at == 0 else 0)

    fixed = np.stack([layer_prompt(z_best[i:i + 1], i)[0] for i in range(layers)]).astype(np.float32)

    def deep_prompt(Z: np.ndarray, at: int) -> np.ndarray:
        """(n, layers, L, H): the fixed prompts everywhere, candidates ``Z`` at layer ``at``."""
        out = np.repeat(fixed[None], len(Z), 0)
        out[:, at] = layer_prompt(Z, at)
        return out

    every = config.checkpoint_every or config.eval_every
    next_save = (run.calls // every + 1) * every
    with run.progress(config.budget, progress) as bar:
        while run.calls < config.budget:
            n = min(config.popsize, config.budget - run.calls)
            Z = optimizers[layer].ask()[:n]
            prompts = deep_prompt(Z, layer)
            r = service(prompts, setup.train, loss=config.loss)
            if n == config.popsize:
                optimizers[layer].tell(Z, r.loss)
            i = int(np.argmin(r.loss))
            if r.loss[i] < f_best[layer]:
                z_best[layer], f_best[layer] = Z[i], r.loss[i]
                fixed[layer] = prompts[i, layer]
            entry = run.record(r.loss, r.logits, prompts)
            entry["layer"] = layer
            layer = (layer + 1) % layers
            bar.update(n)
            bar.set_postfix(loss=f"{entry['train_loss']:.3f}", dev=f"{run.best_dev:.3f}", layer=layer, refresh=False)
            if checkpoint and run.calls >= next_save:
                run.save(checkpoint, {"optimizers": [o.state() for o in optimizers], "z_best": z_best.copy(),
                                      "f_best": f_best.copy(), "layer": layer})
                next_save += every
    return run.result(test=test, layer_stats=None if stats is None else stats.tolist())
