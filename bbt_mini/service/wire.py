"""The wire format of the remote service: what the client holds and what it sends.

Today's OpenAI-compatible servers take the whole embedded sequence (``prompt_embeds``: a
base64 ``torch.save`` of a ``(sequence, hidden)`` tensor), not ``z``. So the client keeps the
model's tokenizer and input-embedding table (public for open models), never the transformer:
it embeds ``[before, prompt, text]`` itself (:func:`sequences`) and sends that (:func:`wire_bytes`).
"""
from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

from ..lm.encoding import Batch
from ..lm.loading import OFFLINE_MODELS, model_folder


def client_model(model: str | Path) -> Path:
    """The folder holding the model's tokenizer and weights (only its embedding table is read)."""
    folder = model_folder(str(model))
    if isinstance(folder, Path):
        return folder
    raise ValueError(f"the client needs the model's tokenizer and embedding table: {model!r} is neither an offline "
                     f"model ({sorted(OFFLINE_MODELS)}) nor a local folder")


def embedding_table(folder: Path):
    """The input-embedding matrix (vocab, hidden) from the folder's safetensors, without the transformer."""
    files = sorted(folder.glob("*.safetensors"))
    for path in files:
        with safe_open(str(path), "pt") as f:
            for key in f.keys():
                if key.endswith(("embed_tokens.weight", "wte.weight", "word_embeddings.weight")):
                    return f.get_tensor(key)
    raise ValueError(f"no input-embedding table (embed_tokens / wte / word_embeddings) in {folder}'s safetensors")


def sequences(table: torch.Tensor, prompts: np.ndarray, batch: Batch, dtype: torch.dtype) -> list:
    """The embedded sequences ``[head, prompt, text]`` (or ``[before, prompt, after]``), candidate-major."""
    seqs = []
    for p in prompts:
        p = torch.from_numpy(np.ascontiguousarray(p, dtype=np.float32))
        for i, piece in enumerate(batch.pieces):
            seqs.append(torch.cat([table[batch.prefix(i)], p, table[piece]]).to(dtype))
    return seqs


def wire_bytes(tensor) -> str:
    """A tensor as vLLM's ``prompt_embeds`` takes it: base64 of its ``torch.save``."""
    buf = io.BytesIO()
    torch.save(tensor.contiguous(), buf)
    return base64.b64encode(buf.getvalue()).decode("ascii")
