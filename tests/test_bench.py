"""The benchmark's two ways of evaluating prompts agree (their speed is not tested here)."""
from pathlib import Path

import numpy as np
import pytest
import torch

from bbt_mini.core.settings import peak_memory
from bbt_mini.lm.tiny import SHAPE_WORDS, random_shape_model, synthetic_batch
from bbt_mini.run.bench import naive_logits
from bbt_mini.service.blackbox import BlackBox

# roberta-large's shape made small: the test is about agreement, not size
SMALL = dict(num_hidden_layers=2, vocab_size=2000, hidden_size=64, num_attention_heads=2, intermediate_size=128)


def test_naive_and_fast_agree_with_shallow_and_deep_prompts_tiny_causal(tiny_causal_setup, tiny_causal):
    service, batch = tiny_causal_setup.service, tiny_causal_setup.train
    rng = np.random.default_rng(0)
    P = (0.5 * rng.standard_normal((3, 4, tiny_causal.hidden_size))).astype(np.float32)
    with torch.inference_mode():
        ref = naive_logits(tiny_causal, service.label_ids, torch.tensor(P), batch).numpy()
    np.testing.assert_allclose(service(P, batch).logits, ref, atol=1e-5)
    deep = (0.5 * rng.standard_normal((2, tiny_causal.num_layers, 3, tiny_causal.hidden_size))).astype(np.float32)
    with torch.inference_mode():
        ref = naive_logits(tiny_causal, service.label_ids, torch.tensor(deep), batch).numpy()
    np.testing.assert_allclose(service(deep, batch).logits, ref, atol=1e-5)


@pytest.mark.real_model
def test_naive_and_fast_agree_on_smollm2(smol_setup, smol):
    service = smol_setup.service
    rng = np.random.default_rng(0)
    P = (0.1 * rng.standard_normal((3, 4, smol.hidden_size))).astype(np.float32)
    with torch.inference_mode():
        ref = naive_logits(smol, service.label_ids, torch.tensor(P), smol_setup.train).numpy()
    np.testing.assert_allclose(service(P, smol_setup.train).logits, ref, atol=1e-4)
    deep = (0.05 * rng.standard_normal((2, smol.num_layers, 3, smol.hidden_size))).astype(np.float32)
    with torch.inference_mode():
        ref = naive_logits(smol, service.label_ids, torch.tensor(deep), smol_setup.train).numpy()
    np.testing.assert_allclose(service(deep, smol_setup.train).logits, ref, atol=1e-4)


def test_naive_and_fast_agree_on_a_masked_shape():
    lm = random_shape_model("roberta-large-shape", torch.device("cpu"), torch.float32, **SMALL)
    service = BlackBox(lm, SHAPE_WORDS)
    batch = synthetic_batch(lm, 3, 12, 2)
    P = (0.02 * np.random.default_rng(1).standard_normal((2, 5, lm.hidden_size))).astype(np.float32)
    with torch.inference_mode():
        ref = naive_logits(lm, service.label_ids, torch.tensor(P), batch).numpy()
    np.testing.assert_allclose(service(P, batch).logits, ref, atol=1e-4)


def test_the_naive_way_is_timed_on_exactly_naive_calls_candidates(monkeypatch):
    # The naive time is divided by naive_calls, so exactly that many candidates must run,
    # whether naive_calls is below or above the population size.
    import bbt_mini.run.bench as bench_module

    shape = bench_module.random_shape_model
    monkeypatch.setattr(bench_module, "random_shape_model",
                        lambda name, device, dtype, seed: shape(name, device, dtype, seed, **SMALL))
    seen = []
    naive = bench_module.naive_logits

    def counting(lm, label_ids, prompts, batch):
        seen.append(len(prompts))
        return naive(lm, label_ids, prompts, batch)

    monkeypatch.setattr(bench_module, "naive_logits", counting)
    for naive_calls, popsize in ((3, 4), (5, 2)):
        seen.clear()
        r = bench_module.bench("roberta-large-shape", calls=2, naive_calls=naive_calls, popsize=popsize, examples=2,
                               tokens=8, device="cpu", dtype="float32")
        assert seen[1:] == [naive_calls]  # after the one-candidate warm-up
        assert r["logits_agree"] and r["naive_calls"] == naive_calls


def test_bench_refuses_zero_calls():
    from bbt_mini.run.bench import bench

    with pytest.raises(ValueError, match="naive_calls must be at least 1"):
        bench("roberta-large-shape", naive_calls=0)


def test_bf16_tolerance_scales_with_the_logits_and_fp32_stays_absolute():
    from bbt_mini.run.bench import tolerance

    ref = np.array([[[-3.0, 20.0]], [[1.0, 4.0]]])
    assert tolerance(torch.float32, ref) == 1e-3
    assert tolerance(torch.bfloat16, ref) == pytest.approx(2.0)
    assert tolerance(torch.bfloat16, ref / 10) == pytest.approx(0.2)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads Linux's /proc")
def test_peak_memory_on_a_cpu_is_this_process_high_water_mark():
    def status(field: str) -> int:
        lines = Path("/proc/self/status").read_text().splitlines()
        return int(next(line for line in lines if line.startswith(field + ":")).split()[1]) * 1024  # kB

    before = peak_memory()
    block = np.ones((status("VmHWM") - status("VmRSS") + 2**26) // 8)  # resident past the peak: it must rise
    after = peak_memory(torch.device("cpu"))
    assert status("VmRSS") <= after <= status("VmHWM")
    assert after - before >= 2**26, "allocating past the peak did not raise it"
    del block


def test_the_service_benchmark_scores_one_example_alone_as_in_the_whole_batch(tiny_causal_setup, tiny_causal):
    """bbt_mini.run.bench_lmaas times the black box one sequence per forward against all at once:
    the same logits either way, and call_rate returns the service's answer with a positive rate."""
    from bbt_mini.run.bench_lmaas import call_rate, one_example

    service, batch = tiny_causal_setup.service, tiny_causal_setup.train
    P = (0.5 * np.random.default_rng(2).standard_normal((2, 4, tiny_causal.hidden_size))).astype(np.float32)
    rate, whole = call_rate(service, P, batch, repeats=2)
    assert rate > 0 and whole.logits.shape == (2, len(batch.labels), len(service.label_words))
    for i in range(len(batch.labels)):
        np.testing.assert_allclose(service(P, one_example(batch, i)).logits[:, 0], whole.logits[:, i], atol=1e-5)
