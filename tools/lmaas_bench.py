"""Measure the remote black box (a vLLM server) against the in-process one, side by side in one run.

    python -m bbt_mini serve &        # or any OpenAI-compatible server with prompt embeddings
    python tools/lmaas_bench.py --service http://127.0.0.1:8011/v1 --out lmaas.json

Same candidates, same examples, both services: calls per second, the label words'
log-probabilities' agreement (max and mean gap, same argmax), bytes per call on the wire
(z alone, the soft prompt alone, the embedded sequences vLLM takes: measured HTTP bytes),
and seconds per BBT run (a profile's budget, same seed) with both runs' test accuracy.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def call_rate(service, prompts, batch, repeats: int) -> tuple[float, object]:
    """Calls per second of ``service`` on ``prompts`` x ``batch`` (best of ``repeats``), and its answer."""
    best, response = np.inf, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        response = service(prompts, batch)
        best = min(best, time.perf_counter() - t0)
    return len(prompts) / best, response


def label_logp(logits: np.ndarray) -> np.ndarray:
    return logits - np.logaddexp.reduce(logits, -1, keepdims=True)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--service", default="http://127.0.0.1:8011/v1")
    parser.add_argument("--api-key", default=os.environ.get("BBT_API_KEY"))
    parser.add_argument("--candidates", type=int, default=8)
    parser.add_argument("--examples", type=int, default=16, help="test examples each candidate is scored on")
    parser.add_argument("--prompt-length", type=int, default=50, help="L (the papers': 50)")
    parser.add_argument("--intrinsic-dim", type=int, default=500, help="d (the papers': 500)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--profile", default="ci", help="the BBT runs' profile")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-runs", action="store_true", help="skip the two BBT runs")
    parser.add_argument("--out")
    args = parser.parse_args(argv)

    import torch

    from bbt_mini.bbt import run_bbt
    from bbt_mini.experiment import prepare
    from bbt_mini.models import load_model
    from bbt_mini.profiles import get_profile
    from bbt_mini.remote import RemoteService

    torch.manual_seed(0)
    lm = load_model("smollm2", device="cpu", dtype=torch.float32)
    local_setup = prepare("rotten_tomatoes", lm, seed=args.seed, profile=args.profile, test_size=args.examples)
    words = local_setup.service.label_words
    remote = RemoteService(args.service, words, api_key=args.api_key)
    remote_setup = prepare("rotten_tomatoes", "smollm2", seed=args.seed, profile=args.profile,
                           test_size=args.examples, service=remote)
    remote.check_server()
    local = local_setup.service
    L, H, d = args.prompt_length, local.hidden_size, args.intrinsic_dim
    rng = np.random.default_rng(args.seed)
    p0 = local.token_embeddings(range(1000, 1000 + L))
    prompts = (p0[None] + rng.normal(0, 0.02, (args.candidates, L, H))).astype(np.float32)

    out = {"service": args.service, "server_dtype": remote.dtype, "candidates": args.candidates,
           "examples": args.examples, "L": L, "hidden": H, "d": d}
    rate_local, r_local = call_rate(local, prompts, local_setup.test, args.repeats)
    before = remote.meter.snapshot()
    rate_remote, r_remote = call_rate(remote, prompts, remote_setup.test, args.repeats)
    after = remote.meter.snapshot()
    gap = np.abs(label_logp(r_local.logits) - r_remote.logits)
    out["calls_per_s"] = {"in_process": rate_local, "vllm": rate_remote, "ratio": rate_local / rate_remote}
    out["agreement"] = {"max_abs": float(gap.max()), "mean_abs": float(gap.mean()),
                        "same_argmax": float((r_local.logits.argmax(-1) == r_remote.logits.argmax(-1)).mean()),
                        "loss_gap": float(np.abs(r_local.loss - r_remote.loss).max())}
    calls = after["calls"] - before["calls"]
    B = args.examples
    seq_tokens = (after["tokens"] - before["tokens"]) / (calls * B)
    up_per_call = (after["bytes_up"] - before["bytes_up"]) / calls
    out["bytes_per_call"] = {
        "z_alone (the papers' ideal API, float32)": d * 4,
        "z_and_a_seed_for_A": d * 4 + 8,
        "soft_prompt_alone (L x hidden float32)": L * H * 4,
        "soft_prompt_and_texts (the in-process meter's count)": L * H * 4 + local_setup.test.text_bytes,
        "whole_embedded_sequences_as_vllm_takes_them (HTTP up, measured)": up_per_call,
        "answers (HTTP down, measured)": (after["bytes_down"] - before["bytes_down"]) / calls,
        "tokens_per_sequence": seq_tokens,
        "examples_per_call": B,
        "client_holds_embedding_table_numbers": int(remote._table.numel()),
    }
    out["bytes_per_call"]["saving_z_and_seed_vs_vllm"] = up_per_call / (d * 4 + 8)
    if not args.no_runs:
        profile = get_profile(args.profile)
        config = profile.config("bbt")
        runs = {}
        for name, setup in (("in_process", prepare("rotten_tomatoes", lm, seed=args.seed, profile=profile)),
                            ("vllm", prepare("rotten_tomatoes", "smollm2", seed=args.seed, profile=profile,
                                             service=remote))):
            t0 = time.perf_counter()
            r = run_bbt(setup, config, seed=args.seed, progress=False)
            runs[name] = {"seconds": time.perf_counter() - t0, "test_accuracy": r["test_accuracy"],
                          "best_dev_acc": r["best_dev_acc"], "calls": r["calls"],
                          "http_bytes_up": r["meter"]["bytes_up"], "requests": r["meter"]["requests"]}
        runs["ratio_seconds"] = runs["vllm"]["seconds"] / runs["in_process"]["seconds"]
        out["bbt_run"] = {"profile": args.profile, "seed": args.seed, **runs}
    text = json.dumps(out, indent=2, default=float)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return out


if __name__ == "__main__":
    main()
