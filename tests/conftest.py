"""Shared fixtures. No test touches the network: the hub is switched off and sockets to
anything but this machine are refused for the whole session."""
import os
import socket

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

_connect = socket.socket.connect


def _local_only(self, address):
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, str) and host not in ("127.0.0.1", "localhost", "::1") and not host.startswith("/"):
        raise OSError(f"tests must not reach the network (tried {address})")
    return _connect(self, address)


socket.socket.connect = _local_only


@pytest.fixture(scope="session")
def smol():
    """The offline SmolLM2 in float32 (exact comparisons). Slow on a CPU: for ``real_model`` tests."""
    from bbt_mini.lm.loading import load_model

    return load_model("smollm2", device="cpu", dtype=torch.float32)


@pytest.fixture(scope="session", params=["roberta", "bert"])
def tiny_masked(request, tmp_path_factory):
    """A tiny random masked LM: checks plumbing, never results."""
    from bbt_mini.lm.loading import load_model
    from bbt_mini.lm.tiny import tiny_random_masked_lm

    folder = tiny_random_masked_lm(tmp_path_factory.mktemp(request.param), request.param)
    return load_model(str(folder), device="cpu", dtype=torch.float32)


@pytest.fixture(scope="session")
def tiny_causal(tmp_path_factory):
    """A tiny random causal LM (Llama, 2 layers, BOS head, 256 tokens): checks plumbing, never results."""
    from bbt_mini.lm.loading import load_model
    from bbt_mini.lm.tiny import tiny_random_causal_lm

    folder = tiny_random_causal_lm(tmp_path_factory.mktemp("llama"))
    return load_model(str(folder), device="cpu", dtype=torch.float32)


@pytest.fixture()
def tiny_causal_setup(tiny_causal):
    """Rotten Tomatoes, 2 shots per class, 6 test sentences, on the tiny causal LM."""
    from bbt_mini.run.prepare import prepare

    return prepare("rotten_tomatoes", tiny_causal, seed=1, profile="ci", k=2, test_size=6)


@pytest.fixture()
def tiny_setup(smol):
    """Rotten Tomatoes, 2 shots per class, 8 test sentences, on float32 SmolLM2."""
    from bbt_mini.run.prepare import prepare

    return prepare("rotten_tomatoes", smol, seed=1, profile="small", k=2, test_size=8)
