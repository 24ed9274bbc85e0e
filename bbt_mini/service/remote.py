"""A real Language-Model-as-a-Service: the black box behind an OpenAI-compatible HTTP server.

:class:`RemoteService` has the interface the tuners use (:class:`bbt_mini.service.base.Service`, as
the in-process black box: candidate prompts and examples in, label-word scores and a loss out, a
:class:`Meter`), but
the model runs in another process, here vLLM's OpenAI-compatible server
(``python -m bbt_mini serve`` starts one). BBT and BBTv2's input-layer prompt run through it
unchanged.

Its parts, one idea each: :mod:`bbt_mini.service.base` (what every black box publishes and the
checks it makes before it computes, shared with the in-process one), :mod:`bbt_mini.service.transport`
(HTTP, retries, backoff, byte metering), :mod:`bbt_mini.service.fingerprint` (checking the
served weights) and :mod:`bbt_mini.service.wire` (what the client holds and sends); this
module is the client service that puts them together.

**What the client holds.** Today's servers take the *whole embedded sequence*
(``prompt_embeds``: a base64 ``torch.save`` of a ``(sequence, hidden)`` tensor), not ``z``.
So the client keeps the model's tokenizer and input-embedding table (public for open
models: 49,152 x 576 = 28 M numbers for SmolLM2), never the transformer: it embeds
``[head, prompt, text]`` itself and sends that.

**Exact label-word scores.** The Completions API returns only the top-k log-probabilities.
Each request carries ``allowed_token_ids`` = the label words' ids, ``logprobs`` = the number
of classes and ``max_tokens: 1``; a server started with ``--logprobs-mode processed_logprobs``
then returns every label word's log-probability *renormalised over the label words*,
whatever its rank. These are the label-word logits up to one constant per example, which no
loss or score sees (cross-entropy, hinge and accuracy depend only on differences). A label
word missing from an answer, or scores that do not sum to one over the label words (a server
without that setting), is an error, never a silently wrong loss.

**Batching.** One request carries up to ``per_request`` sequences (one per candidate and
example); up to ``in_flight`` requests go at once, so the server's own batching is used.

**At the boundary.** Every request has a timeout; a refused connection, a timeout, a reset
or an HTTP 5xx/429 is retried ``retries`` times with doubling waits, then
:class:`ServiceUnavailable` says so (a run with ``--checkpoint`` continues with ``--resume``
once the server is back). The first exchange checks the server: its model's name, its
tokenizer (the server's ``/tokenize`` against the client's), its hidden size and its weights;
a mismatch is refused.

**The weights' fingerprint.** A server with the same tokenizer and hidden size but other
weights (a fine-tuned variant, another checkpoint) would pass the checks above and return
wrong scores. So the first exchange is a fixed *canary* request: the embedded
:data:`CANARY_TEXTS`, scored over :func:`canary_ids` (the first distinct tokens of
:data:`PROBE_TEXT`, so any tokenizer has them). Its answer, renormalised log-probabilities,
must match the model's fingerprint within :data:`FINGERPRINT_TOLERANCE`: a float32 server
matches to ~1e-5, a bfloat16 one to a few hundredths; other weights miss by whole units.
The fingerprint is published with the model (a ``bbt_fingerprint.json`` in its folder,
:func:`publish_fingerprint`), or computed once in-process from the folder's weights and
cached (the client loads the transformer once for this, never again). With
``fingerprint=None`` (or a folder without the weights) only the name, tokenizer and hidden
size are checked, and a warning says that other weights would pass. ``api_key`` is sent as ``Authorization: Bearer ...``
(vLLM's ``--api-key``); a refused key is a clear error. The meter counts the real HTTP
bytes (request and response, headers included) and requests.

**What the API cannot do.** It returns no hidden states and takes nothing inside the
model: deep prompts (BBTv2 beyond the input layer) and :meth:`RemoteService.hidden_stats`
are refused. Masked LMs are refused too (the Completions API reads the next token only).
"""
from __future__ import annotations

import copy
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from transformers import AutoConfig, AutoTokenizer

from ..core import settings
from ..core.metrics import LOSSES, check_loss
from ..lm.encoding import Batch, single_token_id
from .base import Meter, Response, ServiceBase, check_budget, check_label_ids, check_length, check_prompts
from .fingerprint import FINGERPRINT_TOLERANCE, PROBE_TEXT, canary_ids, canary_sequences, model_fingerprint
from .transport import ServiceError, Transport
from .wire import client_model, embedding_table, sequences, wire_bytes

