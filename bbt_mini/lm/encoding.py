"""Examples as the service holds them: tokenised once, grouped by length, padded per group.

A :class:`Batch` is built once per set of examples (:meth:`bbt_mini.service.blackbox.BlackBox.encode`)
and reused by every API call: the text never goes through the tokenizer again. Each example
is split into the token ids before the prompt (``head``, or ``before`` when the prompt goes
between two texts) and after it (``pieces``), with the read-out position inside its piece
(the ``<mask>`` of a masked LM, the last token of a causal LM).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch


@dataclass
class Batch:
    """Examples encoded once. Build with :meth:`BlackBox.encode`; reuse across calls."""

    labels: np.ndarray
    text_bytes: int  # UTF-8 bytes of the texts: sent with every call
    pieces: list  # per example: token ids of the text (or of the part after the prompt)
    readout: np.ndarray  # per example: index of the read-out token within its piece
    before: list | None = None  # per example: ids before the prompt (placement "between")
    head: list = field(default_factory=list)  # leading special tokens shared by all examples
    # The texts' keys/values before the prompt (placement "between"), kept by the service up to its
    # ``cache_bytes``: {(group, dtype, device): (keys/values, mask)}.
    _cache: dict = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.labels)

    def lengths(self) -> np.ndarray:
        """Tokens of each example without the prompt and without ``head``."""
        return np.array([len(p) + (len(self.before[i]) if self.before else 0) for i, p in enumerate(self.pieces)])

    def prefix(self, i: int) -> list:
        """Example ``i``'s token ids before the prompt: its ``before`` text (placement "between"), else ``head``."""
        return self.before[i] if self.before is not None else self.head

    def full_ids(self, i: int) -> list:
        """Example ``i``'s whole token ids without a prompt: what goes before it, then its piece."""
        return self.prefix(i) + self.pieces[i]

    def cache_bytes(self) -> int:
        """Bytes held by the cached keys/values."""
        return sum(_kv_bytes(kv) for kv, _ in self._cache.values())

    def cached(self, key: tuple):
        """The cached keys/values and mask stored under ``key``, or ``None``."""
        return self._cache.get(key)

    def keep(self, key: tuple, entry: tuple, max_bytes: int) -> bool:
        """Store ``entry`` (keys/values, mask) under ``key`` if the cache stays within ``max_bytes``."""
        if self.cache_bytes() + _kv_bytes(entry[0]) > max_bytes:
            return False
        self._cache[key] = entry
        return True


def single_token_id(tokenizer, word: str, model: str) -> int:
    """The single token id of a label word, or a clear error naming how the word splits."""
    ids = tokenizer(word, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ValueError(f"label word {word!r} is not a single token for {model}: it splits into "
                         f"{tokenizer.convert_ids_to_tokens(ids)}. Choose a word that is one token (for most "
                         "tokenizers, mind the leading space).")
    return ids[0]


def _kv_bytes(kv: list) -> int:
    return sum(t.numel() * t.element_size() for pair in kv for t in pair)


def encode(tokenizer, kind: str, texts: Sequence, labels: Sequence[int], num_classes: int) -> Batch:
    """Tokenise examples once. ``texts``: strings (the prompt goes before each), or
    ``(before, after)`` pairs (causal LMs: the prompt goes between; ``before`` is cached)."""
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
    if len(texts) == 0:
        raise ValueError("a batch needs at least one example")
    labels = np.asarray(labels, dtype=np.int64)
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels must lie in 0..{num_classes - 1}; got {sorted(set(labels.tolist()))}")
    between = not isinstance(texts[0], str)
    if between and kind != "causal":
        raise ValueError("a prompt placed between two texts is offered for causal LMs only")
    specials = set(tokenizer.all_special_ids)
    heads, pieces, before, readout = [], [], [], []
    for t in texts:
        if between:
            b, a = t
            ids_b = tokenizer(b)["input_ids"]
            ids_a = tokenizer(a, add_special_tokens=False)["input_ids"]
            if not ids_a:
                raise ValueError(f"the text after the prompt is empty for {t!r}")
            before.append(ids_b)
            pieces.append(ids_a)
            readout.append(len(ids_a) - 1)
            continue
        ids = tokenizer(t)["input_ids"]
        head = ids[:1] if ids and ids[0] in specials and ids[0] != tokenizer.mask_token_id else []
        heads.append(head)
        piece = ids[len(head):]
        pieces.append(piece)
        if kind == "masked":
            where = [i for i, x in enumerate(piece) if x == tokenizer.mask_token_id]
            if len(where) != 1:
                raise ValueError(f"a masked-LM input needs exactly one mask token; found {len(where)} in {t!r}")
            readout.append(where[0])
        else:
            readout.append(len(piece) - 1)
    if heads and any(h != heads[0] for h in heads):
        raise ValueError("examples start with different special tokens")
    text_bytes = sum(len((t if isinstance(t, str) else "".join(t)).encode()) for t in texts)
    return Batch(labels=labels, text_bytes=text_bytes, pieces=pieces, readout=np.asarray(readout),
                 before=before if between else None, head=heads[0] if heads else [])


def length_groups(batch: Batch, order: np.ndarray, group_size: int, max_tokens: int, prompt_length: int = 0) -> list:
    """Examples sorted by length, cut into groups of ``group_size``.

    A group also stays within ``max_tokens`` with the prompt in front of every example:
    in-context learning sends a prompt of a thousand tokens or more, and a thousand test
    examples behind it in one forward would need tens of GB on a GPU.
    """
    lengths = batch.lengths()[order]
    sort = np.argsort(lengths, kind="stable")
    order, lengths = order[sort], lengths[sort]
    groups, i = [], 0
    while i < len(order):
        widest = lengths[min(i + group_size, len(order)) - 1] + prompt_length + len(batch.head)
        size = max(1, min(group_size, max_tokens // widest))
        groups.append(order[i:i + size])
        i += size
    return groups


def pad(tokenizer, seqs: list, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id lists padded on the right to the longest: (ids, attention mask), both (len(seqs), T)."""
    out = tokenizer.pad({"input_ids": seqs}, padding=True, padding_side="right", return_tensors="pt")
    return out["input_ids"].to(device), out["attention_mask"].to(device)
