"""The remote black box (bbt_mini.service.remote) against a tiny in-process OpenAI-compatible stub.

The stub speaks the part of vLLM's Completions API the client uses (``prompt_embeds``,
``allowed_token_ids``, processed log-probabilities as ``token_id:N`` keys, ``/v1/models``,
``/tokenize``, bearer keys) and scores a sequence by a known function of it: the label
words' log-softmax of ``mean(sequence) @ E[label words]^T``. So these tests check the wire
(what is sent, in which order, in how many requests, how it is counted) and every error path;
the real server's numbers are checked by tests/test_vllm.py.
"""
import base64
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch

WORDS = ("<s> <pad> </s> <unk> . , : ( ) review sentiment or a the it was film good great bad dull fun not very "
         "negative positive").split()
LABELS = (" negative", " positive")


@pytest.fixture(scope="module")
def tiny_causal(tmp_path_factory):
    """A tiny causal model folder: a word-level tokenizer (BOS head) and a random Llama (32 hidden)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-causal")
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(WORDS), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                 num_key_value_heads=1, intermediate_size=64, pad_token_id=1, bos_token_id=0,
                                 eos_token_id=2, max_position_embeddings=64,
                                 initializer_range=0.5)).save_pretrained(folder)  # peaked outputs: weights show
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    core.normalizer = None
    core.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", pad_token="<pad>", eos_token="</s>",
                            unk_token="<unk>").save_pretrained(folder)
    return folder


class Stub:
    """What the stub server does; tests change its fields to misbehave."""

    def __init__(self, table, tokenizer):
        self.table, self.tokenizer = table.float(), tokenizer
        self.key = None  # the API key it requires
        self.fail = 0  # answer 503 to this many completions requests first
        self.delay = 0.0  # seconds before answering a completion
        self.raw = False  # raw log-probabilities (not renormalised over the allowed tokens)
        self.drop = None  # a token id left out of every answer
        self.other_tokenizer = False
        self.model = None  # a real causal LM to score with (the fingerprint's tests) instead of the mean rule
        self.requests = 0
        self.bytes_in = 0
        self.sizes = []  # sequences per completions request
        self.seen = []  # the sequences received, in order

    def complete(self, body: dict) -> tuple[int, dict]:
        if self.fail > 0:
            self.fail -= 1
            return 503, {"error": "busy"}
        time.sleep(self.delay)
        allowed = body["allowed_token_ids"]
        choices = []
        for j, b64 in enumerate(body["prompt_embeds"]):
            seq = torch.load(io.BytesIO(base64.b64decode(b64))).float()
            if seq.shape[-1] != self.table.shape[1]:
                return 400, {"error": {"message": f"prompt_embeds hidden size {seq.shape[-1]} != "
                                                  f"{self.table.shape[1]}"}}
            self.seen.append(seq)
            if self.model is not None:
                with torch.inference_mode():
                    dtype = next(self.model.parameters()).dtype
                    logits = self.model(inputs_embeds=seq[None].to(dtype)).logits[0, -1, allowed].float()
            else:
                logits = seq.mean(0) @ self.table[allowed].T
            logp = torch.log_softmax(logits, -1) - (1.0 if self.raw else 0.0)
            top = {f"token_id:{t}": float(v) for t, v in zip(allowed, logp) if t != self.drop}
            choices.append({"index": j, "text": "", "logprobs": {"top_logprobs": [top]}})
        self.sizes.append(len(body["prompt_embeds"]))
        return 200, {"choices": choices}


def _handler(stub: Stub):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _send(self, status, obj):
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorised(self):
            if stub.key and self.headers.get("Authorization") != f"Bearer {stub.key}":
                self._send(401, {"error": "Unauthorized"})
                return False
            return True

        def do_GET(self):
            stub.requests += 1
            if self._authorised() and self.path == "/v1/models":
                self._send(200, {"data": [{"id": "tiny", "max_model_len": 64}]})

        def do_POST(self):
            stub.requests += 1
            body = self.rfile.read(int(self.headers["Content-Length"]))
            stub.bytes_in += len(body)
            if not self._authorised():
                return
            body = json.loads(body)
            if self.path == "/tokenize":
                ids = stub.tokenizer(body["prompt"])["input_ids"]
                self._send(200, {"tokens": ids[::-1] if stub.other_tokenizer else ids})
            elif self.path == "/v1/completions":
                self._send(*stub.complete(body))
            else:
                self._send(404, {"error": "not found"})
    return Handler


@pytest.fixture
def stub(tiny_causal):
    from transformers import AutoTokenizer

    from bbt_mini.service.wire import embedding_table

    s = Stub(embedding_table(tiny_causal), AutoTokenizer.from_pretrained(tiny_causal))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(s))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    s.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    yield s
    server.shutdown()
    server.server_close()


def stub_fingerprint(stub, tokenizer):
    """The stub's own fingerprint (its mean rule's canary answer), as a provider would publish it."""
    from bbt_mini.service.fingerprint import canary_ids, canary_sequences

    ids = canary_ids(tokenizer)
    rows = [torch.log_softmax(seq.mean(0) @ stub.table[ids].T, -1).tolist()
            for seq in canary_sequences(tokenizer, stub.table)]
    return {"token_ids": ids, "logprobs": rows}


def _service(stub, tiny_causal, **kw):
    from bbt_mini.service.remote import RemoteService

    kw = {"retries": 1, "backoff": 0.01, "timeout": 5.0, "fingerprint": stub_fingerprint(stub, stub.tokenizer), **kw}
    return RemoteService(stub.url, LABELS, model=tiny_causal, **kw)


TEXTS = ["review: a good film. sentiment:", "review: dull, not fun. sentiment:", "review: very bad. sentiment:",
         "review: great fun film. sentiment:"]


def _prompts(service, n=3, L=2, seed=0):
    return np.random.default_rng(seed).normal(0, 0.5, (n, L, service.hidden_size)).astype(np.float32)


def test_remote_scores_are_the_label_log_softmax_of_the_sequences_sent_in_chunks(stub, tiny_causal):
    service = _service(stub, tiny_causal, per_request=5, in_flight=2, wire_dtype="float32")
    batch = service.encode(TEXTS, [1, 0, 0, 1])
    prompts = _prompts(service)
    r = service(prompts, batch)
    table = service._table.float()
    ids = [service.label_ids]
    for c in range(3):
        for i, t in enumerate(TEXTS):
            tokens = service._tokenizer(t)["input_ids"]  # BOS head, prompt, then the text
            seq = torch.cat([table[tokens[:1]], torch.from_numpy(prompts[c]), table[tokens[1:]]])
            expected = torch.log_softmax(seq.mean(0) @ table[ids[0]].T, -1).numpy()
            np.testing.assert_allclose(r.logits[c, i], expected, atol=1e-5)
    # 12 sequences in chunks of 5, after the canary; two in flight arrive in either order
    assert stub.sizes[0] == 2 and sorted(stub.sizes[1:]) == [2, 5, 5]  # the canary's two sequences first
    from bbt_mini.core.metrics import cross_entropy

    np.testing.assert_allclose(r.loss, cross_entropy(r.logits, batch.labels), rtol=1e-6)
    m = service.meter
    assert (m.calls, m.examples) == (3, 12)
    assert m.requests == stub.requests == 2 + 1 + 3  # models, tokenize, canary, three chunks
    assert m.bytes_up > stub.bytes_in > 12 * 32 * 4  # bodies plus request lines and headers


def test_bfloat16_on_the_wire_halves_the_bytes_and_rounds_like_the_server(stub, tiny_causal):
    batch_texts, labels = TEXTS[:2], [1, 0]
    sizes = {}
    for dtype in ("float32", "bfloat16"):
        service = _service(stub, tiny_causal, wire_dtype=dtype)
        service.check_server()
        before = stub.bytes_in
        service(_prompts(service, n=1, L=8), service.encode(batch_texts, labels))
        sizes[dtype] = stub.bytes_in - before
    assert stub.seen[-1].dtype == torch.float32  # the stub reads any dtype as float32
    assert 0.4 < sizes["bfloat16"] / sizes["float32"] < 0.75  # torch.save's header is the same


def test_wrong_api_key_is_refused_with_a_clear_error(stub, tiny_causal):
    from bbt_mini.service.transport import ServiceError

    stub.key = "right"
    service = _service(stub, tiny_causal, api_key="wrong")
    with pytest.raises(ServiceError, match="refused the API key"):
        service(_prompts(service), service.encode(TEXTS, [1, 0, 0, 1]))
    ok = _service(stub, tiny_causal, api_key="right")
    assert ok(_prompts(ok), ok.encode(TEXTS, [1, 0, 0, 1])).logits.shape == (3, 4, 2)


def test_label_word_missing_from_the_answer_is_an_error_not_a_loss(stub, tiny_causal):
    from bbt_mini.service.transport import ServiceError

    service = _service(stub, tiny_causal)
    stub.drop = service.label_ids[1]
    with pytest.raises(ServiceError, match="' positive'.*missing.*processed_logprobs"):
        service(_prompts(service), service.encode(TEXTS, [1, 0, 0, 1]))


def test_raw_logprobs_from_a_server_without_processed_mode_are_refused(stub, tiny_causal):
    from bbt_mini.service.transport import ServiceError

    stub.raw = True
    service = _service(stub, tiny_causal)
    with pytest.raises(ServiceError, match="sum to 0.3679, not 1.*processed_logprobs"):
        service(_prompts(service), service.encode(TEXTS, [1, 0, 0, 1]))


def test_busy_server_is_retried_with_backoff_and_the_answer_is_kept(stub, tiny_causal):
    service = _service(stub, tiny_causal, retries=3)
    service.check_server()
    stub.fail = 2
    r = service(_prompts(service), service.encode(TEXTS, [1, 0, 0, 1]))
    assert r.logits.shape == (3, 4, 2) and np.isfinite(r.loss).all()
    assert stub.fail == 0


def test_unreachable_server_gives_a_clear_error_after_bounded_retries(tiny_causal):
    import socket

    from bbt_mini.service.remote import RemoteService
    from bbt_mini.service.transport import ServiceUnavailable

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    service = RemoteService(f"http://127.0.0.1:{port}/v1", LABELS, model=tiny_causal, retries=2, backoff=0.05)
    t0 = time.perf_counter()
    with pytest.raises(ServiceUnavailable, match="after 3 tries.*ConnectionRefused.*--resume"):
        service(_prompts(service), service.encode(TEXTS, [1, 0, 0, 1]))
    assert 0.15 <= time.perf_counter() - t0 < 5  # waited 0.05 + 0.1, not forever


def test_slow_server_times_out_on_every_try(stub, tiny_causal):
    from bbt_mini.service.transport import ServiceUnavailable

    service = _service(stub, tiny_causal, timeout=0.3, retries=1)
    service.check_server()
    stub.delay = 1.0
    t0 = time.perf_counter()
    with pytest.raises(ServiceUnavailable, match="after 2 tries.*(timed out|timeout)"):
        service(_prompts(service, n=1), service.encode(TEXTS[:1], [1]))
    assert time.perf_counter() - t0 < 2.0


def test_server_with_another_tokenizer_is_refused(stub, tiny_causal):
    from bbt_mini.service.transport import ServiceError

    stub.other_tokenizer = True
    service = _service(stub, tiny_causal)
    with pytest.raises(ServiceError, match="tokenizer differs.*another model"):
        service.check_server()


def test_server_with_another_hidden_size_is_refused(stub, tiny_causal):
    from bbt_mini.service.transport import ServiceError

    stub.table = torch.zeros(len(WORDS), 64)
    service = _service(stub, tiny_causal)
    with pytest.raises(ServiceError, match="HTTP 400.*hidden size 32"):
        service.check_server()


@pytest.fixture
def other_weights(tiny_causal):
    """The tiny model's architecture, tokenizer and hidden size, re-initialised: other weights."""
    from transformers import AutoConfig, LlamaForCausalLM

    torch.manual_seed(123)
    return LlamaForCausalLM(AutoConfig.from_pretrained(tiny_causal)).eval()