SUM_TOLERANCE = 1e-3  # |log sum_c p_c| above this: the scores are not renormalised over the label words


class RemoteService(ServiceBase):
    """The black box behind an OpenAI-compatible Completions endpoint (vLLM with ``--enable-prompt-embeds``).

    Parameters
    ----------
    url: the API's base, e.g. ``http://127.0.0.1:8011/v1``.
    label_words: one word per class, each a single token.
    model: the model the client needs the tokenizer and embedding table of (``"smollm2"`` or a
        folder); the server must serve the same weights.
    served_name: the server's name for it (default: the only model the server lists).
    loss, budget: as :class:`bbt_mini.service.blackbox.BlackBox`.
    api_key: sent as ``Authorization: Bearer <key>``.
    timeout: seconds per request (generous: a CPU server takes ~0.2 s per sequence, and a request
        given up on may still be computed); retries, backoff: bounded retries with waits
        ``backoff, 2 backoff, 4 backoff...`` before :class:`ServiceUnavailable`.
    per_request: sequences (candidate x example) per request; in_flight: requests at once.
    wire_dtype: the number format of the sequences sent: ``"float32"`` (exact) or ``"bfloat16"``
        (half the bytes; what a bf16 server rounds them to anyway).
    server_dtype: the number format the server runs, as results record it (the API does not say;
        default: :func:`bbt_mini.core.settings.server_dtype`, what ``python -m bbt_mini serve`` starts).
    fingerprint: the served weights' fingerprint the first answer must match (see the module doc):
        ``"auto"`` (published in the model's folder, else computed once in-process and cached), a
        dict as :func:`compute_fingerprint` returns, or None (no weights check, with a warning).
    """

    kind = "causal"
    mask_token = None

    def __init__(self, url: str, label_words: Sequence[str], *, model: str | Path = "smollm2",
                 served_name: str | None = None, loss: str = "ce", budget: int | None = None,
                 api_key: str | None = None, timeout: float = 300.0, retries: int = 4, backoff: float = 1.0,
                 per_request: int = 32, in_flight: int = 2, wire_dtype: str = "float32",
                 server_dtype: str | None = None, fingerprint: dict | str | None = "auto"):
        check_loss(loss)
        if per_request < 1 or in_flight < 1:
            raise ValueError("per_request and in_flight must be at least 1")
        self.meter = Meter()
        self.transport = Transport(url, self.meter, api_key=api_key, timeout=timeout, retries=retries,
                                   backoff=backoff)
        self.url = self.transport.url
        self.folder = client_model(model)
        config = AutoConfig.from_pretrained(self.folder)
        if getattr(config, "is_decoder", False) is False and "CausalLM" not in " ".join(config.architectures or []):
            raise ValueError(f"{model!r} is not a causal LM: the Completions API reads the next token only")
        self._config = config
        self._tokenizer = AutoTokenizer.from_pretrained(self.folder)  # the client embeds the text itself
        self._table = embedding_table(self.folder)  # (vocab, hidden) float32: what the client must hold
        self._wire_dtype = getattr(torch, wire_dtype)
        self.model_name = str(model)
        self.label_words = tuple(label_words)
        self.label_ids = [self._single_token(w) for w in label_words]
        check_label_ids(label_words, self.label_ids)
        self.loss, self.budget = loss, budget
        self.per_request, self.in_flight = per_request, in_flight
        self.dtype = server_dtype or settings.server_dtype()
        self.served_name = served_name
        if not (fingerprint is None or fingerprint == "auto" or isinstance(fingerprint, dict)):
            raise ValueError(f"fingerprint must be 'auto', a dict from compute_fingerprint or None; "
                             f"got {fingerprint!r}")
        self.fingerprint = fingerprint
        self.fingerprint_gap: float | None = None  # the canary's largest gap, once checked (None: not checked)
        self.max_length: int | None = None
        self._checked = False

    @property
    def api_key(self) -> str | None:
        """The key sent as ``Authorization: Bearer ...`` (settable: the transport sends the new one)."""
        return self.transport.api_key

    @api_key.setter
    def api_key(self, key: str | None) -> None:
        self.transport.api_key = key

    # ------------------------------------------------------------------ what a provider publishes

    @property
    def device(self) -> str:
        return self.url

    @property
    def hidden_size(self) -> int:
        return int(self._table.shape[1])

    @property
    def num_layers(self) -> int:
        return int(self._config.num_hidden_layers)

    @property
    def vocab_size(self) -> int:
        """How many rows the input-embedding table has."""
        return int(self._table.shape[0])

    def _single_token(self, word: str) -> int:
        return single_token_id(self._tokenizer, word, self.model_name)

    def token_embeddings(self, token_ids: Sequence[int]) -> np.ndarray:
        return self._table[list(token_ids)].float().numpy()

    def embedding_stats(self) -> tuple[float, float]:
        e = self._table.float()
        return float(e.mean()), float(e.std())

    def hidden_stats(self, batch: Batch, clip_rounds: int = 5) -> np.ndarray:
        raise ServiceError("an OpenAI-compatible server returns no hidden states: BBTv2's normal sampler "
                           "(hidden-state statistics) and deep prompts need the in-process black box")

    def _request(self, method: str, path: str, payload: dict | None = None) -> dict:
        return self.transport.request(method, path, payload)

    # ------------------------------------------------------------------ the first exchange

    def check_server(self) -> None:
        """Refuse a server that serves another model: its name, tokenizer and hidden size."""
        listed = self._request("GET", "/models").get("data", [])
        names = [m.get("id") for m in listed]
        if self.served_name is None:
            if len(names) != 1:
                raise ServiceError(f"the server lists models {names}; say which with served_name=")
            self.served_name = names[0]
        elif self.served_name not in names:
            raise ServiceError(f"the server serves {names}, not {self.served_name!r}")
        info = next(m for m in listed if m.get("id") == self.served_name)
        self.max_length = info.get("max_model_len")
        theirs = self._tokenize()
        ours = self._tokenizer(PROBE_TEXT)["input_ids"]
        if theirs is not None and theirs != ours:
            raise ServiceError(f"the server's tokenizer differs from the client's ({self.folder}): {PROBE_TEXT!r} "
                               f"is {theirs[:12]}... there, {ours[:12]}... here; it serves another model")
        self._checked = True
        self._check_weights()

    def _check_weights(self) -> None:
        """The canary request: a wrong hidden size is refused by the server, other weights by the fingerprint."""
        expected = model_fingerprint(self.folder) if self.fingerprint == "auto" else self.fingerprint
        ids = list(expected["token_ids"]) if expected else canary_ids(self._tokenizer)
        answer = self._scores(canary_sequences(self._tokenizer, self._table), ids)
        if expected is None:
            warnings.warn(f"no fingerprint of {self.model_name}'s weights: only the server's model name, tokenizer "
                          "and hidden size were checked; a server with other weights of the same shape (a "
                          "fine-tuned variant) would pass unnoticed", stacklevel=3)
            return
        want = np.asarray(expected["logprobs"], dtype=np.float64)
        if want.shape != answer.shape:
            raise ServiceError(f"the fingerprint has shape {want.shape}, the canary's answer {answer.shape}: "
                               "it was made for another canary")
        self.fingerprint_gap = float(np.abs(answer - want).max())
        if self.fingerprint_gap > FINGERPRINT_TOLERANCE:
            raise ServiceError(f"the server's answer to the canary request differs from {self.model_name}'s "
                               f"fingerprint by {self.fingerprint_gap:.3f} (tolerance {FINGERPRINT_TOLERANCE}: "
                               "bfloat16 rounding passes): it serves other weights with the same tokenizer and "
                               "hidden size; refused")

    def _tokenize(self) -> list | None:
        """The server's token ids of the probe text (vLLM's /tokenize, beside /v1)."""
        try:
            out = self.transport.root().request("POST", "/tokenize", {"model": self.served_name, "prompt": PROBE_TEXT})
        except ServiceError as err:
            if "HTTP 404" in str(err):
                return None  # a server without /tokenize: the probe's hidden size and scores still check it
            raise
        return out.get("tokens")

    # ------------------------------------------------------------------ the call

    def _sequences(self, prompts: np.ndarray, batch: Batch) -> list:
        return sequences(self._table, prompts, batch, self._wire_dtype)

    def _scores(self, seqs: list, token_ids: Sequence[int] | None = None) -> np.ndarray:
        """(len(seqs), classes) label-word log-probabilities, renormalised over the label words
        (over ``token_ids`` if given: the canary's)."""
        ids = list(token_ids) if token_ids is not None else self.label_ids
        words = self.label_words if token_ids is None else self.token_strings(ids)
        payload = {"model": self.served_name, "prompt_embeds": [wire_bytes(s.to(self._wire_dtype)) for s in seqs],
                   "max_tokens": 1, "temperature": 0.0, "logprobs": len(ids), "allowed_token_ids": ids,
                   "return_tokens_as_token_ids": True}
        out = self._request("POST", "/completions", payload)
        choices = sorted(out.get("choices", []), key=lambda c: c["index"])
        if len(choices) != len(seqs):
            raise ServiceError(f"asked for {len(seqs)} sequences, the server answered {len(choices)}")
        scores = np.empty((len(seqs), len(ids)))
        for j, choice in enumerate(choices):
            top = ((choice.get("logprobs") or {}).get("top_logprobs") or [None])[0] or {}
            for c, (word, tid) in enumerate(zip(words, ids)):
                value = top.get(f"token_id:{tid}")
                if value is None:
                    raise ServiceError(f"label word {word!r} (token {tid}) is missing from the server's answer "
                                       f"(it returned {sorted(top)}): the server needs --logprobs-mode "
                                       "processed_logprobs and --max-logprobs of at least the number of classes")
                scores[j, c] = value
        total = np.logaddexp.reduce(scores, axis=1)
        if np.abs(total).max() > SUM_TOLERANCE:
            raise ServiceError(f"the label words' probabilities sum to {np.exp(total).min():.4f}, not 1: the server "
                               "returns raw log-probabilities; start it with --logprobs-mode processed_logprobs")
        return scores

    def _check(self, prompts) -> np.ndarray:
        p = np.asarray(prompts, dtype=np.float32)
        if p.ndim == 4:
            raise ServiceError("deep prompts (BBTv2 beyond the input layer) add to the hidden states inside the "
                               "model, which an OpenAI-compatible API does not expose; use the input-layer prompt "
                               "or the in-process black box")
        check_prompts(p, self.hidden_size)
        return p

    def __call__(self, prompts, batch: Batch, loss: str | None = None, base=None) -> Response:
        """Evaluate ``n`` candidate prompts on ``batch``: ``n`` API calls, in ``ceil(n B / per_request)`` requests.

        ``base`` (the prompt's ``p0`` tokens) changes nothing here: the server runs a causal LM,
        whose input embeddings are the word embeddings alone (:meth:`BlackBox.__call__`)."""
        start = time.perf_counter()
        name = check_loss(loss or self.loss)
        prompts = self._check(prompts)
        n, B = prompts.shape[0], len(batch)
        check_budget(self.budget, self.meter.calls, n)
        if not self._checked:
            self.check_server()
        check_length(batch, prompts.shape[1], self.max_length, "the server (--max-model-len)")
        seqs = self._sequences(prompts, batch)
        chunks = [seqs[i:i + self.per_request] for i in range(0, len(seqs), self.per_request)]
        with ThreadPoolExecutor(max_workers=min(self.in_flight, len(chunks))) as pool:
            logits = np.concatenate(list(pool.map(self._scores, chunks))).reshape(n, B, -1).astype(np.float32)
        m = self.meter
        m.calls += n
        m.examples += n * B
        m.tokens += sum(len(s) for s in seqs)
        m.wall_s += time.perf_counter() - start
        return Response(logits=logits, loss=LOSSES[name](logits, batch.labels))

    def relabel(self, label_words: Sequence[str], loss: str | None = None) -> "RemoteService":
        """The same server for other label words (another task): a new service with its own meter."""
        other = copy.copy(self)
        other.label_words = tuple(label_words)
        other.label_ids = [self._single_token(w) for w in label_words]
        check_label_ids(label_words, other.label_ids)
        other.loss = check_loss(loss or self.loss)
        other.meter = Meter()
        other.transport = copy.copy(self.transport)
        other.transport.meter, other.transport.lock = other.meter, threading.Lock()
        return other


def remote_service(service, label_words: Sequence[str], model="smollm2", loss: str = "ce",
                   dtype=None, api_key: str | None = None) -> RemoteService:
    """A :class:`RemoteService` for ``label_words``: from a URL (the key: ``api_key``, else ``$BBT_API_KEY``;
    ``dtype``: the server's number format, as results record it) or another service."""
    if isinstance(service, str):
        if not isinstance(model, (str, Path)):
            raise ValueError("with a service URL, give the model by name or folder (the client loads its "
                             "tokenizer and embedding table, never the transformer)")
        return RemoteService(service, label_words, model=model, loss=loss, api_key=settings.api_key(api_key),
                             server_dtype=None if dtype is None else settings.dtype_name(dtype))
    if not isinstance(service, RemoteService):
        raise TypeError(f"service must be a BlackBox, a RemoteService or a URL; got {type(service).__name__}")
    if tuple(label_words) == service.label_words and loss == service.loss:
        return service
    return service.relabel(label_words, loss)
