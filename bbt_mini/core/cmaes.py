"""A minimal CMA-ES, written to be read beside the derivation in chapter 3.

:class:`OnePlusOneES` comes first in the chapter: the simplest evolution strategy, one
parent, one child, and Rechenberg's (1973) 1/5th success rule for the step size. Then
:class:`CMAES`: ``ask`` samples a population, ``tell`` updates the search distribution in
the order of Hansen's tutorial (Hansen, 2016): mean, evolution paths, covariance, step
size. The fixed strategy parameters live in :class:`Parameters`, named after the
tutorial's symbols; the changing state lives on :class:`CMAES`. Modelled on pycma's
``purecma.py`` (Hansen et al.); BBT itself runs on pycma, and the tests check that this
one converges like it.

>>> import numpy as np
>>> es = CMAES(np.full(5, 3.0), 1.0, rng=np.random.default_rng(1))
>>> for _ in range(150):
...     X = es.ask()
...     es.tell(X, (X ** 2).sum(1))
>>> bool(es.fbest < 1e-8)
True
"""
from __future__ import annotations

import math

import numpy as np


class OnePlusOneES:
    """The (1+1)-ES with the 1/5th success rule (Rechenberg, 1973), minimising.

    Each step draws one child ``y = x + sigma * N(0, I)`` and keeps the better of parent and
    child. The step size follows the success rule: ``sigma *= exp(1/3)`` after a success,
    ``sigma *= exp(-1/12)`` after a failure, so it stands still exactly when one child in five
    succeeds (1/5 * 1/3 = 4/5 * 1/12). Success rates above 1/5 mean the steps are too short,
    below 1/5 too long. ``ask``/``tell`` as :class:`CMAES`, with a population of one.

    >>> import numpy as np
    >>> es = OnePlusOneES(np.full(5, 3.0), 1.0, rng=np.random.default_rng(1))
    >>> for _ in range(1500):
    ...     y = es.ask()
    ...     es.tell(y, (y ** 2).sum(1))
    >>> bool(es.fbest < 1e-8)
    True
    """

    SUCCESS_RATE = 1 / 5  # the target rate of the rule
    UP = 1 / 3  # log of the factor applied to sigma after a success

    def __init__(self, x0, sigma0: float, rng: np.random.Generator | None = None):
        self.x = np.asarray(x0, dtype=float).copy()
        if self.x.ndim != 1 or not sigma0 > 0:
            raise ValueError("x0 must be a vector and sigma0 positive")
        self.sigma = float(sigma0)
        self.rng = rng if rng is not None else np.random.default_rng()
        self.fbest = math.inf  # f(x); the first child is always accepted
        self.counteval = 0
        self.successes = 0

    popsize = 1

    @property
    def xbest(self) -> np.ndarray:
        return self.x

    def ask(self) -> np.ndarray:
        """One child ``x + sigma * N(0, I)``, as a (1, N) array."""
        return self.x + self.sigma * self.rng.standard_normal((1, len(self.x)))

    def tell(self, Y: np.ndarray, f: np.ndarray) -> None:
        """Keep the child if it is no worse; the 1/5th success rule moves ``sigma``."""
        Y, f = np.asarray(Y, dtype=float), np.asarray(f, dtype=float)
        if Y.shape != (1, len(self.x)) or f.shape != (1,):
            raise ValueError(
                f"tell needs Y of shape {(1, len(self.x))} and f of shape (1,)")
        self.counteval += 1
        success = f[0] <= self.fbest
        if success:
            self.x, self.fbest = Y[0].copy(), float(f[0])
            self.successes += 1
        # log sigma moves by UP on success and by -UP * rate / (1 - rate) on failure:
        # on average it stands still exactly when the success rate is SUCCESS_RATE.
        rate = self.SUCCESS_RATE
        self.sigma *= math.exp(self.UP * (success - rate) / (1 - rate))


class Parameters:
    """Fixed strategy parameters for dimension ``N`` and population ``lam`` (Hansen, 2016, Table 1)."""

    def __init__(self, N: int, lam: int | None = None):
        self.N = N
        self.lam = lam or 4 + int(3 * math.log(N))  # population size
        self.mu = self.lam // 2  # parents: the best half
        w = math.log((self.lam + 1) / 2) - np.log(np.arange(1, self.mu + 1))
        self.weights = w / w.sum()  # positive recombination weights, summing to 1
        self.mueff = 1.0 / (self.weights**2).sum()  # variance-effective selection mass
        self.cc = (4 + self.mueff / N) / (N + 4 + 2 * self.mueff / N)  # time constant of pc
        self.cs = (self.mueff + 2) / (N + self.mueff + 5)  # time constant of ps
        self.c1 = 2 / ((N + 1.3) ** 2 + self.mueff)  # learning rate of the rank-one update
        self.cmu = min(1 - self.c1, 2 * (self.mueff - 2 + 1 / self.mueff) / ((N + 2) ** 2 + self.mueff))  # rank-mu
        self.damps = 1 + 2 * max(0.0, math.sqrt((self.mueff - 1) / (N + 1)) - 1) + self.cs  # step-size damping
        self.chiN = math.sqrt(N) * (1 - 1 / (4 * N) + 1 / (21 * N**2))  # E||N(0, I)||


