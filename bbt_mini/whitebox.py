"""The box opened on purpose: the model's weights, for the baselines that need gradients.

Black-box tuning never sees the model. Its references do: prompt tuning (Lester et al.,
2021) back-propagates through the model into the prompt, and Feature-MLP reads the
model's hidden states. They are white-box *on purpose*, to measure what the boundary
costs, and they get the model only through :class:`WhiteBox`, built from a service with
:meth:`WhiteBox.behind`. The forward is the service's own (:class:`bbt_mini.forward.Forward`),
so the same prompt gives the same logits on both sides, here with gradients.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .blackbox import BlackBox, model_behind
from .encoding import Batch, encode
from .forward import Forward
from .models import LanguageModel, load_model


class WhiteBox:
    """A frozen model with a service's read-out, differentiable and with its hidden states."""

    def __init__(self, lm: LanguageModel, label_words: Sequence[str], *, group_size: int | None = None,
                 max_tokens: int | None = None):
        self.lm = lm
        self.label_words = tuple(label_words)
        label_ids = torch.tensor([lm.token_id(w) for w in label_words], device=lm.device)
        gpu = lm.device.type == "cuda"
        # The service's defaults (see BlackBox), and no prompt cache: every forward is a plain one.
        self.forward = Forward(lm, label_ids, group_size=group_size or (1_000_000 if gpu else 4),
                               max_tokens=max_tokens or (262_144 if gpu else 4_096), cache_prompt=False,
                               cache_bytes=2**29)

    @classmethod
    def behind(cls, service: BlackBox, dtype: torch.dtype | None = None) -> "WhiteBox":
        """The model behind ``service`` with its label words; ``dtype``: a copy in that dtype (float32
        for gradients), loaded by name on the same device."""
        lm = model_behind(service)
        if dtype is not None and dtype != lm.dtype:
            lm = load_model(lm.name, device=lm.device, dtype=dtype)
        return cls(lm, service.label_words)

    @property
    def hidden_size(self) -> int:
        return self.lm.hidden_size

    @property
    def mask_token(self) -> str | None:
        return self.lm.mask_token

    def encode(self, texts: Sequence, labels: Sequence[int]) -> Batch:
        """Examples tokenised as the service does (see :meth:`BlackBox.encode`)."""
        return encode(self.lm.tokenizer, self.lm.kind, texts, labels, len(self.label_words))

    def logits(self, prompts: torch.Tensor, batch: Batch) -> torch.Tensor:
        """(n, B, C) label-word logits of soft prompts (n, L, H), differentiable in ``prompts``."""
        return self.forward.logits(prompts.to(self.lm.device, self.lm.dtype), batch)

    def features(self, batch: Batch) -> torch.Tensor:
        """The final hidden state at each example's read-out position, no prompt: (B, hidden), float32.

        With the prompt placed between two texts, the example is ``before + after`` (the whole text).
        """
        out = torch.empty(len(batch), self.hidden_size)
        with torch.inference_mode():
            for idx in self.forward.groups(batch):
                befores = [batch.before[i] if batch.before else [] for i in idx]
                ids, mask = self.forward.pad([batch.head + b + batch.pieces[i] for b, i in zip(befores, idx)])
                h = self.lm.body(input_ids=ids, attention_mask=mask).last_hidden_state
                pos = torch.as_tensor(batch.readout[idx] + len(batch.head) + np.array([len(b) for b in befores]))
                out[torch.as_tensor(idx)] = h[torch.arange(len(idx)), pos.to(h.device)].float().cpu()
        return out
