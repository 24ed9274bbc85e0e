"""The tests' one way to build the tiny random models and a ready Setup on them.

``conftest.py``'s fixtures (``tiny_masked``, ``tiny_causal``, ``tiny_causal_setup``) are built
from these helpers, and tests that need their own copy (module-scoped, another family) call
them directly. Their outputs are noise: tests on them check plumbing and bookkeeping, never
results. The word-level tokenizer knows a few dozen words (the embedding table has 1,100
rows, so p0's tokens 1000.. exist but mean nothing); :data:`TINY` uses ``p0="zeros"``.
"""
import torch

# BBT/BBTv2 settings small enough for a tiny model: 4 calls per generation, dev checks every 8 calls.
TINY = {"prompt_length": 2, "intrinsic_dim": 6, "popsize": 4, "budget": 16, "eval_every": 8, "sigma0": 1.0,
        "p0": "zeros"}


def tiny_folder(tmp_path_factory, family: str = "roberta"):
    from bbt_mini.lm.tiny import tiny_random_masked_lm

    return tiny_random_masked_lm(tmp_path_factory.mktemp(f"tiny-{family}"), family)


def tiny_causal_folder(tmp_path_factory):
    from bbt_mini.lm.tiny import tiny_random_causal_lm

    return tiny_random_causal_lm(tmp_path_factory.mktemp("llama"))


def tiny_lm(folder, dtype=torch.float32):
    from bbt_mini.lm.loading import load_model

    return load_model(str(folder), device="cpu", dtype=dtype)


def tiny_setup(lm, seed: int = 1, k: int = 2, test_size: int = 8, **kw):
    """Rotten Tomatoes, ``k`` shots per class, ``test_size`` test sentences, on ``lm``."""
    from bbt_mini.run.prepare import prepare

    return prepare("rotten_tomatoes", lm, seed=seed, profile="ci", k=k, test_size=test_size, **kw)
