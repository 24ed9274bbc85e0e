"""The intrinsic-dimension projection ``p = A z + p0`` (Sun et al., 2022a, Sec. 3.2).

A soft prompt has ``D = L x hidden`` numbers (51,200 for 50 tokens of RoBERTa-large), too
many for a derivative-free optimiser. Pre-trained models have a low intrinsic dimension
(Aghajanyan et al., 2021): a random ``d``-dimensional subspace through a good starting
point already contains good solutions. So BBT searches ``z`` in ``R^d`` and maps it with a
fixed random matrix ``A`` (D x d) onto the prompt space, around ``p0``.

Samplers for ``A``:

* ``uniform`` (BBT): the default initialisation of PyTorch's ``nn.Linear(d, D)``,
  ``U(-1/sqrt(d), 1/sqrt(d))``;
* ``normal`` (BBTv2, final code): ``N(0, std^2)`` with
  ``std = alpha * sigma_hat / (sqrt(d) * sigma0)`` (:func:`normal_std`), so that each
  entry of ``A z`` has standard deviation about ``alpha * sigma_hat`` when
  ``z ~ N(0, sigma0^2 I)``;
* ``normal-v1`` (BBTv2, arXiv v1): ``N(mu, sigma^2)`` with ``mu = mu_hat / (d - sigma_hat^2)``
  and ``sigma = sigma_hat / sqrt(d - sigma_hat^2)`` (:func:`normal_v1`).

Chapter 5 of the book derives both normal forms.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SAMPLERS = ("uniform", "normal", "normal-v1")


def uniform_A(D: int, d: int, rng: np.random.Generator) -> np.ndarray:
    """``A`` with entries ``U(-1/sqrt(d), 1/sqrt(d))``: ``nn.Linear(d, D)``'s default init."""
    bound = 1.0 / math.sqrt(d)
    return rng.uniform(-bound, bound, size=(D, d)).astype(np.float32)


def normal_std(sigma_hat: float, d: int, sigma0: float, alpha: float = 1.0) -> float:
    """BBTv2's final std for ``A``: ``alpha * sigma_hat / (sqrt(d) * sigma0)``."""
    return alpha * sigma_hat / (math.sqrt(d) * sigma0)


def normal_v1(mu_hat: float, sigma_hat: float, d: int) -> tuple[float, float]:
    """BBTv2 arXiv v1: ``mu = mu_hat / (d - sigma_hat^2)``, ``sigma = sigma_hat / sqrt(d - sigma_hat^2)``."""
    temp = d - sigma_hat**2
    if temp <= 0:
        raise ValueError(f"the v1 sampler needs d > sigma_hat^2; got d={d}, sigma_hat={sigma_hat:.3g}")
    return mu_hat / temp, sigma_hat / math.sqrt(temp)


def normal_A(D: int, d: int, std: float, rng: np.random.Generator, mu: float = 0.0) -> np.ndarray:
    """``A`` with i.i.d. entries ``N(mu, std^2)``."""
    return (mu + std * rng.standard_normal((D, d))).astype(np.float32)


def make_A(sampler: str, D: int, d: int, rng: np.random.Generator, *, mu_hat: float = 0.0,
           sigma_hat: float | None = None, sigma0: float = 1.0, alpha: float = 1.0) -> np.ndarray:
    """``A`` from one of :data:`SAMPLERS`; the normal ones need the statistics ``mu_hat, sigma_hat``."""
    if sampler == "uniform":
        return uniform_A(D, d, rng)
    if sigma_hat is None:
        raise ValueError(f"the {sampler!r} sampler needs sigma_hat (the std of what A z is added to)")
    if sampler == "normal":
        return normal_A(D, d, normal_std(sigma_hat, d, sigma0, alpha), rng)
    if sampler == "normal-v1":
        mu, sigma = normal_v1(mu_hat, sigma_hat, d)
        return normal_A(D, d, sigma, rng, mu=mu)
    raise ValueError(f"unknown sampler {sampler!r}; choose one of {SAMPLERS}")


@dataclass
class Projection:
    """``z -> p = A z + p0``, reshaped to ``(L, hidden)`` prompt vectors."""

    A: np.ndarray  # (D, d), D = L * hidden
    p0: np.ndarray  # (L, hidden)

    def __post_init__(self):
        if self.A.ndim != 2 or self.A.shape[0] != self.p0.size:
            raise ValueError(f"A must be (L*hidden, d) = ({self.p0.size}, d); got {self.A.shape}")

    @property
    def d(self) -> int:
        return self.A.shape[1]

    def __call__(self, z: np.ndarray) -> np.ndarray:
        """Prompts for a batch ``z`` of shape (n, d) (or one ``z`` of shape (d,)): (n, L, hidden)."""
        z = np.atleast_2d(np.asarray(z, dtype=np.float32))
        if z.shape[1] != self.d:
            raise ValueError(f"z must have {self.d} entries; got {z.shape[1]}")
        return (z @ self.A.T).reshape(len(z), *self.p0.shape) + self.p0
