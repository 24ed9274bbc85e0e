"""The black box: a language model behind a service boundary (Language-Model-as-a-Service).

Read this module to see everything a tuner ever gets from the model. A client hands the
service a batch of candidate soft prompts and a batch of examples; the service returns,
for every candidate, the label words' logits on every example and a loss. No parameters,
no gradients: the model runs in inference mode and never leaves :class:`BlackBox`.

One **API call** is one candidate prompt evaluated on one batch of examples, as in the
papers (Sun et al., 2022a, Sec. 4). The :class:`Meter` counts calls, examples, tokens,
wall time and the bytes a client would send and receive, and an optional budget stops
a run with :class:`BudgetExhausted` before it overspends.

Prompts come in two shapes:

* ``(n, L, hidden)``: a soft prompt of ``L`` vectors in word-embedding space, placed before
  the text (after a leading ``<s>``/``[CLS]``/BOS token if the tokenizer adds one), or
  between two texts: BBT;
* ``(n, layers, L, hidden)``: a deep prompt (BBTv2). Entry 0 is the input prompt as above;
  entry ``l >= 1`` is *added* to the hidden states at the prompt positions as they enter
  layer ``l``.

**What a provider would have to publish** for BBT and BBTv2 to work, and all the tuner may
use (:class:`bbt_mini.service.base.Service`): the model's name and kind (:attr:`BlackBox.model_name`,
:attr:`BlackBox.kind`), the number format and device it runs on, its mask token, hidden size, number of layers and
length limit, its tokenizer (:meth:`BlackBox.token_ids`, :meth:`BlackBox.token_strings`),
some word embeddings (:meth:`BlackBox.token_embeddings`: BBT's ``p0``), the statistics of
its word embeddings and hidden states (:meth:`BlackBox.embedding_stats`,
:meth:`BlackBox.hidden_stats`: BBTv2's normal sampler), and the call itself. The model
stays inside; only :func:`model_behind` opens the box, for the methods that are white-box
on purpose.

Where the work is done: :mod:`bbt_mini.lm.encoding` (tokenising once, length groups),
:mod:`bbt_mini.service.forward` (how a prompt enters the model) and :mod:`bbt_mini.core.metrics` (losses).
"""
from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import torch

from ..core.metrics import LOSSES, check_loss
from ..core.settings import dtype_name
from ..lm.encoding import Batch
from ..lm.models import LanguageModel
from .base import Meter, Response, ServiceBase, check_budget, check_label_ids, check_prompts
from .forward import CACHE_BYTES, Forward

__all__ = ["BlackBox", "Meter", "Response", "model_behind"]

BYTES_PER_FLOAT = 4  # a client sends and receives float32


