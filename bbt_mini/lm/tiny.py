"""Tiny random stand-ins for the real model: the unit tests' models and the benchmark's shapes.

Their outputs are noise: they test plumbing (special tokens, read-outs, padding, hooks, the
prompt cache) and time the forward pass at a model's shape, never results. A word-level
tokenizer over :data:`TINY_VOCAB` stands in for a real one.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (
    BertConfig,
    BertForMaskedLM,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    RobertaConfig,
    RobertaForMaskedLM,
)

from .encoding import Batch
from .models import LanguageModel

TINY_VOCAB = ("<s> <pad> </s> <unk> <mask> . , ! ? a an the it was is this that movie film story plot acting "
              "good great bad awful terrible fine dull fun boring not very really and but of to in news sports "
              "business world tech yes no maybe negative positive "
              # capitalised label words of the masked templates (BBC News, pair tasks), appended
              "Business Entertainment Politics Sports Tech Yes No").split()


def word_tokenizer(kind: str = "masked", bos: bool = True):
    """A word-level tokenizer over :data:`TINY_VOCAB` (tiny test models and timing stand-ins).

    ``masked``: ``<s> text </s>`` with a ``<mask>`` token, as RoBERTa; ``causal``: ``<s> text``
    (a BOS token, as Llama), or with ``bos=False`` the text alone (as SmolLM2 and GPT-2), no mask
    token. Words outside the vocabulary become ``<unk>``.
    """
    vocab = {w: i for i, w in enumerate(TINY_VOCAB)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    if kind == "masked":
        core.post_processor = processors.TemplateProcessing(single="<s> $A </s>",
                                                            special_tokens=[("<s>", 0), ("</s>", 2)])
        return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", cls_token="<s>", pad_token="<pad>",
                                       eos_token="</s>", sep_token="</s>", unk_token="<unk>", mask_token="<mask>")
    if bos:
        core.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", pad_token="<pad>", eos_token="</s>",
                                   unk_token="<unk>")


# The tiny models' embedding tables have more rows than the word-level tokenizer has words (as many real
# models pad theirs): BBT's p0 is made of tokens 1000.., which must exist (up to L = 100).
TINY_SHAPE = dict(vocab_size=1100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=64, pad_token_id=1)


def tiny_random_masked_lm(folder: str | Path, family: str = "roberta", seed: int = 0) -> Path:
    """Save a tiny randomly initialised masked LM (2 layers) and a word-level tokenizer to ``folder``.

    Only for checking the masked-LM road without the hub: its outputs are noise, so it
    tests plumbing (special tokens, the mask read-out, padding, deep-prompt hooks), never
    results. Words outside its small vocabulary become ``<unk>``.
    """
    folder = Path(folder)
    torch.manual_seed(seed)
    if family == "roberta":
        model = RobertaForMaskedLM(RobertaConfig(max_position_embeddings=130, architectures=None, **TINY_SHAPE))
    elif family == "bert":
        model = BertForMaskedLM(BertConfig(max_position_embeddings=128, architectures=None, **TINY_SHAPE))
    else:
        raise ValueError(f"unknown family {family!r}; choose 'roberta' or 'bert'")
    model.save_pretrained(folder)
    word_tokenizer("masked").save_pretrained(folder)
    return folder


def tiny_random_causal_lm(folder: str | Path, seed: int = 0, bos: bool = True) -> Path:
    """Save a tiny randomly initialised causal LM (Llama, 2 layers) and a word-level tokenizer.

    The causal counterpart of :func:`tiny_random_masked_lm`, for the same purpose: plumbing
    (BOS head, prompt cache, placement between, deep prompts) at a fraction of SmolLM2's cost.
    ``bos=False``: a tokenizer that adds no BOS token (as SmolLM2's).
    """
    folder = Path(folder)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(num_key_value_heads=1, max_position_embeddings=256, bos_token_id=0,
                                         eos_token_id=2, tie_word_embeddings=False, **TINY_SHAPE))
    model.save_pretrained(folder)
    word_tokenizer("causal", bos).save_pretrained(folder)
    return folder


# Configurations of real models, for random-weight timing runs without the hub.
SHAPES = {
    "roberta-large-shape": dict(family="roberta", vocab_size=50265, hidden_size=1024, num_hidden_layers=24,
                                num_attention_heads=16, intermediate_size=4096, max_position_embeddings=514),
    "smollm2-shape": dict(family="llama", vocab_size=49152, hidden_size=576, num_hidden_layers=30,
                          num_attention_heads=9, num_key_value_heads=3, intermediate_size=1536,
                          max_position_embeddings=8192, tie_word_embeddings=True),
}


def random_shape_model(shape: str, device: torch.device, dtype: torch.dtype, seed: int = 0,
                       **overrides) -> LanguageModel:
    """A model of a real shape with random weights, and a stand-in tokenizer (timing only).

    ``overrides`` change the shape (tests use ``num_hidden_layers=2``)."""
    spec = {**SHAPES[shape], **overrides}
    family = spec.pop("family")
    torch.manual_seed(seed)
    if family == "roberta":
        model = RobertaForMaskedLM(RobertaConfig(pad_token_id=1, **spec))
        kind = "masked"
    else:
        model = LlamaForCausalLM(LlamaConfig(**spec))
        kind = "causal"
    model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
    # A stand-in tokenizer: pads with id 1, masks with id 4, knows the label words of SHAPE_WORDS.
    return LanguageModel(shape, kind, model, word_tokenizer(kind), device, dtype)


SHAPE_WORDS = ("bad", "good")  # label words of the random-weight models (in the stand-in tokenizer)


def synthetic_batch(lm: LanguageModel, examples: int, tokens: int, classes: int, seed: int = 0) -> Batch:
    """``examples`` sequences of ``tokens`` random token ids (mask token for masked LMs)."""
    rng = np.random.default_rng(seed)
    pieces = [rng.integers(5, 1000, size=tokens).tolist() for _ in range(examples)]
    head = [0] if lm.kind == "masked" else []
    readout = np.full(examples, tokens - 1)
    if lm.kind == "masked":
        for p in pieces:
            p[-2] = lm.tokenizer.mask_token_id
        readout[:] = tokens - 2
    return Batch(labels=rng.integers(0, classes, size=examples), text_bytes=examples * tokens * 4, pieces=pieces,
                 readout=readout, head=head)
