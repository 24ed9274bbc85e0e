"""A tiny random masked LM and a ready Setup on it, for tests of the tuning loop and the CLI.

Its outputs are noise: tests on it check plumbing and bookkeeping, never results. Its
vocabulary has a few dozen words, so BBT's ``p0`` must be ``zeros`` (tokens 1000.. do not exist).
"""
import torch

# BBT/BBTv2 settings small enough for a tiny model: 4 calls per generation, dev checks every 8 calls.
TINY = {"prompt_length": 2, "intrinsic_dim": 6, "popsize": 4, "budget": 16, "eval_every": 8, "sigma0": 1.0,
        "p0": "zeros"}


def tiny_folder(tmp_path_factory, family: str = "roberta"):
    from bbt_mini.lm.tiny import tiny_random_masked_lm

    return tiny_random_masked_lm(tmp_path_factory.mktemp(f"tiny-{family}"), family)


def tiny_lm(folder, dtype=torch.float32):
    from bbt_mini.lm.loading import load_model

    return load_model(str(folder), device="cpu", dtype=dtype)


def tiny_setup(lm, seed: int = 1, k: int = 2, test_size: int = 8, **kw):
    """Rotten Tomatoes, ``k`` shots per class, ``test_size`` test sentences, on ``lm``."""
    from bbt_mini.run.prepare import prepare

    return prepare("rotten_tomatoes", lm, seed=seed, profile="ci", k=k, test_size=test_size, **kw)