def test_fingerprint_computed_in_process_accepts_the_same_weights_and_refuses_other_weights(
        stub, tiny_causal, other_weights, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    from bbt_mini.service.transport import ServiceError

    monkeypatch.setenv("BBT_MINI_CACHE", str(tmp_path))
    stub.model = AutoModelForCausalLM.from_pretrained(tiny_causal, dtype=torch.float32).eval()
    same = _service(stub, tiny_causal, fingerprint="auto")
    same.check_server()
    assert same.fingerprint_gap < 1e-4
    assert len(list((tmp_path / "fingerprints").glob("*.json"))) == 1  # computed once, then read back
    stub.model = other_weights  # same tokenizer, same hidden size: passes every other check
    other = _service(stub, tiny_causal, fingerprint="auto")
    with pytest.raises(ServiceError, match=r"canary request differs.*by \d+\.\d+.*other weights.*refused"):
        other.check_server()


def test_fingerprint_tolerance_admits_a_bfloat16_server_of_the_same_weights(stub, tiny_causal, tmp_path,
                                                                            monkeypatch):
    from transformers import AutoModelForCausalLM

    monkeypatch.setenv("BBT_MINI_CACHE", str(tmp_path))
    stub.model = AutoModelForCausalLM.from_pretrained(tiny_causal, dtype=torch.bfloat16).eval()
    service = _service(stub, tiny_causal, fingerprint="auto", wire_dtype="bfloat16")
    service.check_server()
    assert 0 < service.fingerprint_gap < 0.3


def test_published_fingerprint_is_used_before_computing_one(stub, tiny_causal, tmp_path):
    import shutil

    from transformers import AutoModelForCausalLM

    from bbt_mini.service.fingerprint import FINGERPRINT_FILE, model_fingerprint, publish_fingerprint
    from bbt_mini.service.transport import ServiceError

    folder = tmp_path / "published"
    shutil.copytree(tiny_causal, folder)
    stub.model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    published = publish_fingerprint(folder)
    assert model_fingerprint(folder) == json.loads(published.read_text())
    _service(stub, folder, fingerprint="auto").check_server()
    wrong = json.loads(published.read_text())
    wrong["logprobs"][0][0] += 1.0
    (folder / FINGERPRINT_FILE).write_text(json.dumps(wrong))
    with pytest.raises(ServiceError, match="differs from .*fingerprint by 1.0"):
        _service(stub, folder, fingerprint="auto").check_server()


def test_without_a_fingerprint_other_weights_pass_with_a_warning_saying_what_was_checked(stub, tiny_causal,
                                                                                        other_weights):
    stub.model = other_weights
    service = _service(stub, tiny_causal, fingerprint=None)
    with pytest.warns(UserWarning, match="only the server's model name, tokenizer and hidden size were checked"):
        service.check_server()
    assert service.fingerprint_gap is None


def test_deep_prompts_and_hidden_states_are_refused(stub, tiny_causal):
    from bbt_mini.service.transport import ServiceError

    service = _service(stub, tiny_causal)
    batch = service.encode(TEXTS, [1, 0, 0, 1])
    with pytest.raises(ServiceError, match="deep prompts.*does not expose"):
        service(np.zeros((1, service.num_layers, 2, service.hidden_size), np.float32), batch)
    with pytest.raises(ServiceError, match="no hidden states"):
        service.hidden_stats(batch)


def test_bbtv2_and_white_box_methods_are_refused_through_a_service_before_any_call():
    from bbt_mini.run.spec import RunSpec

    for method in ("bbtv2", "prompt_tuning", "icl"):
        with pytest.raises(ValueError, match=f"{method} cannot run through a remote service"):
            RunSpec(method, service="http://127.0.0.1:9/v1")


def test_bbt_runs_unchanged_through_the_remote_service(stub, tiny_causal):
    from bbt_mini.methods.bbt import BBTConfig, run_bbt
    from bbt_mini.run.prepare import prepare

    service = _service(stub, tiny_causal, per_request=16)
    setup = prepare("rotten_tomatoes", tiny_causal, seed=1, profile="ci", k=2, test_size=6, service=service)
    assert setup.service.label_words == LABELS and setup.service is service
    config = BBTConfig(prompt_length=2, intrinsic_dim=6, popsize=4, budget=16, eval_every=8, sigma0=1.0, p0="zeros")
    result = run_bbt(setup, config, seed=1, progress=False)
    assert result["calls"] == 16 and result["model"] == str(tiny_causal) and result["device"] == stub.url
    assert 0.0 <= result["test_accuracy"] <= 1.0
    assert service.meter.bytes_up > 16 * 4 * 2 * 32 * 2  # every call's embedded sequences went on the wire


def test_service_url_builds_a_remote_service_with_the_key_and_the_servers_dtype(stub, tiny_causal, monkeypatch,
                                                                                 tmp_path):
    from transformers import AutoModelForCausalLM

    from bbt_mini.run.prepare import prepare
    from bbt_mini.service.remote import RemoteService

    stub.key = "k"
    stub.model = AutoModelForCausalLM.from_pretrained(tiny_causal, dtype=torch.float32).eval()  # the fingerprint's
    monkeypatch.setenv("BBT_API_KEY", "k")
    monkeypatch.setenv("BBT_MINI_CACHE", str(tmp_path))
    setup = prepare("rotten_tomatoes", str(tiny_causal), seed=1, profile="ci", k=2, test_size=4, service=stub.url,
                    dtype="bf16")
    service = setup.service
    assert isinstance(service, RemoteService) and service.label_words == LABELS and service.dtype == "bfloat16"
    assert service(_prompts(service, n=1), setup.train).logits.shape == (1, 4, 2)


@pytest.mark.parametrize("bad, match", [
    (dict(loss="mse"), "unknown loss 'mse'"),
    (dict(prompts=np.zeros((2, 3), np.float32)), r"prompts must have shape \(n, L, 32\)"),
    (dict(prompts=np.full((1, 2, 32), np.nan, np.float32)), "prompts contain NaN or inf"),
    (dict(prompts=np.zeros((0, 2, 32), np.float32)), "no candidate prompts given"),
    (dict(budget=2), "needs 3 API calls but only 2 of the budget of 2"),
])
def test_remote_and_in_process_services_refuse_the_same_requests_alike(stub, tiny_causal, bad, match):
    """One copy of the provider's checks (bbt_mini.service.base): both services refuse a bad request the same way."""
    from bbt_mini.lm.loading import load_model
    from bbt_mini.service.base import BudgetExhausted
    from bbt_mini.service.blackbox import BlackBox

    local = BlackBox(load_model(str(tiny_causal), device="cpu", dtype=torch.float32), LABELS,
                     budget=bad.get("budget"))
    remote = _service(stub, tiny_causal, budget=bad.get("budget"))
    prompts = bad.get("prompts", _prompts(remote))
    for service in (local, remote):
        batch = service.encode(TEXTS[:2], [0, 1])
        with pytest.raises((ValueError, BudgetExhausted), match=match):
            service(prompts, batch, loss=bad.get("loss"))


def _is(value, hint) -> bool:
    """``value`` is of the annotated type (a union: of one of its members; a generic: of its origin)."""
    import types
    import typing

    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    return any(isinstance(value, typing.get_origin(o) or o) for o in options)


def test_both_services_satisfy_the_service_protocol_with_compatible_signatures(tiny_causal):
    """BlackBox and RemoteService are Services: every published member, of its type, every method callable as the
    protocol says; a box without the call and the meter (the white box) is not one. No server is reached."""
    import inspect
    import typing

    from bbt_mini.lm.loading import load_model
    from bbt_mini.service.base import Service
    from bbt_mini.service.blackbox import BlackBox
    from bbt_mini.service.remote import RemoteService
    from bbt_mini.service.whitebox import WhiteBox

    local = BlackBox(load_model(str(tiny_causal), device="cpu", dtype=torch.float32), LABELS)
    remote = RemoteService("http://127.0.0.1:9/v1", LABELS, model=tiny_causal, fingerprint=None)  # never called
    hints = typing.get_type_hints(Service)
    methods = [n for n, v in vars(Service).items() if inspect.isfunction(v) and v.__qualname__ == f"Service.{n}"]
    assert {"meter", "label_words"} <= set(hints) and {"embedding_stats", "encode", "__call__"} <= set(methods)
    for service in (local, remote):
        assert isinstance(service, Service)
        for name, hint in hints.items():
            assert _is(getattr(service, name), hint), (type(service).__name__, name)
        for name in methods:
            want = list(inspect.signature(getattr(Service, name)).parameters.values())
            got = list(inspect.signature(getattr(type(service), name)).parameters.values())
            where = (type(service).__name__, name)
            assert [p.name for p in got[:len(want)]] == [p.name for p in want], where
            for w, g in zip(want, got):
                assert g.kind == w.kind and (w.default is w.empty or g.default == w.default), where
                assert w.annotation is w.empty or g.annotation in (g.empty, w.annotation), where
            assert all(g.default is not g.empty for g in got[len(want):]), where  # extras are optional
    assert not isinstance(WhiteBox.behind(local), Service)
    # The same model behind both: the same published tokenizer, embeddings and sizes.
    for name in ("kind", "mask_token", "hidden_size", "num_layers", "num_classes", "vocab_size"):
        assert getattr(local, name) == getattr(remote, name), name
    ids = local.token_ids(TEXTS[0])
    assert remote.token_ids(TEXTS[0]) == ids and remote.token_strings(ids) == local.token_strings(ids)
    np.testing.assert_array_equal(remote.token_embeddings(ids), local.token_embeddings(ids))
    assert local.encode(TEXTS, [0, 1, 0, 1]).pieces == remote.encode(TEXTS, [0, 1, 0, 1]).pieces
