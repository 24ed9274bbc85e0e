"""A real Language-Model-as-a-Service: the black box behind an OpenAI-compatible HTTP server.

:class:`RemoteService` has the interface the tuners use (:class:`bbt_mini.service.blackbox.BlackBox`'s:
candidate prompts and examples in, label-word scores and a loss out, a :class:`Meter`), but
the model runs in another process, here vLLM's OpenAI-compatible server
(``python -m bbt_mini serve`` starts one). BBT and BBTv2's input-layer prompt run through it
unchanged.

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

import base64
import copy
import hashlib
import http.client
import io
import json
import socket
import threading
import time
import urllib.parse
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from safetensors import safe_open
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from ..core import settings
from ..core.metrics import LOSSES
from ..core.settings import cache_dir
from ..lm.encoding import Batch, encode
from ..lm.loading import OFFLINE_MODELS, model_folder
from .blackbox import BudgetExhausted, Meter, Response

__all__ = ["RemoteService", "ServiceError", "ServiceUnavailable", "compute_fingerprint", "model_fingerprint",
           "publish_fingerprint", "remote_service", "wire_bytes"]

PROBE_TEXT = "Review: a gripping, funny film. Sentiment:"  # the tokenizer check's text
SUM_TOLERANCE = 1e-3  # |log sum_c p_c| above this: the scores are not renormalised over the label words
CANARY_TEXTS = (PROBE_TEXT, "Question: is the sky green? Answer:")  # the fingerprint's fixed request
CANARY_TOKENS = 8  # the canary is scored over at most this many of the probe text's distinct tokens
# Largest |gap| between a server's canary log-probabilities and the fingerprint that passes. It admits
# bfloat16 servers (bf16 keeps 8 bits of mantissa; label-word gaps of 0.04-0.06 were measured against
# float32), while other weights miss by whole units.
FINGERPRINT_TOLERANCE = 0.3
FINGERPRINT_FILE = "bbt_fingerprint.json"  # a fingerprint published with the model, in its folder


class ServiceError(RuntimeError):
    """The server answered, but not as a black box for this model must (refused, mismatched, incomplete)."""


class ServiceUnavailable(ServiceError):
    """The server did not answer (down, unreachable, too slow) after every retry."""


def _client_model(model: str | Path) -> Path:
    """The folder holding the model's tokenizer and weights (only its embedding table is read)."""
    folder = model_folder(str(model))
    if isinstance(folder, Path):
        return folder
    raise ValueError(f"the client needs the model's tokenizer and embedding table: {model!r} is neither an offline "
                     f"model ({sorted(OFFLINE_MODELS)}) nor a local folder")


def _embedding_table(folder: Path):
    """The input-embedding matrix (vocab, hidden) from the folder's safetensors, without the transformer."""
    files = sorted(folder.glob("*.safetensors"))
    for path in files:
        with safe_open(str(path), "pt") as f:
            for key in f.keys():
                if key.endswith(("embed_tokens.weight", "wte.weight", "word_embeddings.weight")):
                    return f.get_tensor(key)
    raise ValueError(f"no input-embedding table (embed_tokens / wte / word_embeddings) in {folder}'s safetensors")


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
    """Which weights a cached fingerprint belongs to: the folder and its safetensors' names, sizes and times."""
    h = hashlib.sha256(str(folder.resolve()).encode())
    for path in sorted(folder.glob("*.safetensors")):
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


def wire_bytes(tensor) -> str:
    """A tensor as vLLM's ``prompt_embeds`` takes it: base64 of its ``torch.save``."""
    buf = io.BytesIO()
    torch.save(tensor.contiguous(), buf)
    return base64.b64encode(buf.getvalue()).decode("ascii")


