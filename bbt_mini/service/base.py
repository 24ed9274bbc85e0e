"""What every black box publishes, checks and returns: one copy for the in-process and the remote service.

:class:`Service` is what a tuner may use of a black box, and both
:class:`bbt_mini.service.blackbox.BlackBox` and :class:`bbt_mini.service.remote.RemoteService`
satisfy it; :class:`ServiceBase` holds what the two publish the same way (from the label words
and the provider's tokenizer). A provider refuses a bad request before it spends anything: an
unknown loss, label words that are not distinct single tokens, prompts of the wrong shape or
with NaN, a request over the budget, an example that with its prompt exceeds the model's length
limit. Both services call the ``check_*`` functions here, so the two refuse the same requests
with the same messages.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from ..lm.encoding import Batch, encode

__all__ = ["BudgetExhausted", "Meter", "Response", "Service", "ServiceBase", "check_budget", "check_label_ids",
           "check_length", "check_prompts"]


@dataclass
class Meter:
    """What the service has been used for, as a provider would bill it."""

    calls: int = 0  # candidate prompts x batches of examples (the papers' API calls)
    requests: int = 0  # times the service was invoked (one population = one request)
    examples: int = 0  # (candidate, example) pairs scored
    tokens: int = 0  # tokens processed, prompt vectors included
    wall_s: float = 0.0  # seconds spent inside the service
    bytes_up: int = 0  # prompts (float32) and texts (UTF-8) sent by the client
    bytes_down: int = 0  # logits and losses (float32) sent back

    def snapshot(self) -> dict:
        return asdict(self)


@dataclass
class Response:
    """What one request returns: ``logits`` (n, examples, classes) and ``loss`` (n,)."""

    logits: np.ndarray
    loss: np.ndarray


@runtime_checkable
class Service(Protocol):
    """A black box as a tuner sees it: what the provider publishes, and the call.

    The model's name and kind (``"masked"`` or ``"causal"``), the number format and device (or
    server) it runs on, its mask token, hidden size, number of layers and length limit (``None``:
    no stated limit), its vocabulary size and tokenizer, some word embeddings (BBT's ``p0``), the
    statistics of its word embeddings and hidden states (BBTv2's normal sampler), the label words
    and loss it scores with, its budget and :class:`Meter`, and the call: ``n`` candidate prompts
    on a batch of examples, ``n`` API calls, one :class:`Response`.
    """

    label_words: tuple[str, ...]
    loss: str
    budget: int | None
    meter: Meter
    model_name: str
    kind: str
    mask_token: str | None
    dtype: str
    device: str
    hidden_size: int
    num_layers: int
    max_length: int | None
    num_classes: int
    vocab_size: int

    def token_ids(self, text: str) -> list[int]: ...

    def token_strings(self, token_ids: Sequence[int]) -> list[str]: ...

    def token_embeddings(self, token_ids: Sequence[int]) -> np.ndarray: ...

    def embedding_stats(self) -> tuple[float, float]: ...

    def hidden_stats(self, batch: Batch, clip_rounds: int = 5) -> np.ndarray: ...

    def encode(self, texts: Sequence, labels: Sequence[int]) -> Batch: ...

    def __call__(self, prompts, batch: Batch, loss: str | None = None, base=None) -> Response: ...


class ServiceBase:
    """What every service publishes the same way, from ``label_words``, ``kind`` and the provider's
    tokenizer (``_tokenizer``, kept private), which a subclass sets."""

    label_words: tuple[str, ...]
    kind: str

    @property
    def num_classes(self) -> int:
        return len(self.label_words)

    def token_ids(self, text: str) -> list[int]:
        """The token ids of ``text``, without special tokens (how the provider's tokenizer splits it)."""
        return self._tokenizer(text, add_special_tokens=False)["input_ids"]

    def token_strings(self, token_ids: Sequence[int]) -> list[str]:
        """The vocabulary entries of some token ids."""
        return self._tokenizer.convert_ids_to_tokens(list(token_ids))

    def encode(self, texts: Sequence, labels: Sequence[int]) -> Batch:
        """Tokenise examples once. ``texts``: strings (the prompt goes before each), or
        ``(before, after)`` pairs (causal LMs: the prompt goes between; ``before`` is cached)."""
        return encode(self._tokenizer, self.kind, texts, labels, self.num_classes)


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