class BlackBox(ServiceBase):
    """A frozen model as a service: prompts and examples in, label-word logits and loss out.

    Parameters
    ----------
    lm: the model (see :func:`bbt_mini.lm.loading.load_model`); kept private.
    label_words: one word per class, each a single token (``" positive"``...).
    loss: ``"ce"`` (cross-entropy over the label words), ``"hinge"`` or ``"neg_acc"``.
    budget: the most API calls this service will answer (``None``: no limit).
    max_tokens: roughly how many tokens one forward may hold (memory against speed);
        default 4,096 on a CPU and 262,144 on a GPU.
    group_size: examples per length group (sorted by length to cut padding); default 4
        on a CPU, all at once on a GPU.
    cache_prompt: share the prompt's keys/values across examples (causal LMs).
    cache_bytes: the most bytes of keys/values of the texts before a prompt (placement
        "between") kept on one batch for later calls; default 512 MiB.
    """

    def __init__(self, lm: LanguageModel, label_words: Sequence[str], *, loss: str = "ce",
                 budget: int | None = None, max_tokens: int | None = None, group_size: int | None = None,
                 cache_prompt: bool = True, cache_bytes: int = CACHE_BYTES):
        check_loss(loss)
        self._lm = lm
        self._tokenizer = lm.tokenizer
        self.label_words = tuple(label_words)
        ids = [lm.token_id(w) for w in label_words]
        check_label_ids(label_words, ids)
        self.label_ids = torch.tensor(ids, device=lm.device)
        self.loss = loss
        self.budget = budget
        self._forward = Forward(lm, self.label_ids, group_size=group_size, max_tokens=max_tokens,
                                cache_prompt=cache_prompt, cache_bytes=cache_bytes)
        self.meter = Meter()

    # ------------------------------------------------------------------ what a provider publishes

    @property
    def model_name(self) -> str:
        """The model's name, as results record it."""
        return self._lm.name

    @property
    def kind(self) -> str:
        """``"masked"`` (read the class at the mask token) or ``"causal"`` (at the next token)."""
        return self._lm.kind

    @property
    def mask_token(self) -> str | None:
        """The mask token to write into a masked LM's template, or ``None`` (causal LMs)."""
        return self._lm.mask_token

    @property
    def dtype(self) -> str:
        """The number format the model runs in (``"float32"``, ``"bfloat16"``...): results depend on it."""
        return dtype_name(self._lm.dtype)

    @property
    def device(self) -> str:
        """Where the model runs (``"cpu"``, ``"cuda:0"``...), as results and cache keys record it."""
        return str(self._lm.device)

    @property
    def hidden_size(self) -> int:
        return self._lm.hidden_size

    @property
    def num_layers(self) -> int:
        return self._lm.num_layers

    @property
    def max_length(self) -> int | None:
        """The most tokens one input may hold, prompt included (``None``: no stated limit)."""
        return self._lm.max_length

    @property
    def vocab_size(self) -> int:
        """How many rows the input-embedding table has (token ids run from 0 to this minus 1)."""
        return self._lm.model.get_input_embeddings().num_embeddings

    def token_embeddings(self, token_ids: Sequence[int]) -> np.ndarray:
        """Word embeddings of some tokens (what BBT's ``p0`` is made of), float32 (len, hidden)."""
        with torch.inference_mode():
            return self._lm.embed(torch.as_tensor(list(token_ids))).float().cpu().numpy()

    def embedding_stats(self) -> tuple[float, float]:
        """Mean and standard deviation of all word-embedding entries (for BBTv2's sampler)."""
        with torch.inference_mode():
            vocab = self.vocab_size
            e = torch.cat([self._lm.embed(torch.arange(i, min(i + 8192, vocab))).float()
                           for i in range(0, vocab, 8192)])
            return float(e.mean()), float(e.std())

    def hidden_stats(self, batch: Batch, clip_rounds: int = 5) -> np.ndarray:
        """Mean and std of the hidden states entering each layer on ``batch`` (no prompt).

        Returns (layers, 2). Entries are clipped ``clip_rounds`` times to mean +- 3 std
        before the statistics are taken, as BBTv2's code does. Padding is excluded.
        """
        values: list = [[] for _ in range(self.num_layers)]
        with torch.inference_mode():
            for idx in self._forward.groups(batch):
                ids, mask = self._forward.pad([batch.full_ids(i) for i in idx])
                # hidden_states[l] is what enters layer l (entry 0: the embeddings).
                states = self._lm.body(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
                for i in range(self.num_layers):
                    values[i].append(states[i].float()[mask.bool()])
        stats = np.zeros((self.num_layers, 2))
        for i in range(self.num_layers):
            x = torch.cat(values[i]).flatten()
            for _ in range(clip_rounds):
                mu, sd = x.mean(), x.std()
                x = x.clamp(mu - 3 * sd, mu + 3 * sd)
            stats[i] = float(x.mean()), float(x.std())
        return stats

    # ------------------------------------------------------------------ the call

    def __call__(self, prompts, batch: Batch, loss: str | None = None, base=None) -> Response:
        """Evaluate ``n`` candidate prompts on ``batch``: ``n`` API calls.

        ``base``: the ``L`` token ids the prompts' ``p0`` is made of (BBT's default ``p0``). A
        masked LM then runs those tokens through its embedding module and adds each prompt's
        offset from their word embeddings (``A z``) to its output, where the authors add it
        (:mod:`bbt_mini.service.forward`); a causal LM gives the same logits with or without it.
        """
        start = time.perf_counter()
        name = check_loss(loss or self.loss)
        prompts = self._check(prompts)
        n = prompts.shape[0]
        check_budget(self.budget, self.meter.calls, n)
        with torch.inference_mode():
            logits = self._forward.logits(prompts, batch, base).float().cpu().numpy()
        if not np.isfinite(logits).all():
            bad = sorted(set(np.nonzero(~np.isfinite(logits))[0].tolist()))
            raise FloatingPointError(f"the model returned NaN or inf logits for candidate(s) {bad}")
        losses = LOSSES[name](logits, batch.labels)
        m, B, L = self.meter, len(batch), prompts.shape[-2]
        m.calls += n
        m.requests += 1
        m.examples += n * B
        m.tokens += n * (B * L + sum(len(p) for p in batch.pieces) + sum(map(len, batch.before or []))
                         + B * len(batch.head))
        m.bytes_up += n * (prompts[0].numel() * BYTES_PER_FLOAT + batch.text_bytes)
        m.bytes_down += logits.size * BYTES_PER_FLOAT + n * BYTES_PER_FLOAT
        m.wall_s += time.perf_counter() - start
        return Response(logits=logits, loss=losses)

    def _check(self, prompts) -> torch.Tensor:
        p = prompts.detach().cpu().float().numpy() if torch.is_tensor(prompts) else np.asarray(prompts, np.float32)
        check_prompts(p, self.hidden_size, self.num_layers)
        return torch.as_tensor(p).to(self._lm.device, self._lm.dtype)


def model_behind(service: BlackBox) -> LanguageModel:
    """The model a service was built from: the one sanctioned way through the boundary.

    Not part of what a provider publishes. For methods that are white-box on purpose (the
    gradient baselines, :mod:`bbt_mini.service.whitebox`) and for chapters that look inside the model;
    a tuner never calls it.
    """
    return service._lm