class RemoteService:
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
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; choose one of {sorted(LOSSES)}")
        if len(label_words) < 2:
            raise ValueError("a classifier needs at least two label words")
        if per_request < 1 or in_flight < 1 or retries < 0 or timeout <= 0:
            raise ValueError("per_request and in_flight must be at least 1, retries at least 0, timeout positive")
        parsed = urllib.parse.urlsplit(url.rstrip("/"))
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"the service URL must look like http://host:port/v1; got {url!r}")
        self.url, self._parsed = url.rstrip("/"), parsed
        self.folder = _client_model(model)
        config = AutoConfig.from_pretrained(self.folder)
        if getattr(config, "is_decoder", False) is False and "CausalLM" not in " ".join(config.architectures or []):
            raise ValueError(f"{model!r} is not a causal LM: the Completions API reads the next token only")
        self._config = config
        self.tokenizer = AutoTokenizer.from_pretrained(self.folder)
        self._table = _embedding_table(self.folder)  # (vocab, hidden) float32: what the client must hold
        self._wire_dtype = getattr(torch, wire_dtype)
        self.model_name = str(model)
        self.label_words = tuple(label_words)
        self.label_ids = [self._single_token(w) for w in label_words]
        if len(set(self.label_ids)) != len(self.label_ids):
            raise ValueError(f"label words {label_words} map to repeated tokens")
        self.loss, self.budget = loss, budget
        self.api_key, self.timeout, self.retries, self.backoff = api_key, timeout, retries, backoff
        self.per_request, self.in_flight = per_request, in_flight
        self.meter = Meter()
        self._lock = threading.Lock()  # requests in flight update the meter from several threads
        self.dtype = server_dtype or settings.server_dtype()
        self.served_name = served_name
        if not (fingerprint is None or fingerprint == "auto" or isinstance(fingerprint, dict)):
            raise ValueError(f"fingerprint must be 'auto', a dict from compute_fingerprint or None; "
                             f"got {fingerprint!r}")
        self.fingerprint = fingerprint
        self.fingerprint_gap: float | None = None  # the canary's largest gap, once checked (None: not checked)
        self.max_length: int | None = None
        self._checked = False

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
    def num_classes(self) -> int:
        return len(self.label_words)

    @property
    def vocab_size(self) -> int:
        """How many rows the input-embedding table has."""
        return int(self._table.shape[0])

    def _single_token(self, word: str) -> int:
        ids = self.tokenizer(word, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise ValueError(f"label word {word!r} is not a single token: it splits into "
                             f"{self.tokenizer.convert_ids_to_tokens(ids)}")
        return ids[0]

    def token_ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def token_strings(self, token_ids: Sequence[int]) -> list[str]:
        return self.tokenizer.convert_ids_to_tokens(list(token_ids))

    def token_embeddings(self, token_ids: Sequence[int]) -> np.ndarray:
        return self._table[list(token_ids)].float().numpy()

    def embedding_stats(self) -> tuple[float, float]:
        e = self._table.float()
        return float(e.mean()), float(e.std())

    def hidden_stats(self, batch: Batch, clip_rounds: int = 5) -> np.ndarray:
        raise ServiceError("an OpenAI-compatible server returns no hidden states: BBTv2's normal sampler "
                           "(hidden-state statistics) and deep prompts need the in-process black box")

    def encode(self, texts: Sequence, labels: Sequence[int]) -> Batch:
        return encode(self.tokenizer, self.kind, texts, labels, self.num_classes)

    # ------------------------------------------------------------------ HTTP

    def _headers(self, body: bytes | None) -> dict:
        h = {"Host": self._parsed.netloc, "Accept": "application/json", "Connection": "close"}
        if body is not None:
            h.update({"Content-Type": "application/json", "Content-Length": str(len(body))})
        if self.api_key:
            h["Authorization"] = f"Bearer {self.api_key}"
        return h

    def _once(self, method: str, path: str, body: bytes | None) -> tuple[int, bytes, int, int]:
        """One HTTP exchange: (status, body, bytes up, bytes down), headers counted."""
        cls = http.client.HTTPSConnection if self._parsed.scheme == "https" else http.client.HTTPConnection
        conn = cls(self._parsed.hostname, self._parsed.port, timeout=self.timeout)
        target = self._parsed.path + path
        headers = self._headers(body)
        up = len(f"{method} {target} HTTP/1.1\r\n") + sum(len(f"{k}: {v}\r\n") for k, v in headers.items()) + 2
        try:
            conn.request(method, target, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            down = len(data) + sum(len(f"{k}: {v}\r\n") for k, v in resp.getheaders()) + 17
            return resp.status, data, up + len(body or b""), down
        finally:
            conn.close()

    def _request(self, method: str, path: str, payload: dict | None = None) -> dict:
        """A request with retries on transport failures and 5xx/429; a clear error otherwise."""
        body = None if payload is None else json.dumps(payload).encode()
        last = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                status, data, up, down = self._once(method, path, body)
            except (OSError, http.client.HTTPException, socket.timeout) as err:  # refused, reset, timed out
                last = f"{type(err).__name__}: {err}"
                continue
            with self._lock:
                self.meter.requests += 1
                self.meter.bytes_up += up
                self.meter.bytes_down += down
            if status in (429,) or status >= 500:
                last = f"HTTP {status}: {data[:300].decode(errors='replace')}"
                continue
            if status == 401:
                raise ServiceError(f"the service at {self.url} refused the API key (HTTP 401): "
                                   "give the key the server was started with (--api-key / $BBT_API_KEY)")
            if status != 200:
                raise ServiceError(f"the service at {self.url} refused {method} {path} (HTTP {status}): "
                                   f"{data[:500].decode(errors='replace')}")
            try:
                return json.loads(data)
            except ValueError as err:
                raise ServiceError(f"the service at {self.url} answered {path} with something other than JSON: "
                                   f"{data[:200]!r}") from err
        waited = sum(self.backoff * 2 ** i for i in range(self.retries))
        raise ServiceUnavailable(f"the service at {self.url} did not answer {method} {path} after "
                                 f"{self.retries + 1} tries over {waited:.0f} s of waits ({self.timeout:.0f} s "
                                 f"timeout each); last error: {last}. Start it (python -m bbt_mini serve) and, for "
                                 "a run with --checkpoint, continue with --resume")

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
        root = urllib.parse.urlunsplit(self._parsed._replace(path=""))
        theirs = self._tokenize(root)
        ours = self.tokenizer(PROBE_TEXT)["input_ids"]
        if theirs is not None and theirs != ours:
            raise ServiceError(f"the server's tokenizer differs from the client's ({self.folder}): {PROBE_TEXT!r} "
                               f"is {theirs[:12]}... there, {ours[:12]}... here; it serves another model")
        self._checked = True
        self._check_weights()

    def _check_weights(self) -> None:
        """The canary request: a wrong hidden size is refused by the server, other weights by the fingerprint."""
        expected = model_fingerprint(self.folder) if self.fingerprint == "auto" else self.fingerprint
        ids = list(expected["token_ids"]) if expected else canary_ids(self.tokenizer)
        answer = self._scores(canary_sequences(self.tokenizer, self._table), ids)
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

    def _tokenize(self, root: str) -> list | None:
        """The server's token ids of the probe text (vLLM's /tokenize, beside /v1)."""
        saved = self._parsed
        self._parsed = urllib.parse.urlsplit(root)
        try:
            out = self._request("POST", "/tokenize", {"model": self.served_name, "prompt": PROBE_TEXT})
        except ServiceError as err:
            if "HTTP 404" in str(err):
                return None  # a server without /tokenize: the probe's hidden size and scores still check it
            raise
        finally:
            self._parsed = saved
        return out.get("tokens")

    # ------------------------------------------------------------------ the call

    def _sequences(self, prompts: np.ndarray, batch: Batch) -> list:
        """The embedded sequences ``[head, prompt, text]`` (or ``[before, prompt, after]``), candidate-major."""
        table = self._table
        seqs = []
        for p in prompts:
            p = torch.from_numpy(np.ascontiguousarray(p, dtype=np.float32))
            for i, piece in enumerate(batch.pieces):
                seqs.append(torch.cat([table[batch.prefix(i)], p, table[piece]]).to(self._wire_dtype))
        return seqs

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
        if p.ndim != 3 or p.shape[-1] != self.hidden_size:
            raise ValueError(f"prompts must have shape (n, L, {self.hidden_size}); got {p.shape}")
        if p.shape[0] == 0:
            raise ValueError("no candidate prompts given")
        if not np.isfinite(p).all():
            raise ValueError("prompts contain NaN or inf")
        return p

    def __call__(self, prompts, batch: Batch, loss: str | None = None) -> Response:
        """Evaluate ``n`` candidate prompts on ``batch``: ``n`` API calls, in ``ceil(n B / per_request)`` requests."""
        start = time.perf_counter()
        name = loss or self.loss
        if name not in LOSSES:
            raise ValueError(f"unknown loss {name!r}; choose one of {sorted(LOSSES)}")
        prompts = self._check(prompts)
        n, B = prompts.shape[0], len(batch)
        if self.budget is not None and self.meter.calls + n > self.budget:
            raise BudgetExhausted(f"this request needs {n} API calls but only {self.budget - self.meter.calls} of "
                                  f"the budget of {self.budget} are left")
        if not self._checked:
            self.check_server()
        longest = prompts.shape[1] + max(len(batch.full_ids(i)) for i in range(len(batch)))
        if self.max_length is not None and longest > self.max_length:
            raise ValueError(f"the longest example with the prompt has {longest} tokens; the server takes at most "
                             f"{self.max_length} (--max-model-len)")
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
        if len(set(other.label_ids)) != len(other.label_ids) or len(other.label_ids) < 2:
            raise ValueError(f"label words {label_words} must be at least two distinct single tokens")
        other.loss = loss or self.loss
        other.meter = Meter()
        other._lock = threading.Lock()
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
