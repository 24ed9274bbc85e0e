"""Benchmark: the black box's way of evaluating prompts against the naive way, same inputs.

    python -m bbt_mini.run.bench                      # SmolLM2 offline, BBT calls, on this machine
    python -m bbt_mini.run.bench --method bbtv2       # deep prompts
    python -m bbt_mini.run.bench --model roberta-large-shape --device cuda --examples 32 --tokens 96 \\
        --prompt-length 50 --popsize 20 --calls 8000 --out gpu.json

The naive way is what the authors' code does: one float32 forward per candidate prompt,
logits over the whole vocabulary at every position, nothing cached, examples padded to
the longest. The package's way is :class:`bbt_mini.service.blackbox.BlackBox`: a whole population
per request, length-sorted groups, the prompt's keys/values shared (causal LMs), only the
label words' logits at the read-out position, bf16 where the processor runs it fast.

Both ways score the same candidates on the same examples; the benchmark checks that
their class logits agree (``max_abs_logit_diff``, and the fraction of argmax decisions
that agree) and writes seconds per call, their ratio, tokens per second and peak memory.
``*-shape`` models have random weights of a real model's shape: cost does not depend on
weight values, so they time a model that cannot be downloaded here (the output says so).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import numpy as np
import torch

from ..core.settings import DTYPES, default_device, default_dtype, peak_memory
from ..data.splits import kshot_split
from ..data.tasks import get_task
from ..lm.encoding import Batch
from ..lm.loading import load_model
from ..lm.models import LanguageModel
from ..lm.tiny import SHAPE_WORDS, SHAPES, random_shape_model, synthetic_batch
from ..methods.experiment import texts_for
from ..methods.registry import METHODS, TUNERS
from ..service.blackbox import BlackBox
from ..service.forward import DeepPrompt

# How far the package's class logits may be from the naive float32 ones. float32: an absolute
# bound (the two ways do the same arithmetic in another order). bfloat16 keeps 8 significant
# bits of every weight and activation, and over a deep model the class logits move by a few
# per cent of their size (measured on SmolLM2's 30 layers: 1.7-2.5% with BBT's prompts, 5.9%
# with BBTv2's deep ones), while a wrong read-out position or label row moves them by their
# whole range (about half their size): a bound of 10% of the largest logit tells the two apart.
TOLERANCE_FP32 = 1e-3
TOLERANCE_BF16_RELATIVE = 0.1


def tolerance(dtype: torch.dtype, reference: np.ndarray) -> float:
    """The largest |logit difference| accepted against the naive float32 ``reference``."""
    if dtype == torch.float32:
        return TOLERANCE_FP32
    return TOLERANCE_BF16_RELATIVE * float(np.abs(reference).max())


def real_batch(service: BlackBox, task: str, examples: int, seed: int = 1) -> Batch:
    t = get_task(task)
    verbalizer = t.verbalizer(service.kind)
    per_class = max(1, examples // len(t.classes))
    split = kshot_split(t, per_class, seed)
    return service.encode(texts_for(t, verbalizer, split.train, service), [e["label"] for e in split.train])


def naive_logits(lm: LanguageModel, label_ids: torch.Tensor, prompts: torch.Tensor, batch: Batch) -> torch.Tensor:
    """The authors' way: per candidate, one forward of all examples, full-vocabulary logits."""
    deep = prompts.dim() == 4
    B, L = len(batch), prompts.shape[-2]
    T = max(len(p) for p in batch.pieces)
    ids = torch.full((B, T), lm.tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((B, T + L + len(batch.head)), dtype=torch.long)
    for r, p in enumerate(batch.pieces):
        ids[r, :len(p)] = torch.tensor(p)
        mask[r, :len(batch.head) + L + len(p)] = 1
    ids, mask = ids.to(lm.device), mask.to(lm.device)
    text = lm.embed(ids)
    head = lm.embed(torch.tensor(batch.head, dtype=torch.long)) if batch.head else None
    hooks = DeepPrompt(lm.layers)
    out = []
    try:
        for c in range(prompts.shape[0]):
            p = (prompts[c, 0] if deep else prompts[c]).unsqueeze(0).expand(B, -1, -1)
            parts = ([head.unsqueeze(0).expand(B, -1, -1)] if head is not None else []) + [p, text]
            with hooks.adding(prompts[c:c + 1] if deep else None, len(batch.head)):
                logits = lm.model(inputs_embeds=torch.cat(parts, 1), attention_mask=mask).logits  # (B, T', vocab)
            pos = torch.as_tensor(batch.readout + L + len(batch.head), device=lm.device)
            out.append(logits[torch.arange(B, device=lm.device), pos][:, label_ids].float())
    finally:
        hooks.remove()
    return torch.stack(out)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(model: str = "smollm2", method: str = "bbt", calls: int = 100, naive_calls: int = 20, popsize: int = 20,
          examples: int = 16, prompt_length: int = 10, tokens: int = 64, task: str = "rotten_tomatoes",
          device=None, dtype=None, seed: int = 0) -> dict:
    """Time ``calls`` API calls the package's way and ``naive_calls`` the naive way; compare."""
    for name, value in (("calls", calls), ("naive_calls", naive_calls), ("popsize", popsize), ("examples", examples)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    device = default_device(device)
    fast_dtype = default_dtype(device, dtype)
    if model in SHAPES:
        naive_lm = random_shape_model(model, device, torch.float32, seed)
        fast_lm = random_shape_model(model, device, fast_dtype, seed)
        words = SHAPE_WORDS
    else:
        naive_lm = load_model(model, device=device, dtype=torch.float32)
        fast_lm = load_model(model, device=device, dtype=fast_dtype)

        words = get_task(task).verbalizer(fast_lm.kind).words
    service = BlackBox(fast_lm, words)
    if model in SHAPES:
        batch = synthetic_batch(fast_lm, examples, tokens, len(words), seed)
    else:
        batch = real_batch(service, task, examples)
    rng = np.random.default_rng(seed)
    H, layers = fast_lm.hidden_size, fast_lm.num_layers
    deep = METHODS[method].deep  # a prompt at every layer
    shape = (popsize, layers, prompt_length, H) if deep else (popsize, prompt_length, H)
    scale = 0.02 if model in SHAPES else float(service.embedding_stats()[1])
    prompts = (scale * rng.standard_normal(shape)).astype(np.float32)
    if deep:
        prompts[:, 1:] *= 0.1

    # The naive way: exactly ``naive_calls`` calls (candidates taken in turn from the
    # population), one candidate per forward, after a warm-up call.
    naive_prompts = torch.tensor(prompts[np.arange(naive_calls) % popsize], device=device)
    with torch.inference_mode():
        naive_logits(naive_lm, service.label_ids, naive_prompts[:1], batch)
        _sync(device)
        t = time.perf_counter()
        ref = naive_logits(naive_lm, service.label_ids, naive_prompts, batch)
        _sync(device)
        naive_s = (time.perf_counter() - t) / naive_calls
    ref = ref.cpu().numpy()
    bound = tolerance(fast_dtype, ref)

    # The package's timing.
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    fast = service(prompts, batch).logits  # also the warm-up
    n_check = min(naive_calls, len(fast))
    diff = float(np.abs(fast[:n_check] - ref[:n_check]).max())
    agree = float((fast[:n_check].argmax(-1) == ref[:n_check].argmax(-1)).mean())
    service.meter = type(service.meter)()
    _sync(device)
    t = time.perf_counter()
    done = 0
    while done < calls:
        n = min(popsize, calls - done)
        service(prompts[:n], batch)
        done += n
    _sync(device)
    fast_s = (time.perf_counter() - t) / calls
    return {
        "model": model, "random_weights": model in SHAPES, "method": method, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
        or platform.machine(),
        "threads": torch.get_num_threads(), "dtype": str(fast_dtype).replace("torch.", ""),
        "naive_dtype": "float32", "calls": calls, "naive_calls": naive_calls, "popsize": popsize,
        "examples_per_call": examples, "prompt_length": prompt_length,
        "mean_text_tokens": float(np.mean([len(p) for p in batch.pieces])),
        "naive_s_per_call": naive_s, "fast_s_per_call": fast_s, "speedup": naive_s / fast_s,
        "fast_s_total_for_8000_calls": fast_s * 8000, "tokens_per_s": service.meter.tokens / (fast_s * calls),
        "peak_mem_bytes": peak_memory(device), "max_abs_logit_diff": diff, "argmax_agreement": agree,
        "naive_max_abs_logit": float(np.abs(ref).max()), "tolerance": bound, "logits_agree": diff <= bound,
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bbt_mini.run.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2", help=f"smollm2, a hub name/folder, or one of {sorted(SHAPES)}")
    p.add_argument("--method", default="bbt", choices=TUNERS)
    p.add_argument("--calls", type=int, default=100, help="API calls timed the package's way")
    p.add_argument("--naive-calls", type=int, default=20, help="API calls timed the naive way")
    p.add_argument("--popsize", type=int, default=20)
    p.add_argument("--examples", type=int, default=16, help="examples per call")
    p.add_argument("--prompt-length", type=int, default=10)
    p.add_argument("--tokens", type=int, default=64, help="tokens per example (random-weight models)")
    p.add_argument("--task", default="rotten_tomatoes")
    p.add_argument("--device")
    p.add_argument("--dtype", choices=sorted(DTYPES))
    p.add_argument("--out", help="write the figures as JSON here")
    a = p.parse_args(argv)
    r = bench(a.model, a.method, a.calls, a.naive_calls, a.popsize, a.examples, a.prompt_length, a.tokens, a.task,
              a.device, a.dtype)
    print(f"{'model':24s} {r['model']}{' (random weights of this shape: timing only)' if r['random_weights'] else ''}")
    print(f"{'device / dtype':24s} {r['device']} ({r['device_name']}, {r['threads']} threads) / {r['dtype']}")
    print(f"{'method':24s} {r['method']}: {r['examples_per_call']} examples x ~{r['mean_text_tokens']:.0f} tokens, "
          f"L = {r['prompt_length']}, population {r['popsize']}")
    print(f"{'naive s/call':24s} {r['naive_s_per_call']:.4f}   (fp32, one forward per candidate, full logits)")
    print(f"{'bbt_mini s/call':24s} {r['fast_s_per_call']:.4f}")
    print(f"{'speed-up':24s} {r['speedup']:.2f}x")
    print(f"{'8,000 calls':24s} {r['fast_s_total_for_8000_calls']:.1f} s")
    print(f"{'tokens/s':24s} {r['tokens_per_s']:.0f}")
    print(f"{'peak memory':24s} {r['peak_mem_bytes'] / 2**30:.2f} GiB")
    rule = "" if r["dtype"] == "float32" else f" = {TOLERANCE_BF16_RELATIVE:.0%} of the largest logit"
    print(f"{'max |logit diff|':24s} {r['max_abs_logit_diff']:.4g} (tolerance {r['tolerance']:.3g}{rule}); "
          f"argmax agreement {r['argmax_agreement']:.3f}")
    if not r["logits_agree"]:
        print("the two ways disagree beyond the tolerance: the fast path is wrong, do not trust its timing",
              file=sys.stderr)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(r, f, indent=2)
    return 0 if r["logits_agree"] else 1


if __name__ == "__main__":
    sys.exit(main())
