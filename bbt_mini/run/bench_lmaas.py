"""Measure the remote black box (a vLLM server) against the in-process one, side by side in one run.

    python -m bbt_mini serve &        # or any OpenAI-compatible server with prompt embeddings
    python -m bbt_mini.run.bench_lmaas --service http://127.0.0.1:8011/v1 --out lmaas.json

Same candidates, same examples, both services: calls per second, the label words'
log-probabilities' agreement (max and mean gap, same argmax), bytes per call on the wire
(z alone, the soft prompt alone, the embedded sequences vLLM takes: measured HTTP bytes),
and seconds per BBT run (a profile's budget, same seed) with both runs' test accuracy.

``--batching`` measures instead whether the server's batching pays: calls per second for
several (sequences per request, requests in flight) settings, from one sequence at a time to
everything at once, with the tokens vLLM's engine put into each step (its ``/metrics``:
``vllm:iteration_tokens_total``) and the most requests it ran at once; and the in-process
black box's calls per second one sequence at a time and all at once (the same question without
a server). ``--start`` starts the server itself (``--server-args`` passes vLLM flags, e.g.
``"--max-num-seqs 256 --max-num-batched-tokens 8192"``) and stops it at the end.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import torch

from ..core.profiles import get_profile
from ..lm.loading import load_model
from ..methods import registry
from ..methods.bbt import run_bbt
from ..service.remote import RemoteService
from . import server
from .prepare import prepare


def call_rate(service, prompts, batch, repeats: int) -> tuple[float, object]:
    """Calls per second of ``service`` on ``prompts`` x ``batch`` (best of ``repeats``), and its answer."""
    best, response = np.inf, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        response = service(prompts, batch)
        best = min(best, time.perf_counter() - t0)
    return len(prompts) / best, response


class Metrics:
    """vLLM's Prometheus counters (``/metrics``, beside ``/v1``), polled in a thread while requests run."""

    def __init__(self, url: str, api_key: str | None):
        parts = urllib.parse.urlsplit(url)
        self.url = urllib.parse.urlunsplit(parts._replace(path="/metrics"))
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.running_max = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def read(self) -> dict:
        values = {}
        with urllib.request.urlopen(urllib.request.Request(self.url, headers=self.headers), timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(("vllm:num_requests_running", "vllm:iteration_tokens_total_sum",
                                    "vllm:iteration_tokens_total_count")):
                    name, value = line.split("{")[0], float(line.rsplit(" ", 1)[1])
                    values[name] = values.get(name, 0.0) + value
        return values

    def _poll(self):
        while not self._stop.wait(0.05):
            try:
                self.running_max = max(self.running_max, self.read().get("vllm:num_requests_running", 0.0))
            except OSError:
                pass

    def __enter__(self):
        self.before = self.read()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        after = self.read()
        steps = after["vllm:iteration_tokens_total_count"] - self.before["vllm:iteration_tokens_total_count"]
        tokens = after["vllm:iteration_tokens_total_sum"] - self.before["vllm:iteration_tokens_total_sum"]
        self.steps, self.tokens_per_step = steps, tokens / max(steps, 1)


def one_example(batch, i: int):
    """Example ``i`` of ``batch`` alone."""
    return dataclasses.replace(batch, labels=batch.labels[i:i + 1], pieces=[batch.pieces[i]],
                               readout=batch.readout[i:i + 1], _cache={},
                               before=None if batch.before is None else [batch.before[i]])


def batching(args, remote, setup, local, local_batch, prompts) -> dict:
    """Calls per second for each (per_request, in_flight), vLLM's tokens per engine step, and in-process
    one sequence at a time vs all at once."""
    n, B = len(prompts), len(setup.test)
    grid = [(1, 1), (B, 1), (n * B // 2, 1), (n * B, 1), (B, 2), (B, 4), (1, 8), (n * B // 4, 4)]
    rows = []
    for per_request, in_flight in grid:
        remote.per_request, remote.in_flight = per_request, in_flight
        remote(prompts[:1], setup.test)  # warm
        with Metrics(args.service, args.api_key) as m:
            rate, _ = call_rate(remote, prompts, setup.test, args.repeats)
        rows.append({"per_request": per_request, "in_flight": in_flight, "calls_per_s": rate,
                     "sequences_per_s": rate * B, "engine_steps": m.steps / args.repeats,
                     "tokens_per_step": m.tokens_per_step, "most_running": m.running_max})
        print(json.dumps(rows[-1]), flush=True)
    one = np.inf
    for _ in range(args.repeats):  # in-process, one sequence per forward
        t0 = time.perf_counter()
        for c in range(n):
            for i in range(B):
                local(prompts[c:c + 1], one_example(local_batch, i))
        one = min(one, time.perf_counter() - t0)
    together, _ = call_rate(local, prompts, local_batch, args.repeats)
    return {"grid": rows, "in_process": {"one_sequence_per_forward_calls_per_s": n / one,
                                         "all_at_once_calls_per_s": together}}


def label_logp(logits: np.ndarray) -> np.ndarray:
    return logits - np.logaddexp.reduce(logits, -1, keepdims=True)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bbt_mini.run.bench_lmaas", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
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
    parser.add_argument("--batching", action="store_true", help="measure the server's batching instead")
    parser.add_argument("--start", action="store_true", help="start the server (bbt_mini.run.server) and stop it")
    parser.add_argument("--server-args", default="", help="more vLLM flags for --start")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    if args.start:
        port = urllib.parse.urlsplit(args.service).port or server.DEFAULT_PORT
        log = Path(args.out or "lmaas").with_suffix(".server.log")
        t0 = time.perf_counter()
        proc = server.start(port=port, api_key=args.api_key, log=log, extra=tuple(args.server_args.split()))
        print(f"server up in {time.perf_counter() - t0:.0f} s (log: {log})", file=sys.stderr, flush=True)
        try:
            return measure(args)
        finally:
            server.stop(proc)
    return measure(args)


def measure(args) -> dict:
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
           "examples": args.examples, "L": L, "hidden": H, "d": d, "server_args": args.server_args,
           "fingerprint_gap": remote.fingerprint_gap}
    if args.batching:
        out["batching"] = batching(args, remote, remote_setup, local_setup.service, local_setup.test, prompts)
        return finish(out, args)
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
        config = registry.config("bbt", profile)
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
    return finish(out, args)


def finish(out: dict, args) -> dict:
    text = json.dumps(out, indent=2, default=float)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return out


if __name__ == "__main__":
    main()
