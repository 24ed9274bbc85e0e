"""Derivative-free optimisers over ``z``, all behind one ``ask``/``tell`` interface.

* ``cma``: pycma's CMA-ES (Hansen et al.), full covariance: what BBT runs on;
* ``sep-cma``: pycma with a diagonal covariance (Ros & Hansen, 2008), cheaper per step;
* ``frozen-cma``: pycma with the covariance frozen at its start, the identity (option
  ``CMA_on=0``: both covariance learning rates ``c1`` and ``c_mu`` are zero); the mean and the
  step size still adapt, so comparing it with ``cma`` shows what learning ``C`` buys;
* ``mini-cma``: the book's own :class:`bbt_mini.core.cmaes.CMAES`, for teaching;
* ``random``: random search, every candidate drawn afresh from ``N(0, sigma0^2 I)``: the
  baseline that shows what CMA-ES's adaptation buys.

The pycma-based ones adapt the step size by the rule ``adapt_sigma`` names (:data:`STEP_SIZE_RULES`):
``csa``, cumulative step-size adaptation, what pycma ran at every dimension when the papers were
written (2022), or ``tpa``, two-point adaptation, which pycma 4.5 picks by itself from 300
dimensions on (``cma.evolution_strategy.TPA_dimension``). The rule is always passed, never left to
pycma's default, so a run's step-size rule does not depend on its ``d`` or on pycma's version.

An optimiser is plain numpy over vectors: it never sees the model. Its whole state can be
pickled (see :meth:`Optimizer.state` / :func:`restore`), which is what checkpoints save.
"""
from __future__ import annotations

import contextlib
import pickle
import warnings

import cma
import numpy as np

from .cmaes import CMAES

OPTIMIZERS = ("cma", "sep-cma", "frozen-cma", "mini-cma", "random")
# pycma's option AdaptSigma: the class of the step-size rule (cma.sigma_adaptation)
STEP_SIZE_RULES = {"csa": cma.sigma_adaptation.CMAAdaptSigmaCSA, "tpa": cma.sigma_adaptation.CMAAdaptSigmaTPA}
# the optimisers that run pycma, and so take either rule; mini-cma adapts by CSA only, random search not at all
PYCMA = ("cma", "sep-cma", "frozen-cma")


def check_seed(seed: int) -> int:
    """``seed``, refused unless it is 1 or more: pycma reads seed 0 as 'seed from the clock'."""
    if seed < 1:
        raise ValueError(f"seed must be 1 or more (pycma reads 0 as 'seed from the clock'); got {seed}")
    return seed


class Optimizer:
    """``ask()`` -> (popsize, d) candidates; ``tell(X, losses)``; minimises."""

    popsize: int

    def ask(self) -> np.ndarray:
        raise NotImplementedError

    def tell(self, X: np.ndarray, losses: np.ndarray) -> None:
        raise NotImplementedError

    def state(self) -> bytes:
        """Everything needed to continue exactly where it stopped."""
        return pickle.dumps(self)


def restore(state: bytes) -> Optimizer:
    """The optimiser saved by :meth:`Optimizer.state`."""
    return pickle.loads(state)


