"""The weights' fingerprint: a fixed canary request whose answer tells the served weights apart.

A server with the same tokenizer and hidden size but other weights (a fine-tuned variant,
another checkpoint) would pass the checks of the model list and ``/tokenize`` and return wrong
scores. So the first exchange is a fixed *canary* request: the embedded :data:`CANARY_TEXTS`,
scored over :func:`canary_ids` (the first distinct tokens of :data:`PROBE_TEXT`, so any
tokenizer has them). Its answer, renormalised log-probabilities, must match the model's
fingerprint within :data:`FINGERPRINT_TOLERANCE`: a float32 server matches to ~1e-5, a
bfloat16 one to a few hundredths; other weights miss by whole units. The fingerprint is
published with the model (:func:`publish_fingerprint`), or computed once in-process from the
folder's weights and cached (:func:`model_fingerprint`).

A saved prompt names its weights exactly instead (:func:`weights_digest`): a SHA-256 over every
tensor of the folder's safetensors, by name, so a prompt tuned on one checkpoint is never answered
with another, whatever number format either runs in.
"""
from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import torch
from huggingface_hub import snapshot_download
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer

from ..core.settings import cache_dir
from ..lm.loading import model_folder

PROBE_TEXT = "Review: a gripping, funny film. Sentiment:"  # the tokenizer check's text
CANARY_TEXTS = (PROBE_TEXT, "Question: is the sky green? Answer:")  # the fingerprint's fixed request
CANARY_TOKENS = 8  # the canary is scored over at most this many of the probe text's distinct tokens
# Largest |gap| between a server's canary log-probabilities and the fingerprint that passes. It admits
# bfloat16 servers (bf16 keeps 8 bits of mantissa; label-word gaps of 0.04-0.06 were measured against
# float32), while other weights miss by whole units.
FINGERPRINT_TOLERANCE = 0.3
FINGERPRINT_FILE = "bbt_fingerprint.json"  # a fingerprint published with the model, in its folder


def canary_ids(tokenizer) -> list[int]:
    """The tokens the canary is scored over: the first distinct ones of :data:`PROBE_TEXT` (any tokenizer has them)."""
    ids = []
    for t in tokenizer(PROBE_TEXT, add_special_tokens=False)["input_ids"]:
        if t not in ids:
            ids.append(t)
    if len(ids) < 2:
        raise ValueError(f"the probe text {PROBE_TEXT!r} has fewer than two distinct tokens in this tokenizer")
    return ids[:CANARY_TOKENS]


def canary_sequences(tokenizer, table) -> list:
    """The canary request's embedded sequences (the tokenizer's own special tokens included)."""
    return [table[tokenizer(text)["input_ids"]] for text in CANARY_TEXTS]


def compute_fingerprint(folder: str | Path) -> dict:
    """The canary's label log-probabilities computed in-process, in float32, from the folder's weights."""
    folder = Path(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    table = model.get_input_embeddings().weight.detach()
    ids = canary_ids(tokenizer)
    rows = []
    with torch.inference_mode():
        for seq in canary_sequences(tokenizer, table):
            logits = model(inputs_embeds=seq[None]).logits[0, -1, ids].double()
            rows.append(torch.log_softmax(logits, -1).tolist())
    return {"token_ids": ids, "texts": list(CANARY_TEXTS), "logprobs": rows, "dtype": "float32"}


def _weights_key(folder: Path) -> str:
    """Which weights a cached fingerprint belongs to: the folder and its weight files' names, sizes and times."""
    h = hashlib.sha256(str(folder.resolve()).encode())
    for path in sorted([*folder.glob("*.safetensors"), *folder.glob("*.bin")]):
        st = path.stat()
        h.update(f"{path.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


def publish_fingerprint(folder: str | Path) -> Path:
    """Compute the model's fingerprint and write it into its folder (what a provider would publish)."""
    path = Path(folder) / FINGERPRINT_FILE
    path.write_text(json.dumps(compute_fingerprint(folder)))
    return path


def model_fingerprint(folder: str | Path) -> dict | None:
    """The fingerprint published in ``folder``, else one computed once in-process and cached; None without
    the weights (a folder holding only the tokenizer and the embedding table)."""
    folder = Path(folder)
    published = folder / FINGERPRINT_FILE
    if published.is_file():
        return json.loads(published.read_text())
    cached = cache_dir() / "fingerprints" / f"{_weights_key(folder)}.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    try:
        found = compute_fingerprint(folder)
    except (OSError, ValueError) as err:  # no full weights here
        warnings.warn(f"no fingerprint for {folder} ({type(err).__name__}: {err})", stacklevel=2)
        return None
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps(found))
    return found


def weights_folder(model: str | Path) -> Path:
    """The folder holding ``model``'s weights: an offline model's converted copy, a local folder, or a hub
    model's snapshot already downloaded (none is fetched here)."""
    folder = model_folder(str(model))
    if isinstance(folder, Path):
        return folder
    try:
        return Path(snapshot_download(folder, local_files_only=True))
    except Exception as err:  # the hub client raises several kinds of "not here"
        raise ValueError(f"{model!r}: no local copy of its weights to fingerprint ({type(err).__name__})") from None


def weights_digest(model: str | Path) -> str:
    """SHA-256 over every tensor (name, dtype, shape, bytes, in name order) of the model's safetensors.

    Exact: any changed weight changes it; how the tensors are split into files does not. A folder with
    PyTorch ``.bin`` weights only (older hub models) gets the SHA-256 of those files' bytes instead.
    Computed once per set of files and cached (the files' names, sizes and times key it)."""
    folder = weights_folder(model)
    files = sorted(folder.glob("*.safetensors"))
    cached = cache_dir() / "fingerprints" / f"{_weights_key(folder)}.sha256"
    if cached.is_file():
        return cached.read_text().strip()
    if not files:
        return _files_digest(folder, cached)
    tensors = {}
    for path in files:
        with safe_open(str(path), "pt") as f:
            tensors.update({key: path for key in f.keys()})
    h = hashlib.sha256()
    for key in sorted(tensors):
        with safe_open(str(tensors[key]), "pt") as f:
            t = f.get_tensor(key).contiguous()
        h.update(f"{key}:{t.dtype}:{tuple(t.shape)}:".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    digest = h.hexdigest()
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_text(digest)
    return digest


def _files_digest(folder: Path, cached: Path) -> str:
    """SHA-256 of the bytes of a folder's ``*.bin`` weight files, in name order (cached at ``cached``)."""
    files = sorted(folder.glob("*.bin"))
    if not files:
        raise ValueError(f"{folder} holds no weights (*.safetensors or *.bin) to fingerprint")
    h = hashlib.sha256()
    for path in files:
        h.update(f"{path.name}:".encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                h.update(block)
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_text(h.hexdigest())
    return h.hexdigest()
