"""BBT through a real vLLM server (issue 12): marked ``vllm``; CI builds the server's environment.

The module starts vLLM on the offline SmolLM2 (``bbt_mini.run.server.start``: its own
environment, its own process group, port 8012, an API key), checks the label-word scores
against the in-process model, runs BBT (ci profile) through the command line, kills the
server in the middle of a second run, checks the error, restarts the server and checks that
``--resume`` ends exactly where the uninterrupted run did. The server is always stopped.

Tolerances: the server runs ``bbt_mini.run.server.default_dtype()`` (float32 on a CPU): its
label-word log-probabilities must match the in-process float32 model within 2e-3; a bfloat16
server (a GPU) within 0.15 (bf16 keeps 8 bits of mantissa: about 0.4 % per number, ~0.05
measured on a log-probability of -2.6, and up to 0.06 on one of -7.9). The same bounds hold
for the server's answer to the weights' canary request against the model's fingerprint.
"""
import json
import os
import time

import numpy as np
import pytest

pytestmark = pytest.mark.vllm

PORT = 8012
KEY = "bbt-vllm-test"
URL = f"http://127.0.0.1:{PORT}/v1"
START_S = float(os.environ.get("BBT_VLLM_START_S", 600))  # the server's start, bounded (~3 min measured here)
TOLERANCE = {"float32": 2e-3, "bfloat16": 0.15, "float16": 0.15}  # float16: a T4, finer than bf16


class Server:
    def __init__(self, log):
        self.log, self.proc = log, None

    def start(self):
        from bbt_mini.run import server

        t0 = time.perf_counter()
        self.proc = server.start(port=PORT, api_key=KEY, log=self.log, wait_s=START_S)
        self.start_s = time.perf_counter() - t0

    def stop(self):
        from bbt_mini.run import server

        if self.proc is not None:
            server.stop(self.proc)


@pytest.fixture(scope="module")
def vllm(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("vllm") / "server.log")
    try:
        s.start()
        yield s
    finally:
        s.stop()


def _remote(**kw):
    from bbt_mini.service.remote import RemoteService

    return RemoteService(URL, (" negative", " positive"), api_key=KEY, **kw)


def test_vllm_label_word_scores_match_the_in_process_model(vllm, smol):
    from bbt_mini.run.prepare import prepare
    from bbt_mini.service.blackbox import BlackBox

    remote = _remote()
    setup = prepare("rotten_tomatoes", "smollm2", seed=1, profile="ci", service=remote)
    local = BlackBox(smol, remote.label_words)
    from bbt_mini.methods.experiment import texts_for

    texts = texts_for(setup.task, setup.verbalizer, setup.split.test, local, "prepend")
    batch = local.encode(texts, setup.test.labels)
    assert batch.pieces == setup.test.pieces and batch.head == setup.test.head  # one tokenizer, both sides
    rng = np.random.default_rng(0)
    p0 = remote.token_embeddings(range(1000, 1004))
    prompts = (p0[None] + rng.normal(0, 0.02, (3, 4, remote.hidden_size))).astype(np.float32)
    theirs = remote(prompts, setup.test)
    ours = local(prompts, batch)
    ours_logp = ours.logits - np.logaddexp.reduce(ours.logits, -1, keepdims=True)
    gap = np.abs(theirs.logits - ours_logp).max()
    assert gap < TOLERANCE[remote.dtype], f"label-word log-probabilities differ by {gap:.4f}"
    np.testing.assert_allclose(theirs.loss, ours.loss, atol=TOLERANCE[remote.dtype])
    assert remote.meter.calls == 3 and remote.meter.requests >= 4  # models, tokenize, canary, completions
    # the canary's answer against the fingerprint computed in-process from the same weights
    assert remote.fingerprint_gap is not None and remote.fingerprint_gap < TOLERANCE[remote.dtype]


def test_vllm_refuses_a_wrong_api_key_clearly(vllm):
    from bbt_mini.service.transport import ServiceError

    remote = _remote()
    remote.api_key = "not-the-key"
    with pytest.raises(ServiceError, match="refused the API key"):
        remote.check_server()


def test_vllm_bbt_killed_server_is_a_clear_error_and_resume_ends_like_the_uninterrupted_run(vllm, tmp_path,
                                                                                              monkeypatch, capsys):
    from bbt_mini.__main__ import main
    from bbt_mini.core.profiles import get_profile
    from bbt_mini.methods.bbt import BBTConfig, run_bbt
    from bbt_mini.run.prepare import prepare
    from bbt_mini.service.remote import RemoteService
    from bbt_mini.service.transport import ServiceUnavailable

    monkeypatch.setenv("BBT_API_KEY", "")
    cli = ["run", "--task", "rotten_tomatoes", "--method", "bbt", "--service", URL, "--api-key", KEY, "--seed", "1",
           "--profile", "ci", "--quiet"]
    assert main([*cli, "--out", str(tmp_path / "whole.json")]) == 0
    whole = json.loads((tmp_path / "whole.json").read_text())
    assert whole["device"] == URL and whole["calls"] == 16 and whole["meter"]["bytes_up"] > 0

    class KillsTheServer(RemoteService):
        """Stops the server once 12 calls are spent (after the checkpoint at 8)."""

        def __call__(self, prompts, batch, loss=None):
            if self.meter.calls >= 12:
                vllm.stop()
            return super().__call__(prompts, batch, loss)

    service = KillsTheServer(URL, (" negative", " positive"), api_key=KEY, retries=2, backoff=0.5)
    setup = prepare("rotten_tomatoes", "smollm2", seed=1, profile="ci", service=service)
    checkpoint = tmp_path / "run.ckpt"
    t0 = time.perf_counter()
    with pytest.raises(ServiceUnavailable, match="after 3 tries.*--resume"):
        run_bbt(setup, BBTConfig.from_profile(get_profile("ci")), seed=1, checkpoint=checkpoint, progress=False)
    assert time.perf_counter() - t0 < 120 and checkpoint.exists()

    vllm.start()
    monkeypatch.setenv("BBT_API_KEY", "")
    assert main([*cli, "--checkpoint", str(checkpoint), "--resume", "--out", str(tmp_path / "resumed.json")]) == 0
    resumed = json.loads((tmp_path / "resumed.json").read_text())
    for key in ("curve", "calls", "dev_calls", "best_dev_acc", "best_dev_calls", "test_accuracy", "tokens"):
        assert resumed[key] == whole[key], key
