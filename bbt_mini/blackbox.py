"""The black box: a language model behind a service boundary (Language-Model-as-a-Service).

Read this module to see everything a tuner ever gets from the model. A client hands the
service a batch of candidate soft prompts and a batch of examples; the service returns,
for every candidate, the label words' logits on every example and a loss. No parameters,
no gradients: the model runs in inference mode and never leaves :class:`BlackBox`.

One **API call** is one candidate prompt evaluated on one batch of examples, as in the
papers (Sun et al., 2022a, Sec. 4). The :class:`Meter` counts calls, examples, tokens,
wall time and the bytes a client would send and receive, and an optional budget stops
a run with :class:`BudgetExhausted` before it overspends.

Prompts come in two shapes:

* ``(n, L, hidden)``: a soft prompt of ``L`` vectors in word-embedding space, placed before
  the text (after a leading ``<s>``/``[CLS]``/BOS token if the tokenizer adds one): BBT.
* ``(n, layers, L, hidden)``: a deep prompt (BBTv2). Entry 0 is the input prompt as above;
  entry ``l >= 1`` is *added* to the hidden states at the prompt positions as they enter
  layer ``l``, through forward pre-hooks (no copied modeling code).

How the work is done, fast (each step measured in the book's appendix):

* a whole population goes through in batched forwards; examples are sorted by length and
  grouped so that padding stays small;
* only the hidden states at the read-out position reach the output head, and only the
  label words' rows of it are used;
* tokenisation happens once per batch of examples (:meth:`BlackBox.encode`), not per call;
* causal LMs with a prepended prompt: the prompt's keys and values are computed once per
  candidate and shared by all examples (exact: the prompt cannot see the text);
* causal LMs with the prompt placed *after* a text (pass ``(before, after)`` pairs to
  ``encode``): the text's keys and values are computed once per batch and shared by every
  candidate of every call. Cheaper, but the prompt can no longer change how the text is read.
"""
from __future__ import annotations

import inspect
import time
import weakref
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np
import torch

from .models import LanguageModel

BYTES_PER_FLOAT = 4  # a client sends and receives float32


class BudgetExhausted(RuntimeError):
    """Raised before a request that would spend more API calls than the budget allows."""


@dataclass
class Meter:
    """What the service has been used for, as a provider would bill it."""

    calls: int = 0  # candidate prompts x batches of examples (the papers' API calls)
    requests: int = 0  # times the service was invoked (one population = one request)
    examples: int = 0  # (candidate, example) pairs scored
    tokens: int = 0  # tokens processed, prompt vectors included
    wall_s: float = 0.0  # seconds spent inside the service
    bytes_up: int = 0  # prompts (float32) and texts (UTF-8) sent by the client
    bytes_down: int = 0  # logits and losses (float32) sent back

    def snapshot(self) -> dict:
        return asdict(self)

    def load(self, state: dict) -> None:
        for k, v in state.items():
            setattr(self, k, v)


@dataclass
class Response:
    """What one request returns: ``logits`` (n, examples, classes) and ``loss`` (n,)."""

    logits: np.ndarray
    loss: np.ndarray


@dataclass
class Batch:
    """Examples encoded once. Build with :meth:`BlackBox.encode`; reuse across calls."""

    labels: np.ndarray
    text_bytes: int  # UTF-8 bytes of the texts: sent with every call
    pieces: list  # per example: token ids of the text (or of the part after the prompt)
    readout: np.ndarray  # per example: index of the read-out token within its piece
    before: list | None = None  # per example: ids before the prompt (placement "between")
    head: list = field(default_factory=list)  # leading special tokens shared by all examples
    _cache: dict = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.labels)


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Mean cross-entropy over the label words, per candidate. ``logits``: (n, B, C)."""
    z = logits - logits.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return -np.take_along_axis(logp, labels[None, :, None], -1)[..., 0].mean(-1)


def hinge(logits: np.ndarray, labels: np.ndarray, margin: float = 2.0) -> np.ndarray:
    """Mean multi-class hinge loss: ``max(0, margin - (s_y - max_{j != y} s_j))`` (early BBT code)."""
    true = np.take_along_axis(logits, labels[None, :, None], -1)[..., 0]
    other = logits.copy()
    np.put_along_axis(other, labels[None, :, None].repeat(len(logits), 0), -np.inf, -1)
    return np.maximum(0.0, margin - (true - other.max(-1))).mean(-1)


def accuracy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Fraction of examples whose largest label-word logit is the true class, per candidate."""
    return (logits.argmax(-1) == labels[None, :]).mean(-1)


