"""How a prompt enters the frozen model: the forward strategies behind the service.

Read :meth:`Forward.logits` first. Candidate prompts travel as one :class:`Prompt` (the
input-level prompt, the deep one or none, and where it goes); a prompt of ``L`` vectors enters
through the model's public API only (no copied modeling code), by one of three strategies:

* **prepend** (:meth:`Forward.prepend`): ``[head, prompt, text]`` as ``inputs_embeds``, every
  (candidate, example) pair in one forward (masked LMs, or causal LMs without the cache);
* **prompt cache** (:meth:`Forward.on_cache`), causal LMs:
  the keys and values of ``[head, prompt]`` are computed once per candidate and passed as
  ``past_key_values`` under every example (exact: the prompt cannot see the text after it);
* **between** (:meth:`Forward.between`), causal LMs: ``[before, prompt, after]``, the keys and
  values of ``before`` computed once per batch and reused by every candidate of every call;
* **deep prompts** (BBTv2, :class:`DeepPrompt`): entry ``l >= 1`` of a prompt of shape
  ``(layers, L, hidden)`` is *added* to the hidden states at the prompt positions as they
  enter layer ``l``, through forward pre-hooks.

**Where the prompt enters a masked LM.** A prompt ``P = A z + p0`` whose ``p0`` is made of
tokens (``base``, their ids) enters a masked LM as the authors' code adds it to RoBERTa
(``models/modeling_roberta.py`` in txsun1997/Black-Box-Tuning, ``cat_or_add="add"``): the
``base`` tokens go through the embedding module (word embedding, position and token-type
embeddings, LayerNorm) and ``P - E[base]`` (``A z``) is added to its output, through a forward
hook on that module (:class:`AfterEmbeddings`). Without ``base`` (``p0`` zeros or from a file),
and in a causal LM, whose embedding module is the word embedding alone, so that adding after it
or before is the same, ``P`` goes in as the input embeddings.
"""
from __future__ import annotations

import inspect
import weakref
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from transformers import DynamicCache

from ..lm.encoding import Batch, length_groups, pad
from ..lm.models import LanguageModel
from .base import check_length