class PyCMA(Optimizer):
    """pycma's ``CMAEvolutionStrategy``, with random generators of its own.

    pycma samples with ``opts["randn"]`` (numpy's global generator by default) and seeds the
    global generator at start. Here each instance samples from its own ``RandomState``, and
    keeps a global-generator state of its own for whatever else pycma draws: it swaps that
    state in for each ``ask``/``tell`` and the caller's back afterwards. So several instances
    (BBTv2 has one per layer) stay independent, a pickled one continues exactly, and the
    caller's ``np.random`` stream is never rewound or moved.
    """

    def __init__(self, d: int, sigma0: float, popsize: int, seed: int, bound: float | None = None,
                 diagonal: bool = False, learn_covariance: bool = True, adapt_sigma: str = "csa"):
        opts = {"popsize": popsize, "seed": check_seed(seed), "verbose": -9, "CMA_diagonal": diagonal,
                "AdaptSigma": step_size_rule(adapt_sigma),
                "tolfun": 0, "tolflatfitness": 10**9, "tolfunhist": 0, "tolx": 0, "tolstagnation": 10**9}
        if bound:
            opts["bounds"] = [-bound, bound]
        if not learn_covariance:
            # CMA_on multiplies every covariance learning rate (c1, c_mu and their sep- and
            # active variants); 0 switches the covariance update off and leaves C where it
            # starts: the identity, up to the factors exp(1e-4 i / d) that pycma puts on its
            # diagonal to keep the eigenvalues apart. Mean and step size adapt as usual (the step
            # size by the rule adapt_sigma names).
            opts["CMA_on"] = 0
        self._random = np.random.RandomState(seed)
        opts["randn"] = self._random.randn
        self.popsize = popsize
        self._np_state = np.random.get_state()  # replaced by the state pycma seeds below
        with self._own_global_state(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.es = cma.CMAEvolutionStrategy(np.zeros(d), sigma0, opts)

    @contextlib.contextmanager
    def _own_global_state(self):
        """numpy's global generator in this instance's state while pycma runs; the caller's afterwards."""
        caller = np.random.get_state()
        np.random.set_state(self._np_state)
        try:
            yield
        finally:
            self._np_state = np.random.get_state()
            np.random.set_state(caller)

    def ask(self) -> np.ndarray:
        with self._own_global_state():
            return np.array(self.es.ask())

    def tell(self, X, losses) -> None:
        with self._own_global_state(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.es.tell(list(X), list(map(float, losses)))


class MiniCMA(Optimizer):
    """The book's own CMA-ES (no bounds: candidates are clipped to them if given)."""

    def __init__(self, d: int, sigma0: float, popsize: int, seed: int, bound: float | None = None):
        self.es = CMAES(np.zeros(d), sigma0, popsize, rng=np.random.default_rng(seed))
        self.popsize, self.bound = popsize, bound

    def ask(self) -> np.ndarray:
        X = self.es.ask()
        return np.clip(X, -self.bound, self.bound) if self.bound else X

    def tell(self, X, losses) -> None:
        self.es.tell(X, losses)


class RandomSearch(Optimizer):
    """Independent draws from ``N(0, sigma0^2 I)`` (clipped to the bound, if any): no adaptation."""

    def __init__(self, d: int, sigma0: float, popsize: int, seed: int, bound: float | None = None):
        self.d, self.sigma0, self.popsize, self.bound = d, sigma0, popsize, bound
        self.rng = np.random.default_rng(seed)

    def ask(self) -> np.ndarray:
        X = self.sigma0 * self.rng.standard_normal((self.popsize, self.d))
        return np.clip(X, -self.bound, self.bound) if self.bound else X

    def tell(self, X, losses) -> None:
        pass


def step_size_rule(name: str) -> type:
    """pycma's class for the step-size rule ``name`` (:data:`STEP_SIZE_RULES`), refused if unknown."""
    if name not in STEP_SIZE_RULES:
        raise ValueError(f"unknown step-size rule {name!r}; choose one of {tuple(STEP_SIZE_RULES)}")
    return STEP_SIZE_RULES[name]


def make_optimizer(name: str, d: int, sigma0: float, popsize: int, seed: int, bound: float | None = None,
                   adapt_sigma: str = "csa") -> Optimizer:
    """One of :data:`OPTIMIZERS`, seeded; a pycma one adapts its step size by ``adapt_sigma``."""
    if name not in PYCMA and step_size_rule(adapt_sigma) is not STEP_SIZE_RULES["csa"]:
        raise ValueError(f"the step-size rule {adapt_sigma!r} is pycma's: the optimisers {PYCMA} take it, "
                         f"not {name!r} (mini-cma adapts by CSA, random search not at all)")
    if name in PYCMA and step_size_rule(adapt_sigma) is STEP_SIZE_RULES["tpa"] and popsize < 3:
        # TPA spends two candidates of each population on its test of the last step (pycma cannot ask 2)
        raise ValueError(f"two-point step-size adaptation needs a population of at least 3; got {popsize}")
    if name == "cma":
        return PyCMA(d, sigma0, popsize, seed, bound, adapt_sigma=adapt_sigma)
    if name == "sep-cma":
        return PyCMA(d, sigma0, popsize, seed, bound, diagonal=True, adapt_sigma=adapt_sigma)
    if name == "frozen-cma":
        return PyCMA(d, sigma0, popsize, seed, bound, learn_covariance=False, adapt_sigma=adapt_sigma)
    if name == "mini-cma":
        return MiniCMA(d, sigma0, popsize, seed, bound)
    if name == "random":
        return RandomSearch(d, sigma0, popsize, seed, bound)
    raise ValueError(f"unknown optimizer {name!r}; choose one of {OPTIMIZERS}")
