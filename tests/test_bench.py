"""The benchmark's two ways of evaluating prompts agree (their speed is not tested here)."""
import numpy as np
import torch

from bbt_mini.bench import naive_logits, random_shape_model, synthetic_batch
from bbt_mini.blackbox import BlackBox


def test_naive_and_fast_agree_on_smollm2(tiny_setup, smol):
    service = tiny_setup.service
    rng = np.random.default_rng(0)
    P = (0.1 * rng.standard_normal((3, 4, smol.hidden_size))).astype(np.float32)
    with torch.inference_mode():
        ref = naive_logits(smol, service.label_ids, torch.tensor(P), tiny_setup.train).numpy()
    np.testing.assert_allclose(service(P, tiny_setup.train).logits, ref, atol=1e-4)
    deep = (0.05 * rng.standard_normal((2, smol.num_layers, 3, smol.hidden_size))).astype(np.float32)
    with torch.inference_mode():
        ref = naive_logits(smol, service.label_ids, torch.tensor(deep), tiny_setup.train).numpy()
    np.testing.assert_allclose(service(deep, tiny_setup.train).logits, ref, atol=1e-4)


def test_naive_and_fast_agree_on_a_masked_shape():
    lm = random_shape_model("roberta-large-shape", torch.device("cpu"), torch.float32, num_hidden_layers=2)
    service = BlackBox(lm, ["a", "b"])
    batch = synthetic_batch(lm, 3, 12, 2)
    P = (0.02 * np.random.default_rng(1).standard_normal((2, 5, lm.hidden_size))).astype(np.float32)
    with torch.inference_mode():
        ref = naive_logits(lm, service.label_ids, torch.tensor(P), batch).numpy()
    np.testing.assert_allclose(service(P, batch).logits, ref, atol=1e-4)