def _cache_name(module: torch.nn.Module) -> str:
    """``cache`` in transformers >= 5.x, ``past_key_values`` before."""
    params = inspect.signature(module.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _kv_tensors(cache) -> list:
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    return list(zip(cache.key_cache, cache.value_cache))


def _new_cache(config, kv: list):
    try:
        cache = DynamicCache(config=config)
    except TypeError:
        cache = DynamicCache()
    for i, (k, v) in enumerate(kv):
        cache.update(k, v, i)
    return cache


def _remove_all(handles: list) -> None:
    for h in handles:
        h.remove()


def _deep_prompt_hook(owner_ref, layer: int):
    """A forward pre-hook on layer ``layer``: add the active deep prompt's entry for this layer."""
    def hook(module, args, kwargs):
        owner = owner_ref()
        if owner is None or owner.active is None:
            return None
        deltas, offset = owner.active
        h = args[0] if args else kwargs["hidden_states"]
        L = deltas.shape[2]
        d = deltas[:, layer]
        if d.shape[0] != h.shape[0]:  # one delta per candidate, repeated over its examples
            d = d.repeat_interleave(h.shape[0] // d.shape[0], 0)
        h = torch.cat([h[:, :offset], h[:, offset:offset + L] + d, h[:, offset + L:]], 1)
        if args:
            return (h, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": h}
    return hook


def _after_embeddings_hook(owner_ref):
    """A forward hook on the embedding module: add the active offsets at the prompt positions."""
    def hook(module, args, out):
        owner = owner_ref()
        if owner is None or owner.active is None:
            return None
        offset, at = owner.active
        if offset.shape[0] != out.shape[0]:  # one offset per candidate, repeated over its examples
            offset = offset.repeat_interleave(out.shape[0] // offset.shape[0], 0)
        L = offset.shape[1]
        return torch.cat([out[:, :at], out[:, at:at + L] + offset.to(out.dtype), out[:, at + L:]], 1)
    return hook


class AfterEmbeddings:
    """Masked LMs: a prompt's offset from its base tokens, added to the embedding module's output.

    While :meth:`adding` is active, ``offset`` (rows, L, hidden) is added at positions
    ``at .. at + L`` of what the embedding module (``embeddings`` of BERT and RoBERTa: word,
    position and token-type embeddings, then LayerNorm) returns: the hidden states entering layer 0
    there are ``LayerNorm(E[base] + position + type) + offset``, as the authors add ``A z``.
    """

    def __init__(self, embeddings: torch.nn.Module):
        self.active: tuple | None = None
        me = weakref.ref(self)
        self._handles = [embeddings.register_forward_hook(_after_embeddings_hook(me))]
        weakref.finalize(self, _remove_all, self._handles)

    @contextmanager
    def adding(self, offset: torch.Tensor | None, at: int):
        """Add ``offset`` during the forwards inside this block (``None``: nothing)."""
        self.active = (offset, at) if offset is not None else None
        try:
            yield
        finally:
            self.active = None


class DeepPrompt:
    """BBTv2's deep prompt, through forward pre-hooks on the transformer layers.

    While :meth:`adding` is active, entry ``l >= 1`` of ``deltas`` (rows, layers, L, hidden)
    is added to the hidden states at positions ``offset .. offset + L`` entering layer ``l``
    (entry 0, the input prompt, goes in with the input embeddings). A forward with more
    rows than ``deltas`` has (candidates x examples) repeats each delta over its examples.
    The hooks do nothing while no deep prompt is active, and go when this object does.
    """

    def __init__(self, layers: torch.nn.ModuleList):
        self.active: tuple | None = None
        me = weakref.ref(self)  # the model must not keep a dropped service alive
        self._handles = [layer.register_forward_pre_hook(_deep_prompt_hook(me, i), with_kwargs=True)
                         for i, layer in enumerate(layers) if i > 0]
        weakref.finalize(self, _remove_all, self._handles)

    @contextmanager
    def adding(self, deltas: torch.Tensor | None, offset: int):
        """Add ``deltas`` during the forwards inside this block (``None``: a shallow prompt)."""
        self.active = (deltas, offset) if deltas is not None else None
        try:
            yield
        finally:
            self.active = None

    def remove(self) -> None:
        _remove_all(self._handles)


@dataclass(frozen=True)
class Prompt:
    """Candidate prompts as one forward takes them: what goes in with the input, what is added inside, and where.

    ``shallow``: (n, L, H), the input-level prompt in word-embedding space. ``deep``: BBTv2's deep
    prompt (n, layers, L, H), whose entry 0 is ``shallow`` and whose entry ``l >= 1`` is added at the
    prompt positions entering layer ``l``; ``None`` for a shallow prompt. ``placement``: ``"prepend"``
    (after the head, before the text) or ``"between"`` (between an example's two texts).
    """

    shallow: torch.Tensor
    deep: torch.Tensor | None
    placement: str
    after: torch.Tensor | None = None  # masked LMs with base tokens: added after the embedding module

    @classmethod
    def of(cls, prompts: torch.Tensor, batch: Batch) -> "Prompt":
        """``prompts`` (n, L, H) or deep ones (n, layers, L, H), placed as ``batch`` was encoded."""
        deep = prompts if prompts.dim() == 4 else None
        return cls(prompts if deep is None else prompts[:, 0], deep, "prepend" if batch.before is None else "between")

    def on(self, under: torch.Tensor) -> "Prompt":
        """The prompt over base tokens whose word embeddings are ``under`` (L, H): ``under`` goes in
        as the input embeddings and ``shallow - under`` is added after the embedding module."""
        n = self.shallow.shape[0]
        return Prompt(under.to(self.shallow.dtype).unsqueeze(0).expand(n, -1, -1), self.deep, self.placement,
                      self.shallow - under.to(self.shallow.dtype))

    def __len__(self) -> int:
        return self.shallow.shape[0]

    @property
    def length(self) -> int:
        """``L``: the prompt's vectors."""
        return self.shallow.shape[1]

    def __getitem__(self, chunk: slice) -> "Prompt":
        """The candidates in ``chunk``."""
        return Prompt(self.shallow[chunk], None if self.deep is None else self.deep[chunk], self.placement,
                      None if self.after is None else self.after[chunk])


# Defaults of a forward on a GPU and on a CPU (see BlackBox): examples per length group and tokens per forward.
GROUP_SIZE = {"cuda": 1_000_000, "cpu": 4}
MAX_TOKENS = {"cuda": 262_144, "cpu": 4_096}
CACHE_BYTES = 2**29  # the most bytes of a batch's text keys/values (placement "between") kept: 512 MiB


class Forward:
    """Label-word logits of prompts on a batch, from a frozen model (with or without gradients).

    ``group_size`` and ``max_tokens``: see :class:`bbt_mini.service.blackbox.BlackBox` (default: the
    device's, :data:`GROUP_SIZE` and :data:`MAX_TOKENS`). ``cache_prompt``: the prompt-cache strategy
    (causal LMs). ``cache_bytes``: the most bytes of a batch's text keys/values (placement "between")
    kept for reuse; past it they are computed per call.

    Three strategies, one method each, picked from :attr:`STRATEGIES` by the prompt's placement and
    ``cache_prompt``; each yields the hidden states at the read-out tokens, group by group:

    * :meth:`prepend`: ``[head, prompt, text]`` in one forward (masked LMs; no cache);
    * :meth:`on_cache`: ``[head, prompt]`` once per candidate, every text on its keys/values
      (causal LMs: the prompt cannot see the text);
    * :meth:`between`: ``[before (cached), prompt, after]`` (causal LMs, placement "between").

    BBTv2's deep prompts ride along in each through :class:`DeepPrompt`.
    """

    def __init__(self, lm: LanguageModel, label_ids: torch.Tensor, *, group_size: int | None = None,
                 max_tokens: int | None = None, cache_prompt: bool = True, cache_bytes: int = CACHE_BYTES):
        self.lm, self.label_ids = lm, label_ids
        device = "cuda" if lm.device.type == "cuda" else "cpu"
        self.group_size = group_size or GROUP_SIZE[device]
        self.max_tokens = max_tokens or MAX_TOKENS[device]
        self.cache_prompt = cache_prompt and lm.kind == "causal"
        self.cache_bytes = cache_bytes
        self.deep = DeepPrompt(lm.layers)
        embeddings = getattr(lm.body, "embeddings", None) if lm.kind == "masked" else None
        self.after_embeddings = AfterEmbeddings(embeddings) if embeddings is not None else None
        self._cache_kw = _cache_name(lm.body)

    def groups(self, batch: Batch, prompt_length: int = 0) -> list:
        """The batch's length groups (index arrays) for a prompt of ``prompt_length``."""
        return length_groups(batch, np.arange(len(batch)), self.group_size, self.max_tokens, prompt_length)

    def pad(self, seqs: list) -> tuple[torch.Tensor, torch.Tensor]:
        return pad(self.lm.tokenizer, seqs, self.lm.device)

    def check_length(self, batch: Batch, prompt_length: int) -> None:
        """Refuse a batch whose longest example with the prompt exceeds the model's length limit."""
        check_length(batch, prompt_length, self.lm.max_length, self.lm.name)

    def logits(self, prompts: torch.Tensor, batch: Batch, base=None) -> torch.Tensor:
        """(n, B, C) label-word logits of ``prompts`` (n, L, H) or deep ones (n, layers, L, H).

        ``base``: the ``L`` token ids the prompt's ``p0`` is made of; a masked LM then takes the
        prompt as the authors do (the module doc), a causal LM ignores it (the same either way).
        Candidates go in chunks that keep a forward within ``max_tokens``; each chunk meets every
        length group of the batch through one strategy, which yields the read-out hidden states.
        """
        prompt = Prompt.of(prompts, batch)
        if base is not None and self.after_embeddings is not None:
            if len(base) != prompt.length or prompt.placement != "prepend":
                raise ValueError(f"base: one token id per prompt vector ({prompt.length}), placed before the text; "
                                 f"got {len(base)} ids, placement {prompt.placement!r}")
            prompt = prompt.on(self.lm.embed(torch.as_tensor(list(base), dtype=torch.long)))
        self.check_length(batch, prompt.length)
        groups = [(idx, *self.pad([batch.pieces[i] for i in idx])) for idx in self.groups(batch, prompt.length)]
        strategy = self.STRATEGIES[prompt.placement, self.cache_prompt]
        out = torch.empty(len(prompt), len(batch), len(self.label_ids), device=self.lm.device)
        for chunk in self.chunks(len(prompt), batch, groups, prompt.length):
            part = prompt[chunk]
            for idx, hidden in strategy(self, part, batch, groups):
                logits = self.lm.head_logits(hidden, self.label_ids).float()
                out[chunk, torch.as_tensor(idx, device=self.lm.device)] = logits.view(len(part), len(idx), -1)
        return out

    def chunks(self, n: int, batch: Batch, groups: list, L: int) -> list[slice]:
        """Slices of the ``n`` candidates, as many per forward as fit in ``max_tokens`` with the widest group."""
        widest = max(len(idx) * (ids.shape[1] + L + (len(batch.before[idx[-1]]) if batch.before else 0))
                     for idx, ids, _ in groups)
        per_forward = max(1, self.max_tokens // widest)
        return [slice(c0, min(n, c0 + per_forward)) for c0 in range(0, n, per_forward)]

    def _at(self, h: torch.Tensor, batch: Batch, idx: np.ndarray, nc: int, shift: int) -> torch.Tensor:
        """The hidden states (nc * len(idx), H) at each example's read-out token, ``shift`` tokens into ``h``."""
        pos = torch.as_tensor(batch.readout[idx], device=h.device).repeat(nc) + shift
        return h[torch.arange(len(pos), device=h.device), pos]

    def _head_emb(self, batch: Batch):
        return self.lm.embed(torch.tensor(batch.head, dtype=torch.long, device=self.lm.device)) if batch.head else None

    def _with_head(self, prompt: torch.Tensor, head_emb) -> torch.Tensor:
        if head_emb is None:
            return prompt
        return torch.cat([head_emb.unsqueeze(0).expand(prompt.shape[0], -1, -1), prompt], 1)

    # ------------------------------------------------------------------ the strategies

    def prepend(self, prompt: Prompt, batch: Batch, groups: list):
        """``[head, prompt, text]``: every (candidate, example) of a group in one forward."""
        head_emb = self._head_emb(batch)
        nc, L, H = prompt.shallow.shape
        head = len(batch.head)
        for idx, ids, mask in groups:
            Bg = ids.shape[0]
            x = torch.cat([self._with_head(prompt.shallow, head_emb).unsqueeze(1).expand(-1, Bg, -1, -1),
                           self.lm.embed(ids).unsqueeze(0).expand(nc, -1, -1, -1)], 2).reshape(nc * Bg, -1, H)
            attn = torch.cat([torch.ones(Bg, head + L, dtype=mask.dtype, device=mask.device), mask], 1).repeat(nc, 1)
            with self.deep.adding(prompt.deep, head), self._after(prompt.after, head):
                h = self.lm.body(inputs_embeds=x, attention_mask=attn).last_hidden_state
            yield idx, self._at(h, batch, idx, nc, L + head)

    def _after(self, offset: torch.Tensor | None, at: int):
        """Masked LMs: add ``offset`` after the embedding module (nothing to add: a no-op)."""
        if self.after_embeddings is None:
            return nullcontext()
        return self.after_embeddings.adding(offset, at)

    def on_cache(self, prompt: Prompt, batch: Batch, groups: list):
        """Causal LMs: ``[head, prompt]``'s keys/values once per candidate (the prompt cannot see the
        text), then every group's texts on top of them."""
        prompt_kv = self.prompt_cache(prompt, self._head_emb(batch))
        for idx, ids, _ in groups:
            yield idx, self._at(self.text_on_cache(prompt_kv, ids, len(prompt)), batch, idx, len(prompt), 0)

    def between(self, prompt: Prompt, batch: Batch, groups: list):
        """Causal LMs: ``[before (cached), prompt, after]``; the read-out token is in ``after``, behind the prompt."""
        nc, L, H = prompt.shallow.shape
        for idx, ids, mask in groups:
            Bg, Ta = ids.shape
            kv, b_mask = self.before_cache(batch, idx)
            kv = [(k.repeat(nc, 1, 1, 1), v.repeat(nc, 1, 1, 1)) for k, v in kv]
            x = torch.cat([prompt.shallow.unsqueeze(1).expand(-1, Bg, -1, -1),
                           self.lm.embed(ids).unsqueeze(0).expand(nc, -1, -1, -1)], 2).reshape(nc * Bg, L + Ta, H)
            attn = torch.cat([b_mask, torch.ones(Bg, L, dtype=mask.dtype, device=mask.device), mask], 1).repeat(nc, 1)
            start = b_mask.sum(1).repeat(nc)
            positions = start[:, None] + torch.arange(L + Ta, device=ids.device)[None, :]
            with self.deep.adding(prompt.deep, 0):
                h = self.lm.body(inputs_embeds=x, attention_mask=attn, position_ids=positions,
                                 **{self._cache_kw: _new_cache(self.lm.model.config, kv)}).last_hidden_state
            yield idx, self._at(h, batch, idx, nc, L)

    # How a prompt meets the text, by (placement, prompt cache): one strategy each.
    STRATEGIES = {("prepend", False): prepend, ("prepend", True): on_cache,
                  ("between", False): between, ("between", True): between}

    # ------------------------------------------------------------------ the keys/values the strategies reuse

    def prompt_cache(self, prompt: Prompt, head_emb) -> tuple:
        """Causal LMs: the keys/values of [head, prompt] for each candidate."""
        x = self._with_head(prompt.shallow, head_emb)
        if x.shape[1] == 0:
            return [], 0
        with self.deep.adding(prompt.deep, x.shape[1] - prompt.length):
            out = self.lm.body(inputs_embeds=x, use_cache=True)
        return list(_kv_tensors(self._returned_cache(out))), x.shape[1]

    def _returned_cache(self, out):
        return getattr(out, "cache", None) if self._cache_kw == "cache" else out.past_key_values

    def text_on_cache(self, prompt_kv: tuple, ids: torch.Tensor, nc: int) -> torch.Tensor:
        """Every example of a group on top of every candidate's cached prompt, in one forward."""
        kv, P = prompt_kv
        Bg, T = ids.shape
        H = self.lm.hidden_size
        cache_kw = {}
        if P > 0:
            kv = [(k.repeat_interleave(Bg, 0), v.repeat_interleave(Bg, 0)) for k, v in kv]
            cache_kw = {self._cache_kw: _new_cache(self.lm.model.config, kv)}
        text = self.lm.embed(ids).unsqueeze(0).expand(nc, -1, -1, -1).reshape(nc * Bg, T, H)
        positions = torch.arange(P, P + T, device=ids.device).unsqueeze(0).expand(nc * Bg, -1)
        # Right padding: a real token never attends to the pads after it, so no mask is needed.
        return self.lm.body(inputs_embeds=text, position_ids=positions, **cache_kw).last_hidden_state

    def before_cache(self, batch: Batch, idx: np.ndarray) -> tuple[list, torch.Tensor]:
        """The keys/values of the texts before the prompt for group ``idx``, and their mask.

        Computed once and kept on the batch while the batch's cache stays within ``cache_bytes``
        (a training batch, reused by every call); past that (a large test set) computed per call.
        """
        key = (tuple(idx.tolist()), self.lm.dtype, str(self.lm.device))
        entry = batch.cached(key)
        if entry is None:
            b_ids, b_mask = self.pad([batch.before[i] for i in idx])
            out = self.lm.body(input_ids=b_ids, attention_mask=b_mask, use_cache=True)
            entry = ([(k.clone(), v.clone()) for k, v in _kv_tensors(self._returned_cache(out))], b_mask)
            batch.keep(key, entry, self.cache_bytes)
        return entry
