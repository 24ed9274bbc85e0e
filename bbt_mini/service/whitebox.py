"""The box opened on purpose: the model's weights, for the baselines that need gradients.

Black-box tuning never sees the model. Its references do: prompt tuning (Lester et al.,
2021) back-propagates through the model into the prompt, and Feature-MLP reads the
model's hidden states. They are white-box *on purpose*, to measure what the boundary
costs, and they get the model only through :class:`WhiteBox`, built from a service with
:meth:`WhiteBox.behind`. The forward is the service's own (:class:`bbt_mini.service.forward.Forward`),
so the same prompt gives the same logits on both sides, here with gradients.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..lm.encoding import Batch, encode
from ..lm.loading import load_model
from ..lm.models import LanguageModel
from .blackbox import BlackBox, model_behind
from .forward import Forward


class WhiteBox:
    """A frozen model with a service's read-out, differentiable and with its hidden states."""

    def __init__(self, lm: LanguageModel, label_words: Sequence[str], *, group_size: int | None = None,
                 max_tokens: int | None = None):
        self.lm = lm
        self.label_words = tuple(label_words)
        label_ids = torch.tensor([lm.token_id(w) for w in label_words], device=lm.device)
        # The service's defaults (see BlackBox), and no prompt cache: every forward is a plain one.
        self.forward = Forward(lm, label_ids, group_size=group_size, max_tokens=max_tokens, cache_prompt=False)

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
                ids, mask = self.forward.pad([batch.full_ids(i) for i in idx])
                h = self.lm.body(input_ids=ids, attention_mask=mask).last_hidden_state
                pos = torch.as_tensor(batch.readout[idx] + np.array([len(batch.prefix(i)) for i in idx]))
                out[torch.as_tensor(idx)] = h[torch.arange(len(idx)), pos.to(h.device)].float().cpu()
        return out


# ----------------------------------------------------------------------------- the residual stream


def _is_norm(module: torch.nn.Module) -> bool:
    """A normalisation module: LayerNorm, or a model's own ``...Norm`` class (``LlamaRMSNorm``...)."""
    return isinstance(module, torch.nn.LayerNorm) or type(module).__name__.endswith("Norm")


def _is_linear(module: torch.nn.Module) -> bool:
    return isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D"  # GPT-2's linear maps


def _writes_back(blocks: list) -> torch.nn.Module:
    """The last linear map inside ``blocks``: the projection that writes back to the stream."""
    maps = [m for block in blocks for m in block.modules() if _is_linear(m)]
    if not maps:
        raise TypeError(f"no linear map inside {[type(b).__name__ for b in blocks]}")
    return maps[-1]


def residual_branches(lm: LanguageModel) -> list[tuple[torch.nn.Module, torch.nn.Module]]:
    """For each transformer layer, the two maps whose outputs the layer adds to its input: the
    attention's output projection and the MLP's last linear map.

    Found by the layer's structure, not by attribute names: a layer's sub-blocks that hold
    weights and are not normalisations are, in the order the model registers them, the
    attention block, then the MLP (one block in Llama, GPT-2, Gemma: ``self_attn``/``mlp``;
    two in BERT and RoBERTa: ``intermediate`` then ``output``). Each branch ends in a linear
    map back to the hidden size, whose output is what the branch adds.
    """
    out = []
    for i, layer in enumerate(lm.layers):
        blocks = [m for m in layer.children()
                  if not _is_norm(m) and any(True for _ in m.parameters(recurse=True))]
        if len(blocks) < 2:
            raise TypeError(f"layer {i} of {lm.name} ({type(layer).__name__}) has {len(blocks)} weighted "
                            "sub-blocks besides its norms; expected an attention block and an MLP")
        out.append((_writes_back(blocks[:1]), _writes_back(blocks[1:])))
    return out


@dataclass
class ResidualStream:
    """One forward's residual stream, measured with hooks (see :func:`residual_stream`)."""

    h0: torch.Tensor  # (T, hidden): the stream entering the first layer
    branches: list  # 2 per layer, (T, hidden) each: what the attention, then the MLP, write
    hN: torch.Tensor  # (T, hidden): the stream leaving the last layer
    post_norm: bool  # True when each layer returns a normalised sum (BERT, RoBERTa)

    @property
    def relative_error(self) -> float:
        """max |h0 + sum of the branches - hN|, relative to max |hN|."""
        recon = self.h0 + sum(self.branches)
        return ((recon - self.hN).abs().max() / self.hN.abs().max()).item()


def _first(x):
    return x[0] if isinstance(x, tuple) else x


def residual_stream(lm: LanguageModel, ids: torch.Tensor) -> ResidualStream:
    """Run the model on one sequence ``ids`` (1, T); record with forward hooks the
    stream entering layer 1 (``h0``), every branch's output (:func:`residual_branches`)
    and the stream leaving the last layer (``hN``).

    A layer is *post-norm* when what it returns is the output of one of its own
    normalisation modules (BERT, RoBERTa); then ``h0 + sum(branches)`` is not ``hN``.
    Pre-norm layers (Llama, SmolLM2) return the plain sum, and it is, up to rounding.
    """
    if ids.dim() != 2 or ids.shape[0] != 1:
        raise ValueError("residual_stream takes one sequence of shape (1, T), "
                         f"got {tuple(ids.shape)}")
    layers = lm.layers
    branches, ends, norm_outs, handles = [], {}, [], []

    def keep_branch(module, args, out):
        branches.append(_first(out)[0].float())

    def keep_input(module, args, kwargs):
        ends["h0"] = (args[0] if args else kwargs["hidden_states"])[0].float()

    def keep_output(module, args, out):
        ends["hN"] = _first(out)[0].float()

    def keep_norm(module, args, out):
        norm_outs.append(_first(out)[0].float())

    try:
        for attn, mlp in residual_branches(lm):
            handles += [attn.register_forward_hook(keep_branch),
                        mlp.register_forward_hook(keep_branch)]
        handles += [layers[0].register_forward_pre_hook(keep_input, with_kwargs=True),
                    layers[-1].register_forward_hook(keep_output)]
        handles += [m.register_forward_hook(keep_norm)
                    for m in layers[-1].modules() if _is_norm(m)]
        with torch.inference_mode():
            lm.body(input_ids=ids.to(lm.device))
    finally:
        for h in handles:
            h.remove()
    hN = ends["hN"]
    post_norm = any(out.shape == hN.shape and torch.equal(out, hN) for out in norm_outs)
    return ResidualStream(ends["h0"], branches, hN, post_norm)
