"""The frozen language model that sits behind the black box, and the few facts about it the black box needs.

Two kinds of model are supported, as in the papers:

* a **masked LM** (RoBERTa, BERT: the papers' ``roberta-large``): the class is read from
  the label words' logits at the ``<mask>`` token;
* a **causal LM** (Llama, Gemma, GPT-2 families): the class is read from the label words'
  logits for the next token after the input.

Loading (hub names, local folders, the offline GGUF model) is :mod:`bbt_mini.lm.loading`; the
tiny random stand-ins of the tests and the benchmark are :mod:`bbt_mini.lm.tiny`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .encoding import single_token_id


@dataclass
class LanguageModel:
    """A frozen model with its tokenizer, and the few facts about it the black box needs."""

    name: str
    kind: str  # "masked" or "causal"
    model: nn.Module
    tokenizer: object
    device: torch.device
    dtype: torch.dtype

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    @property
    def num_layers(self) -> int:
        return self.model.config.num_hidden_layers

    @property
    def mask_token(self) -> str | None:
        """The tokenizer's mask token (masked LMs), or ``None``."""
        return self.tokenizer.mask_token if self.kind == "masked" else None

    @property
    def max_length(self) -> int | None:
        """The most tokens one input may hold (``None``: no stated limit).

        ``max_position_embeddings`` counts position rows, not usable positions: RoBERTa-style
        embeddings (RoBERTa, XLM-R; they have a ``padding_idx``) number real tokens from
        ``padding_idx + 1``, so the first ``padding_idx + 1`` rows (2 for RoBERTa: 514 rows,
        512 tokens) are never used by a token. BERT and causal LMs number from 0.
        """
        rows = getattr(self.model.config, "max_position_embeddings", None)
        if rows is None:
            return None
        padding_idx = getattr(getattr(self.body, "embeddings", None), "padding_idx", None)
        return rows - (padding_idx + 1) if padding_idx is not None else rows

    @property
    def body(self) -> nn.Module:
        """The transformer without its output head (``LlamaModel``, ``RobertaModel``...)."""
        return self.model.base_model

    @property
    def layers(self) -> nn.ModuleList:
        """The list of transformer blocks, found by its length (no per-family table)."""
        for module in self.body.modules():
            if isinstance(module, nn.ModuleList) and len(module) == self.num_layers:
                return module
        raise TypeError(f"cannot find the {self.num_layers} transformer layers of {type(self.model).__name__}")

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Word embeddings of token ids, through the model's own module (Gemma scales them there)."""
        return self.model.get_input_embeddings()(ids.to(self.device))

    def token_id(self, word: str) -> int:
        """The single token id of a label word, or a clear error naming how the word splits."""
        return single_token_id(self.tokenizer, word, self.name)

    def head_logits(self, hidden: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
        """Logits of ``token_ids`` only, from final hidden states ``hidden`` of shape (N, hidden).

        Causal LMs: the rows of the output embedding (plus soft-capping where the model has
        it). Masked LMs: the model's own LM head on these N vectors, then the label columns.
        """
        if self.kind == "causal":
            out = self.model.get_output_embeddings()
            logits = hidden @ out.weight[token_ids].T
            if getattr(out, "bias", None) is not None:
                logits = logits + out.bias[token_ids]
            cap = getattr(self.model.config, "final_logit_softcapping", None)
            if cap:
                logits = torch.tanh(logits / cap) * cap
            return logits
        head = getattr(self.model, "lm_head", None) or getattr(self.model, "cls", None)
        if head is None:
            raise TypeError(f"cannot find the LM head of {type(self.model).__name__}")
        return head(hidden)[:, token_ids]
