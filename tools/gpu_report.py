"""The README's table of GPU figures, from what tools/gpu_check.py recorded in results/gpu/.

    python tools/gpu_report.py            # print the markdown tables

T4 times are estimates until a T4 run is recorded: per call, the larger of (a) the FLOPs of
a call at a T4's fp16 tensor-core rate times an assumed efficiency, and (b) the measured
GPU's time per call (launch and Python overhead, which a T4 does not shorten). A chapter's
T4 time is its measured GPU time scaled by that per-call ratio: an upper estimate, since
loading, plotting and the optimiser's own arithmetic do not slow down by the same ratio.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
T4_FP16_TFLOPS = 65.0  # NVIDIA T4 datasheet, fp16 tensor cores (dense)
T4_EFFICIENCY = 0.35  # an assumption: small fp16 products at the T4's sustained (power-capped) clock


def t4_ratio(bench: dict) -> tuple[float, float]:
    """(T4 seconds per call, its ratio to the measured GPU's) for SmolLM2 BBT at the colab shape."""
    r = bench["runs"]["smollm2 BBT"]
    compute = r["flops_per_call"] / (T4_FP16_TFLOPS * 1e12 * T4_EFFICIENCY)
    t4 = max(compute, r["fast_s_per_call"])
    return t4, t4 / r["fast_s_per_call"]


def main() -> int:
    folder = ROOT / "results" / "gpu"
    bench = json.loads((folder / "bench.json").read_text()) if (folder / "bench.json").exists() else None
    workers = json.loads((folder / "workers.json").read_text()) if (folder / "workers.json").exists() else None
    record = ROOT / "bbt_mini" / "run" / "gpu_chapters.json"  # package data: the chapters' plans print it
    chapters = json.loads(record.read_text()) if record.exists() else None
    if bench:
        m = bench["machine"]
        print(f"Benchmark on {m['device']} (torch {m['torch']}, transformers {m.get('transformers')}), "
              f"`{bench['command']}`:\n")
        print("| case | s per call | 8,000 calls | vs naive loop | peak GPU memory | logits agree |")
        print("|---|---|---|---|---|---|")
        for label, r in bench["runs"].items():
            print(f"| {label} ({r['examples_per_call']} examples, L = {r['prompt_length']}, {r['dtype']}) | "
                  f"{r['fast_s_per_call'] * 1e3:.2f} ms | {r['fast_s_per_call'] * 8000:.1f} s | "
                  f"{r['speedup']:.1f}x | {r['peak_mem_bytes'] / 1e9:.2f} GB | {r['logits_agree']} |")
        print("\n| target | measured | met |\n|---|---|---|")
        for k, v in bench["targets"].items():
            print(f"| {k} {'>=' if k == 'speedup_vs_naive' else '<='} {v} | {bench['figures'][k]:.2f} | "
                  f"{'yes' if bench['met'][k] else 'no'} |")
    if workers:
        gain = workers["speedup"]
        s = workers["seconds"]
        print(f"\nRuns at once ({workers['machine']['device']}): three BBT runs took {s['1']:.0f} s one after "
              f"another and {s['3']:.0f} s three at once: {gain:.2f}x.")
    if chapters:
        ratio = t4_ratio(bench)[1] if bench else None
        dev = chapters["machine"]["device"]
        print(f"\n| chapter | {dev}, colab profile | passed | T4 (estimate) |\n|---|---|---|---|")
        for name, c in sorted(chapters["chapters"].items()):
            t4 = "-" if ratio is None or not c["passed"] else f"{c['wall_s'] * ratio / 60:.0f} min"
            print(f"| {name} | {c['wall_s'] / 60:.1f} min | {'yes' if c['passed'] else 'NO'} | {t4} |")
    if bench:
        t4, ratio = t4_ratio(bench)
        print(f"\nT4 estimate: {t4 * 1e3:.1f} ms per SmolLM2 call at the colab shape ({ratio:.1f}x the measured "
              f"GPU's), from {T4_FP16_TFLOPS:.0f} TFLOP/s fp16 at {T4_EFFICIENCY:.0%} efficiency.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
