"""What every black box checks before it computes: one copy for the in-process and the remote service.

A provider refuses a bad request before it spends anything: an unknown loss, label words
that are not distinct single tokens, prompts of the wrong shape or with NaN, a request over
the budget, an example that with its prompt exceeds the model's length limit. Both
:class:`bbt_mini.service.blackbox.BlackBox` and :class:`bbt_mini.service.remote.RemoteService`
call these functions, so the two refuse the same requests with the same messages.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..lm.encoding import Batch

__all__ = ["BudgetExhausted", "check_budget", "check_label_ids", "check_length", "check_prompts"]


class BudgetExhausted(RuntimeError):
    """Raised before a request that would spend more API calls than the budget allows."""


def check_label_ids(label_words: Sequence[str], label_ids: Sequence[int]) -> None:
    """At least two label words, each its own token."""
    if len(label_words) < 2:
        raise ValueError("a classifier needs at least two label words")
    if len(set(int(i) for i in label_ids)) != len(label_ids):
        raise ValueError(f"label words {tuple(label_words)} map to repeated tokens")


def check_budget(budget: int | None, spent: int, n: int) -> None:
    """Refuse a request of ``n`` calls that the budget cannot pay for."""
    if budget is not None and spent + n > budget:
        raise BudgetExhausted(f"this request needs {n} API calls but only {budget - spent} of the budget of "
                              f"{budget} are left")


def check_prompts(prompts: np.ndarray, hidden: int, layers: int | None = None) -> None:
    """``(n, L, hidden)`` prompts, or ``(n, layers, L, hidden)`` deep ones where ``layers`` is given; finite."""
    ok = (prompts.ndim == 3 and prompts.shape[-1] == hidden) or \
        (layers is not None and prompts.ndim == 4 and prompts.shape[1] == layers and prompts.shape[-1] == hidden)
    if not ok:
        deep = "" if layers is None else f" or, for a deep prompt, (n, {layers}, L, {hidden})"
        raise ValueError(f"prompts must have shape (n, L, {hidden}){deep}; got {tuple(prompts.shape)}")
    if prompts.shape[0] == 0:
        raise ValueError("no candidate prompts given")
    if not np.isfinite(prompts).all():
        raise ValueError("prompts contain NaN or inf")


def check_length(batch: Batch, prompt_length: int, limit: int | None, model: str) -> None:
    """Refuse a batch whose longest example with the prompt exceeds the model's ``limit`` (None: no limit)."""
    longest = prompt_length + max(len(batch.full_ids(i)) for i in range(len(batch)))
    if limit is not None and longest > limit:
        raise ValueError(f"the longest example with the prompt has {longest} tokens; {model} takes at most {limit}")