class CMAES:
    """CMA-ES with ``ask``/``tell``, minimising; ``rng`` is the only source of randomness."""

    def __init__(self, x0, sigma0: float, popsize: int | None = None, rng: np.random.Generator | None = None):
        self.xmean = np.asarray(x0, dtype=float).copy()
        N = len(self.xmean)
        self.params = Parameters(N, popsize)
        self.sigma = float(sigma0)
        self.rng = rng if rng is not None else np.random.default_rng()
        self.pc = np.zeros(N)  # evolution path of the covariance
        self.ps = np.zeros(N)  # conjugate evolution path of the step size
        self.C = np.eye(N)  # covariance matrix, C = B diag(D^2) B^T
        self.B, self.D = np.eye(N), np.ones(N)
        self.counteval = 0
        self.eigeneval = 0  # evaluations at the last eigendecomposition
        self.xbest, self.fbest = self.xmean.copy(), math.inf

    @property
    def popsize(self) -> int:
        return self.params.lam

    def ask(self) -> np.ndarray:
        """``lam`` candidates ``x_k = m + sigma * B D y_k`` with ``y_k ~ N(0, I)``."""
        self._update_eigensystem()
        y = self.rng.standard_normal((self.params.lam, len(self.xmean)))
        return self.xmean + self.sigma * (y * self.D) @ self.B.T

    def tell(self, X: np.ndarray, f: np.ndarray) -> None:
        """Update the distribution from candidates ``X``, losses ``f`` (lower wins)."""
        par, N = self.params, len(self.xmean)
        X, f = np.asarray(X, dtype=float), np.asarray(f, dtype=float)
        if X.shape != (par.lam, N) or f.shape != (par.lam,):
            raise ValueError(
                f"tell needs X of shape {(par.lam, N)} and f of shape {(par.lam,)}")
        self.counteval += len(f)
        order = np.argsort(f)
        if f[order[0]] < self.fbest:
            self.xbest, self.fbest = X[order[0]].copy(), float(f[order[0]])
        xold = self.xmean

        # 1. Mean: weighted average of the mu best candidates.
        steps = (X[order[: par.mu]] - xold) / self.sigma  # y_{i:lam}
        self.xmean = xold + self.sigma * par.weights @ steps
        ymean = par.weights @ steps

        # 2. Evolution paths: cumulate the mean's steps over generations.
        invsqrtC_y = self.B @ ((self.B.T @ ymean) / self.D)  # C^(-1/2) ymean
        self.ps = ((1 - par.cs) * self.ps
                   + math.sqrt(par.cs * (2 - par.cs) * par.mueff) * invsqrtC_y)
        generations = self.counteval / par.lam
        # stall pc when ps is long (sigma about to grow)
        decay = (1 - par.cs) ** (2 * generations)
        hsig = (np.linalg.norm(self.ps) / math.sqrt(1 - decay) / par.chiN
                < 1.4 + 2 / (N + 1))
        self.pc = ((1 - par.cc) * self.pc
                   + hsig * math.sqrt(par.cc * (2 - par.cc) * par.mueff) * ymean)

        # 3. Covariance: rank-one update (from pc) plus rank-mu update (this generation)
        c1a = par.c1 * (1 - (1 - hsig**2) * par.cc * (2 - par.cc))  # for a stalled pc
        rank_mu = (steps * par.weights[:, None]).T @ steps
        self.C = ((1 - c1a - par.cmu) * self.C + par.c1 * np.outer(self.pc, self.pc)
                  + par.cmu * rank_mu)

        # 4. Step size: grow if ps is longer than a random walk's, shrink if shorter.
        growth = (par.cs / par.damps) * (np.linalg.norm(self.ps) / par.chiN - 1)
        self.sigma *= math.exp(min(1.0, growth))

    def _update_eigensystem(self) -> None:
        """Recompute ``B`` and ``D`` from ``C``, lazily (every ~N/(10 (c1+cmu)) evaluations)."""
        par = self.params
        if par.c1 + par.cmu == 0:  # covariance learning switched off: C stays as it is
            return
        if self.counteval - self.eigeneval <= par.lam / (par.c1 + par.cmu) / len(self.xmean) / 10:
            return
        self.eigeneval = self.counteval
        self.C = np.triu(self.C) + np.triu(self.C, 1).T  # keep C exactly symmetric
        eigvals, self.B = np.linalg.eigh(self.C)
        self.D = np.sqrt(np.maximum(eigvals, 1e-20))
