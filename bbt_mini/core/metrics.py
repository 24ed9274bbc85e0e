"""Scores and losses of label-word logits, in one place.

Every score and loss takes ``logits`` of shape (n, B, C) (n candidate prompts, B examples, C
classes) and ``labels`` (B,), and returns one number per candidate (n,); :func:`log_softmax`
and :func:`softmax` turn logits of any shape into (log-)probabilities over the last axis. The
service uses the losses (``LOSSES``, picked by name); results report :func:`accuracy` and :func:`f1`.
"""
from __future__ import annotations

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """The label words' log-probabilities (last axis), shifted by the largest logit so no ``exp`` overflows."""
    z = logits - logits.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def softmax(logits: np.ndarray) -> np.ndarray:
    """The label words' probabilities (last axis), shifted by the largest logit so no ``exp`` overflows."""
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Mean cross-entropy over the label words, per candidate (BBT's loss ``L``)."""
    logp = log_softmax(logits)
    return -np.take_along_axis(logp, labels[None, :, None], -1)[..., 0].mean(-1)


def hinge(logits: np.ndarray, labels: np.ndarray, margin: float = 2.0) -> np.ndarray:
    """The authors' multi-class hinge loss, per candidate: ``sum_{j != y} max(0, s_j - s_y + margin)``,
    averaged over the examples.

    As the authors' ``utils.hinge_loss`` (txsun1997/Black-Box-Tuning, called with ``margin=2``,
    ``reduction='sum'`` and divided by the batch size): every wrong class within ``margin`` of the
    true one adds its violation, not only the largest (Crammer and Singer's form, which agrees with
    this one on two classes and is smaller on three or more, where several wrong classes violate).
    """
    true = np.take_along_axis(logits, labels[None, :, None], -1)
    violation = np.maximum(0.0, logits - true + margin)
    np.put_along_axis(violation, labels[None, :, None].repeat(len(logits), 0), 0.0, -1)  # j = y adds nothing
    return violation.sum(-1).mean(-1)


def accuracy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Fraction of examples whose largest label-word logit is the true class, per candidate."""
    return (logits.argmax(-1) == labels[None, :]).mean(-1)


def neg_acc(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Minus the accuracy: a loss to minimise that only counts right answers."""
    return -accuracy(logits, labels)


def f1(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Binary F1 of class 1 (MRPC's metric), per candidate; 0 when class 1 is never hit."""
    pred = logits.argmax(-1)
    tp = ((pred == 1) & (labels == 1)).sum(-1)
    fp = ((pred == 1) & (labels == 0)).sum(-1)
    fn = ((pred == 0) & (labels == 1)).sum(-1)
    return np.where(tp > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)


LOSSES = {"ce": cross_entropy, "hinge": hinge, "neg_acc": neg_acc}


def check_loss(name: str) -> str:
    """``name`` if it is a loss the service knows, else a ValueError listing them."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {sorted(LOSSES)}")
    return name