def f1(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Binary F1 of class 1 (MRPC's metric), per candidate."""
    pred = logits.argmax(-1)
    tp = ((pred == 1) & (labels == 1)).sum(-1)
    fp = ((pred == 1) & (labels == 0)).sum(-1)
    fn = ((pred == 0) & (labels == 1)).sum(-1)
    return np.where(tp > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)


LOSSES = {"ce": cross_entropy, "hinge": hinge, "neg_acc": lambda lg, y: -accuracy(lg, y)}


def _cache_name(module: torch.nn.Module) -> str:
    """``cache`` in transformers >= 5.x, ``past_key_values`` before."""
    params = inspect.signature(module.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _kv_tensors(cache) -> list:
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    return list(zip(cache.key_cache, cache.value_cache))


def _new_cache(config, kv: list):
    from transformers import DynamicCache

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


def _deep_prompt_hook(service_ref, layer: int):
    """A forward pre-hook on layer ``layer``: add the deep prompt's entry for this layer to the
    hidden states at the prompt positions, while a deep prompt is active."""
    def hook(module, args, kwargs):
        service = service_ref()
        if service is None or service._deep is None:
            return None
        deltas, offset = service._deep
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


class BlackBox:
    """A frozen model as a service: prompts and examples in, label-word logits and loss out.

    Parameters
    ----------
    lm: the model (see :func:`bbt_mini.models.load_model`).
    label_words: one word per class, each a single token (``" positive"``...).
    loss: ``"ce"`` (cross-entropy over the label words), ``"hinge"`` or ``"neg_acc"``.
    budget: the most API calls this service will answer (``None``: no limit).
    max_tokens: roughly how many tokens one forward may hold (memory against speed);
        default 4,096 on a CPU and 262,144 on a GPU.
    group_size: examples per length group (sorted by length to cut padding); default 4
        on a CPU, all at once on a GPU.
    cache_prompt: share the prompt's keys/values across examples (causal LMs).
    """

    def __init__(self, lm: LanguageModel, label_words: Sequence[str], *, loss: str = "ce",
                 budget: int | None = None, max_tokens: int | None = None, group_size: int | None = None,
                 cache_prompt: bool = True):
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; choose one of {sorted(LOSSES)}")
        if len(label_words) < 2:
            raise ValueError("a classifier needs at least two label words")
        self.lm = lm
        self.label_words = tuple(label_words)
        self.label_ids = torch.tensor([lm.token_id(w) for w in label_words], device=lm.device)
        if len(set(self.label_ids.tolist())) != len(label_words):
            raise ValueError(f"label words {label_words} map to repeated tokens")
        self.loss = loss
        self.budget = budget
        gpu = lm.device.type == "cuda"
        self.max_tokens = max_tokens or (262_144 if gpu else 4_096)
        self.group_size = group_size or (1_000_000 if gpu else 4)
        self.cache_prompt = cache_prompt and lm.kind == "causal"
        self.meter = Meter()
        self._cache_kw = _cache_name(lm.body)
        self._deep: tuple | None = None  # (deltas (rows, layers, L, H), offset) while a deep prompt is active
        me = weakref.ref(self)  # the model must not keep a dropped service alive
        self._hooks = [layer.register_forward_pre_hook(_deep_prompt_hook(me, i), with_kwargs=True)
                       for i, layer in enumerate(lm.layers) if i > 0]
        weakref.finalize(self, _remove_all, self._hooks)

    # ------------------------------------------------------------------ public facts

    @property
    def model_name(self) -> str:
        return self.lm.name

    @property
    def kind(self) -> str:
        return self.lm.kind

    @property
    def mask_token(self) -> str | None:
        return self.lm.tokenizer.mask_token

    @property
    def device(self) -> torch.device:
        return self.lm.device

    @property
    def dtype(self) -> torch.dtype:
        return self.lm.dtype

    @property
    def hidden_size(self) -> int:
        return self.lm.hidden_size

    @property
    def num_layers(self) -> int:
        return self.lm.num_layers

    @property
    def num_classes(self) -> int:
        return len(self.label_words)

    def token_embeddings(self, token_ids: Sequence[int]) -> np.ndarray:
        """Word embeddings of some tokens (what BBT's ``p0`` is made of), float32 (len, hidden)."""
        with torch.inference_mode():
            return self.lm.embed(torch.as_tensor(list(token_ids))).float().cpu().numpy()

    def embedding_stats(self) -> tuple[float, float]:
        """Mean and standard deviation of all word-embedding entries (for BBTv2's sampler)."""
        with torch.inference_mode():
            vocab = self.lm.model.get_input_embeddings().num_embeddings
            e = torch.cat([self.lm.embed(torch.arange(i, min(i + 8192, vocab))).float()
                           for i in range(0, vocab, 8192)])
            return float(e.mean()), float(e.std())

    def hidden_stats(self, batch: Batch, clip_rounds: int = 5) -> np.ndarray:
        """Mean and std of the hidden states entering each layer on ``batch`` (no prompt).

        Returns (layers, 2). Entries are clipped ``clip_rounds`` times to mean +- 3 std
        before the statistics are taken, as BBTv2's code does. Padding is excluded.
        """
        values: dict = {i: [] for i in range(self.num_layers)}
        state: dict = {}

        def grab(i):
            def hook(module, args, kwargs):
                h = args[0] if args else kwargs["hidden_states"]
                values[i].append(h.float()[state["mask"]])
            return hook

        handles = [layer.register_forward_pre_hook(grab(i), with_kwargs=True) for i, layer in enumerate(self.lm.layers)]
        try:
            with torch.inference_mode():
                for idx in self._groups(batch, np.arange(len(batch))):
                    ids, mask = self._pad([batch.head + (batch.before[i] if batch.before else []) + batch.pieces[i]
                                           for i in idx])
                    state["mask"] = mask.bool()
                    self.lm.body(input_ids=ids, attention_mask=mask)
        finally:
            for h in handles:
                h.remove()
        stats = np.zeros((self.num_layers, 2))
        for i in range(self.num_layers):
            x = torch.cat(values[i]).flatten()
            for _ in range(clip_rounds):
                mu, sd = x.mean(), x.std()
                x = x.clamp(mu - 3 * sd, mu + 3 * sd)
            stats[i] = float(x.mean()), float(x.std())
        return stats

    # ------------------------------------------------------------------ encoding

    def encode(self, texts: Sequence, labels: Sequence[int]) -> Batch:
        """Tokenise examples once. ``texts``: strings (the prompt goes before each), or
        ``(before, after)`` pairs (causal LMs: the prompt goes between; ``before`` is cached)."""
        if len(texts) != len(labels):
            raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
        if len(texts) == 0:
            raise ValueError("a batch needs at least one example")
        labels = np.asarray(labels, dtype=np.int64)
        if labels.min() < 0 or labels.max() >= self.num_classes:
            raise ValueError(f"labels must lie in 0..{self.num_classes - 1}; got {sorted(set(labels.tolist()))}")
        tok = self.lm.tokenizer
        between = not isinstance(texts[0], str)
        if between and self.lm.kind != "causal":
            raise ValueError("a prompt placed between two texts is offered for causal LMs only")
        specials = set(tok.all_special_ids)
        heads, pieces, before, readout = [], [], [], []
        for t in texts:
            if between:
                b, a = t
                ids_b = tok(b)["input_ids"]
                ids_a = tok(a, add_special_tokens=False)["input_ids"]
                if not ids_a:
                    raise ValueError(f"the text after the prompt is empty for {t!r}")
                before.append(ids_b)
                pieces.append(ids_a)
                readout.append(len(ids_a) - 1)
                continue
            ids = tok(t)["input_ids"]
            head = ids[:1] if ids and ids[0] in specials and ids[0] != tok.mask_token_id else []
            heads.append(head)
            piece = ids[len(head):]
            pieces.append(piece)
            if self.lm.kind == "masked":
                where = [i for i, x in enumerate(piece) if x == tok.mask_token_id]
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

    # ------------------------------------------------------------------ the call

    def __call__(self, prompts, batch: Batch, loss: str | None = None) -> Response:
        """Evaluate ``n`` candidate prompts on ``batch``: ``n`` API calls."""
        start = time.perf_counter()
        prompts = self._check(prompts)
        n = prompts.shape[0]
        if self.budget is not None and self.meter.calls + n > self.budget:
            raise BudgetExhausted(
                f"this request needs {n} API calls but only {self.budget - self.meter.calls} of the budget of "
                f"{self.budget} are left"
            )
        with torch.inference_mode():
            logits = self._logits(prompts, batch).float().cpu().numpy()
        if not np.isfinite(logits).all():
            bad = sorted(set(np.nonzero(~np.isfinite(logits))[0].tolist()))
            raise FloatingPointError(f"the model returned NaN or inf logits for candidate(s) {bad}")
        name = loss or self.loss
        if name not in LOSSES:
            raise ValueError(f"unknown loss {name!r}; choose one of {sorted(LOSSES)}")
        losses = LOSSES[name](logits, batch.labels)
        m, B, L = self.meter, len(batch), prompts.shape[-2]
        m.calls += n
        m.requests += 1
        m.examples += n * B
        m.tokens += n * (B * L + sum(len(p) for p in batch.pieces) + sum(map(len, batch.before or []))
                         + B * len(batch.head))
        m.bytes_up += n * (prompts[0].numel() * BYTES_PER_FLOAT + batch.text_bytes)
        m.bytes_down += logits.size * BYTES_PER_FLOAT + n * BYTES_PER_FLOAT
        m.wall_s += time.perf_counter() - start
        return Response(logits=logits, loss=losses)

    def _check(self, prompts) -> torch.Tensor:
        p = torch.as_tensor(np.asarray(prompts, dtype=np.float32) if not torch.is_tensor(prompts) else prompts)
        H, layers = self.hidden_size, self.num_layers
        ok = (p.dim() == 3 and p.shape[-1] == H) or (p.dim() == 4 and p.shape[1] == layers and p.shape[-1] == H)
        if not ok:
            raise ValueError(
                f"prompts must have shape (n, L, {H}) or, for a deep prompt, (n, {layers}, L, {H}); "
                f"got {tuple(p.shape)}"
            )
        if p.shape[0] == 0:
            raise ValueError("no candidate prompts given")
        if not torch.isfinite(p).all():
            raise ValueError("prompts contain NaN or inf")
        return p.to(self.lm.device, self.lm.dtype)

    # ------------------------------------------------------------------ internals

    def _groups(self, batch: Batch, order: np.ndarray, prompt_length: int = 0) -> list:
        """Examples sorted by length, cut into groups of ``group_size``.

        A group also stays within ``max_tokens`` with the prompt in front of every example:
        in-context learning sends a prompt of a thousand tokens or more, and a thousand test
        examples behind it in one forward would need tens of GB on a GPU.
        """
        lengths = np.array([len(batch.pieces[i]) + (len(batch.before[i]) if batch.before else 0) for i in order])
        sort = np.argsort(lengths, kind="stable")
        order, lengths = order[sort], lengths[sort]
        groups, i = [], 0
        while i < len(order):
            widest = lengths[min(i + self.group_size, len(order)) - 1] + prompt_length + len(batch.head)
            size = max(1, min(self.group_size, self.max_tokens // widest))
            groups.append(order[i:i + size])
            i += size
        return groups

    def _pad(self, seqs: list) -> tuple[torch.Tensor, torch.Tensor]:
        T = max(len(s) for s in seqs)
        pad = self.lm.tokenizer.pad_token_id
        ids = torch.full((len(seqs), T), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), T), dtype=torch.long)
        for r, s in enumerate(seqs):
            ids[r, :len(s)] = torch.tensor(s, dtype=torch.long)
            mask[r, :len(s)] = 1
        return ids.to(self.lm.device), mask.to(self.lm.device)

    def _logits(self, prompts: torch.Tensor, batch: Batch) -> torch.Tensor:
        deep = prompts.dim() == 4
        shallow = prompts[:, 0] if deep else prompts  # the input-level prompt (n, L, H)
        n, L = shallow.shape[:2]
        out = torch.empty(n, len(batch), self.num_classes, device=self.lm.device)
        groups = self._groups(batch, np.arange(len(batch)), L)
        head = torch.tensor(batch.head, dtype=torch.long, device=self.lm.device)
        head_emb = self.lm.embed(head) if len(head) else None
        limit = getattr(self.lm.model.config, "max_position_embeddings", None)
        longest = len(batch.head) + L + max(len(p) + (len(b) if batch.before else 0)
                                             for p, b in zip(batch.pieces, batch.before or batch.pieces))
        if limit and longest > limit - 2:
            raise ValueError(f"the longest example with the prompt has {longest} tokens; "
                             f"{self.lm.name} takes at most {limit - 2}")
        padded = [(idx, *self._pad([batch.pieces[i] for i in idx])) for idx in groups]
        widest = max(len(idx) * (ids.shape[1] + L + (len(batch.before[idx[-1]]) if batch.before else 0))
                     for idx, ids, _ in padded)
        per_forward = max(1, self.max_tokens // widest)  # candidates per forward
        for c0 in range(0, n, per_forward):
            c1 = min(n, c0 + per_forward)
            nc = c1 - c0
            chunk_deep = prompts[c0:c1] if deep else None
            if self.cache_prompt and batch.before is None:  # the prompt's keys/values: once per chunk
                prompt_kv = self._prompt_cache(shallow[c0:c1], chunk_deep, head_emb)
            for idx, ids, mask in padded:
                Bg = len(idx)
                if batch.before is not None:
                    h = self._between(shallow[c0:c1], chunk_deep, batch, idx, ids, mask)
                elif self.cache_prompt:
                    h = self._text_on_cache(prompt_kv, ids, nc)
                else:
                    h = self._prepend_full(shallow[c0:c1], chunk_deep, head_emb, ids, mask)
                pos = torch.as_tensor(batch.readout[idx], device=self.lm.device).repeat(nc)
                if batch.before is not None:
                    pos = pos + L
                elif not self.cache_prompt:
                    pos = pos + L + len(batch.head)
                hidden = h[torch.arange(nc * Bg, device=self.lm.device), pos]
                logits = self.lm.head_logits(hidden, self.label_ids).float().view(nc, Bg, -1)
                out[c0:c1, torch.as_tensor(idx, device=self.lm.device)] = logits
        return out

    def _with_head(self, prompt: torch.Tensor, head_emb) -> torch.Tensor:
        if head_emb is None:
            return prompt
        return torch.cat([head_emb.unsqueeze(0).expand(prompt.shape[0], -1, -1), prompt], 1)

    def _prepend_full(self, prompt, deep, head_emb, ids, mask) -> torch.Tensor:
        """[head, prompt, text] for every (candidate, example) in one forward (masked LMs)."""
        nc, L, H = prompt.shape
        Bg, T = ids.shape
        x = torch.cat([self._with_head(prompt, head_emb).unsqueeze(1).expand(-1, Bg, -1, -1),
                       self.lm.embed(ids).unsqueeze(0).expand(nc, -1, -1, -1)], 2).reshape(nc * Bg, -1, H)
        head = 0 if head_emb is None else head_emb.shape[0]
        full_mask = torch.cat([torch.ones(Bg, head + L, dtype=mask.dtype, device=mask.device), mask], 1).repeat(nc, 1)
        self._deep = (deep, head) if deep is not None else None
        try:
            return self.lm.body(inputs_embeds=x, attention_mask=full_mask).last_hidden_state
        finally:
            self._deep = None

    def _prompt_cache(self, prompt, deep, head_emb) -> tuple:
        """Causal LMs: the keys/values of [head, prompt] for each candidate (the prompt cannot see the text)."""
        L = prompt.shape[1]
        x = self._with_head(prompt, head_emb)
        if x.shape[1] == 0:
            return [], 0
        self._deep = (deep, x.shape[1] - L) if deep is not None else None
        try:
            out = self.lm.body(inputs_embeds=x, use_cache=True)
        finally:
            self._deep = None
        cache = getattr(out, "cache", None) if self._cache_kw == "cache" else out.past_key_values
        return [(k, v) for k, v in _kv_tensors(cache)], x.shape[1]

    def _text_on_cache(self, prompt_kv: tuple, ids: torch.Tensor, nc: int) -> torch.Tensor:
        """Every example of a group on top of every candidate's cached prompt, in one forward."""
        kv, P = prompt_kv
        Bg, T = ids.shape
        H = self.hidden_size
        cache_kw = {}
        if P > 0:
            kv = [(k.repeat_interleave(Bg, 0), v.repeat_interleave(Bg, 0)) for k, v in kv]
            cache_kw = {self._cache_kw: _new_cache(self.lm.model.config, kv)}
        text = self.lm.embed(ids).unsqueeze(0).expand(nc, -1, -1, -1).reshape(nc * Bg, T, H)
        positions = torch.arange(P, P + T, device=ids.device).unsqueeze(0).expand(nc * Bg, -1)
        # Right padding: a real token never attends to the pads after it, so no mask is needed.
        return self.lm.body(inputs_embeds=text, position_ids=positions, **cache_kw).last_hidden_state

    def _between(self, prompt, deep, batch: Batch, idx, ids, mask) -> torch.Tensor:
        """Causal LMs: [before (cached once per batch), prompt, after] for every candidate."""
        nc, L, H = prompt.shape
        Bg, Ta = ids.shape
        key = (tuple(idx.tolist()), self.lm.dtype, str(self.lm.device))
        if key not in batch._cache:  # the texts' keys/values: computed once, reused by every call
            b_ids, b_mask = self._pad([batch.before[i] for i in idx])
            out = self.lm.body(input_ids=b_ids, attention_mask=b_mask, use_cache=True)
            cache = getattr(out, "cache", None) if self._cache_kw == "cache" else out.past_key_values
            batch._cache[key] = ([(k.clone(), v.clone()) for k, v in _kv_tensors(cache)], b_mask)
        kv, b_mask = batch._cache[key]
        kv = [(k.repeat(nc, 1, 1, 1), v.repeat(nc, 1, 1, 1)) for k, v in kv]
        x = torch.cat([prompt.unsqueeze(1).expand(-1, Bg, -1, -1),
                       self.lm.embed(ids).unsqueeze(0).expand(nc, -1, -1, -1)], 2).reshape(nc * Bg, L + Ta, H)
        attn = torch.cat([b_mask, torch.ones(Bg, L, dtype=mask.dtype, device=mask.device), mask], 1).repeat(nc, 1)
        start = b_mask.sum(1).repeat(nc)
        positions = start[:, None] + torch.arange(L + Ta, device=ids.device)[None, :]
        if deep is not None:
            deep = deep.repeat_interleave(Bg, 0)
        self._deep = (deep, 0) if deep is not None else None
        try:
            return self.lm.body(inputs_embeds=x, attention_mask=attn, position_ids=positions,
                              **{self._cache_kw: _new_cache(self.lm.model.config, kv)}).last_hidden_state
        finally:
            self._deep = None
