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

* ``normal-bbt`` (BBT's own normal option, ``--random_proj normal`` in the authors' ICML-era
  ``bbt.py``, e.g. commit 00ff861): ``N(0, (1/d)^2)``, a standard deviation of ``1/d``
  (:func:`normal_bbt_A`), with no statistics of the model; chapter 5 runs it beside the others.

* ``uniform-matched`` (chapter 5's control): uniform entries ``U(-b, b)`` at the normal
  sampler's standard deviation, ``b = sqrt(3) * std``: the uniform shape at the derived scale.

Chapter 5 of the book derives both normal forms.

Starting points ``p0`` (:func:`build_p0`, named by a string so that a run's settings say
which): ``tokens`` (the authors' code: tokens ``first .. first + L - 1``), ``random-tokens``
(``L`` tokens drawn per seed), ``words:<text>`` (the tokens of a phrase, repeated and cut to
``L``), ``file:<path.npy>`` (a saved ``(L, hidden)`` prompt, e.g. one tuned with gradients on
another task: BBTv2's critique of BBT is that it needs such a ``p0``) and ``zeros``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SAMPLERS = ("uniform", "normal", "normal-v1", "normal-bbt", "uniform-matched")
P0_FORMS = ("tokens", "zeros", "random-tokens", "words:<text>", "file:<path.npy>")
# p0 = the word embeddings of L real tokens, ids P0_FIRST_TOKEN.. (the authors' code): ordinary
# vocabulary entries, past the special tokens at the start of every vocabulary, so p0 has the
# scale of real words. Every model the book uses has more than 1,000 + L tokens.
P0_FIRST_TOKEN = 1000
# random-tokens draws from ids RANDOM_P0_LOW .. vocab_size - 1, the range whose first L ids the
# authors' default takes: past the special, byte and placeholder tokens that open the
# vocabularies (BERT's ids 1..998 are [unused] placeholders and [CLS], [SEP], [MASK]).
RANDOM_P0_LOW = P0_FIRST_TOKEN


def uniform_A(D: int, d: int, rng: np.random.Generator) -> np.ndarray:
    """``A`` with entries ``U(-1/sqrt(d), 1/sqrt(d))``: ``nn.Linear(d, D)``'s default init."""
    bound = 1.0 / math.sqrt(d)
    return rng.uniform(-bound, bound, size=(D, d)).astype(np.float32)


def normal_bbt_A(D: int, d: int, rng: np.random.Generator) -> np.ndarray:
    """``A`` with entries ``N(0, (1/d)^2)``: BBT's own normal option (a std of ``1/d``, not ``1/sqrt(d)``)."""
    return normal_A(D, d, 1.0 / d, rng)


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
    if sampler == "normal-bbt":
        return normal_bbt_A(D, d, rng)
    if sigma_hat is None:
        raise ValueError(f"the {sampler!r} sampler needs sigma_hat (the std of what A z is added to)")
    if sampler == "normal":
        return normal_A(D, d, normal_std(sigma_hat, d, sigma0, alpha), rng)
    if sampler == "normal-v1":
        mu, sigma = normal_v1(mu_hat, sigma_hat, d)
        return normal_A(D, d, sigma, rng, mu=mu)
    if sampler == "uniform-matched":
        bound = math.sqrt(3) * normal_std(sigma_hat, d, sigma0, alpha)  # std of U(-b, b) is b / sqrt(3)
        return rng.uniform(-bound, bound, size=(D, d)).astype(np.float32)
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


# ------------------------------------------------------------------ the starting point p0


def check_p0(spec: str) -> None:
    """Refuse a ``p0`` that is none of :data:`P0_FORMS` (before any model loads)."""
    if not isinstance(spec, str) or not (spec in ("tokens", "zeros", "random-tokens")
                                         or spec.startswith(("words:", "file:"))):
        raise ValueError(f"unknown p0 {spec!r}; choose one of {P0_FORMS}")
    if spec == "words:" or spec == "file:":
        raise ValueError(f"p0 {spec!r} needs a text or a path after the colon")


def first_token_ids(L: int, vocab_size: int, first: int) -> list[int]:
    """The authors' ``p0`` tokens: ids ``first .. first + L - 1``, checked against the vocabulary."""
    if first + L > vocab_size:
        raise ValueError(f"p0='tokens' takes the embeddings of tokens {first}..{first + L - 1}, beyond this "
                         f"model's {vocab_size} tokens; use p0='zeros' (prompt tuning: init='zeros')")
    return list(range(first, first + L))


def random_token_ids(L: int, vocab_size: int, seed: int, low: int = RANDOM_P0_LOW) -> list[int]:
    """``L`` distinct token ids drawn uniformly from ``low .. vocab_size - 1``, a function of ``seed``."""
    if vocab_size - low < L:
        raise ValueError(f"p0='random-tokens' draws {L} distinct ids from {low}..{vocab_size - 1}, "
                         f"but this model has only {vocab_size} tokens")
    rng = np.random.default_rng([seed, 0x90])
    return [int(i) for i in rng.choice(np.arange(low, vocab_size), size=L, replace=False)]


def phrase_token_ids(ids: list[int], L: int) -> list[int]:
    """A phrase's token ids, repeated until there are ``L`` and cut to ``L``."""
    if not ids:
        raise ValueError("p0='words:...' needs a text with at least one token")
    return [ids[i % len(ids)] for i in range(L)]


def load_p0(path: str | Path, L: int, hidden: int) -> np.ndarray:
    """A saved prompt, checked to be ``(L, hidden)`` and finite."""
    p0 = np.load(Path(path)).astype(np.float32)
    if p0.shape != (L, hidden):
        raise ValueError(f"p0 file {path} holds a {p0.shape} prompt; this run needs ({L}, {hidden})")
    if not np.isfinite(p0).all():
        raise ValueError(f"p0 file {path} holds non-finite values")
    return p0


def p0_token_ids(spec: str, service, L: int, seed: int | None = None, first: int = P0_FIRST_TOKEN) -> list[int] | None:
    """The token ids a token-made ``p0`` consists of (None for ``zeros`` and ``file:``)."""
    check_p0(spec)
    vocab = service.vocab_size
    if spec == "tokens":
        ids = first_token_ids(L, vocab, first)
    elif spec == "random-tokens":
        if seed is None:
            raise ValueError("p0='random-tokens' needs the run's seed")
        ids = random_token_ids(L, vocab, seed)
    elif spec.startswith("words:"):
        ids = phrase_token_ids(service.token_ids(spec[len("words:"):]), L)
    else:
        return None
    if max(ids) >= vocab or min(ids) < 0:
        raise ValueError(f"p0 token ids must lie in 0..{vocab - 1}; got {min(ids)}..{max(ids)}")
    return ids


def build_p0(spec: str, service, L: int, seed: int | None = None, first: int = P0_FIRST_TOKEN) -> np.ndarray:
    """BBT's starting point ``p0`` (``(L, hidden)``, float32) from one of :data:`P0_FORMS`.

    ``service``: the black box (its ``vocab_size``, ``hidden_size``, ``token_ids`` and
    ``token_embeddings``); ``seed`` picks the tokens of ``random-tokens``.
    """
    ids = p0_token_ids(spec, service, L, seed, first)
    if ids is not None:
        return service.token_embeddings(ids)
    if spec == "zeros":
        return np.zeros((L, service.hidden_size), np.float32)
    return load_p0(spec[len("file:"):], L, service.hidden_size)
