"""Shared fixtures. No test touches the network: the hub is switched off and sockets to
anything but this machine are refused for the whole session."""
import os
import socket

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402
from tiny import tiny_causal_folder, tiny_folder, tiny_lm, tiny_setup  # noqa: E402

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
    return tiny_lm(tiny_folder(tmp_path_factory, request.param))


@pytest.fixture(scope="session")
def tiny_causal(tmp_path_factory):
    """A tiny random causal LM (Llama, 2 layers, BOS head, 256 tokens): checks plumbing, never results."""
    return tiny_lm(tiny_causal_folder(tmp_path_factory))


@pytest.fixture()
def tiny_causal_setup(tiny_causal):
    """Rotten Tomatoes, 2 shots per class, 6 test sentences, on the tiny causal LM."""
    return tiny_setup(tiny_causal, test_size=6)


@pytest.fixture()
def smol_setup(smol):
    """Rotten Tomatoes, 2 shots per class, 8 test sentences, on float32 SmolLM2."""
    from bbt_mini.run.prepare import prepare

    return prepare("rotten_tomatoes", smol, seed=1, profile="small", k=2, test_size=8)
