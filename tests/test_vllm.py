"""BBT through a real vLLM server: marked ``vllm``; CI builds the server's environment.

The tests use the server that ``make test`` starts once for the whole run
(``tools/shared_server.py``: ``BBT_SERVICE_URL``, ``BBT_API_KEY``, and ``BBT_SERVICE_PIDFILE``
naming its process), or, where that is not set (``pytest tests/test_vllm.py`` alone), start
their own for this module (``bbt_mini.run.server.start``: its own environment, its own process
group, port 8012, an API key, ``--enforce-eager``). They check the label-word scores against
the in-process model, run BBT (ci profile) through the command line, kill the server in the
middle of a second run, check the error, restart the server on the same port (the shared one
is restarted by its supervisor, our own by this module) and check that ``--resume`` ends
exactly where the uninterrupted run did. Our own server is always stopped.

Tolerances: the server runs ``bbt_mini.run.server.default_dtype()`` (float32 on a CPU): its
label-word log-probabilities must match the in-process float32 model within 2e-3; a bfloat16
server (a GPU) within 0.15 (bf16 keeps 8 bits of mantissa: about 0.4 % per number, ~0.05
measured on a log-probability of -2.6, and up to 0.06 on one of -7.9). The same bounds hold
for the server's answer to the weights' canary request against the model's fingerprint.
"""
import json
import os
import signal
import socket
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.vllm

PORT = 8012
START_S = float(os.environ.get("BBT_VLLM_START_S", 600))  # the server's start, bounded (about 50 s here)
FLAGS = ("--enforce-eager",)  # as tools/shared_server.py: no compilation warm-up (53 s to answer, not 199 s)
TOLERANCE = {"float32": 2e-3, "bfloat16": 0.15, "float16": 0.15}  # float16: a T4, finer than bf16


class Own:
    """A server this module starts, kills and restarts on its own port."""

    url, key = f"http://127.0.0.1:{PORT}/v1", "bbt-vllm-test"

    def __init__(self, log):
        self.log, self.proc = log, None

    def start(self):
        from bbt_mini.run import server

        self.proc = server.start(port=PORT, api_key=self.key, log=self.log, wait_s=START_S, extra=FLAGS)

    def kill(self):
        from bbt_mini.run import server

        if self.proc is not None:
            server.stop(self.proc)

    restart, close = start, kill


class Shared:
    """The run's shared server: killed through its pid file; its supervisor starts it again."""

    def __init__(self):
        self.url, self.key = os.environ["BBT_SERVICE_URL"], os.environ.get("BBT_API_KEY")
        self.pidfile = Path(os.environ["BBT_SERVICE_PIDFILE"])

    def start(self):
        from bbt_mini.run import server

        assert server.ready(self.url, self.key), f"the shared server at {self.url} does not answer"

    def kill(self):
        self.killed = int(self.pidfile.read_text())
        port = int(self.url.split(":")[-1].split("/")[0])
        for sig, wait_s in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):  # as server.stop does
            try:
                os.killpg(self.killed, sig)  # its own process group: the engine processes too
            except ProcessLookupError:
                return
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                except OSError:
                    return  # nobody listens: the next call fails as against a dead server
                time.sleep(0.2)

    def restart(self):
        from bbt_mini.run import server

        deadline = time.monotonic() + START_S
        while time.monotonic() < deadline:  # a new pid in the file, and the new server answering
            if self.pidfile.is_file() and self.pidfile.read_text() not in ("", str(self.killed)) \
                    and server.ready(self.url, self.key):
                return
            time.sleep(2)
        raise TimeoutError(f"the shared server at {self.url} was not started again within {START_S:.0f} s")

    def close(self):
        pass  # the supervisor (tools/shared_server.py) stops it at the end of the run


@pytest.fixture(scope="module")
def vllm(tmp_path_factory):
    s = Shared() if os.environ.get("BBT_SERVICE_PIDFILE") else Own(tmp_path_factory.mktemp("vllm") / "server.log")
    try:
        s.start()
        yield s
    finally:
        s.close()


def _remote(vllm, **kw):
    from bbt_mini.service.remote import RemoteService

    return RemoteService(vllm.url, (" negative", " positive"), api_key=vllm.key, **kw)


def test_vllm_label_word_scores_match_the_in_process_model(vllm, smol):
    from bbt_mini.run.prepare import prepare
    from bbt_mini.service.blackbox import BlackBox

    remote = _remote(vllm)
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

    remote = _remote(vllm)
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
    cli = ["run", "--task", "rotten_tomatoes", "--method", "bbt", "--service", vllm.url, "--api-key", vllm.key,
           "--seed", "1",
           "--profile", "ci", "--quiet"]
    assert main([*cli, "--out", str(tmp_path / "whole.json")]) == 0
    whole = json.loads((tmp_path / "whole.json").read_text())
    assert whole["device"] == vllm.url and whole["calls"] == 16 and whole["meter"]["bytes_up"] > 0

    class KillsTheServer(RemoteService):
        """Stops the server once 12 calls are spent (after the checkpoint at 8)."""

        def __call__(self, prompts, batch, loss=None, base=None):
            if self.meter.calls >= 12:
                vllm.kill()
            return super().__call__(prompts, batch, loss, base)

    service = KillsTheServer(vllm.url, (" negative", " positive"), api_key=vllm.key, retries=2, backoff=0.5)
    setup = prepare("rotten_tomatoes", "smollm2", seed=1, profile="ci", service=service)
    checkpoint = tmp_path / "run.ckpt"
    t0 = time.perf_counter()
    with pytest.raises(ServiceUnavailable, match="after 3 tries.*--resume"):
        run_bbt(setup, BBTConfig.from_profile(get_profile("ci")), seed=1, checkpoint=checkpoint, progress=False)
    assert time.perf_counter() - t0 < 120 and checkpoint.exists()

    vllm.restart()
    monkeypatch.setenv("BBT_API_KEY", "")
    assert main([*cli, "--checkpoint", str(checkpoint), "--resume", "--out", str(tmp_path / "resumed.json")]) == 0
    resumed = json.loads((tmp_path / "resumed.json").read_text())
    for key in ("curve", "calls", "dev_calls", "best_dev_acc", "best_dev_calls", "test_accuracy", "tokens"):
        assert resumed[key] == whole[key], key
