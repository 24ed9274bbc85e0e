"""The GPU checks: the benchmark at the GPU targets, many runs at once, chapters in the colab profile.

    python tools/gpu_check.py bench                  # (a) BBT and BBTv2, RoBERTa-large shape and SmolLM2
    python tools/gpu_check.py workers                # (b) one run after another vs several at once
    python tools/gpu_check.py chapters 01_lmaas 03_cmaes   # (c) chapters with nbmake, timed
    python tools/gpu_check.py all 01_lmaas           # all three, in that order
    python tools/gpu_check.py plans 06_price         # only each chapter's own time estimate here

Each step writes JSON into ``--out`` (default ``results/gpu/``) as soon as it finishes, with
the device's name, the library versions and the command, so that a machine lent for a few
minutes returns whatever it got through. A GPU machine without a network gets what it needs
from the working tree: ``tools/gpu_pack.sh`` puts the wheels (cma, gguf, the offline model
and data, nbmake and its Jupyter stack) into ``.gpu/``, and ``tools/gpu_check.sh`` installs
them into a temporary folder before calling this script.

Targets (from the project's performance work, the papers' setting: 8,000 calls of 20 x 32
examples x 96 tokens, L = 50): 8,000 RoBERTa-large-shape calls in at most 25 s on an
H100/H200-class GPU, at least 18x the naive loop, at most 3 GB, BBTv2 within 1.3x of BBT
per call.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "results" / "gpu"
CHAPTERS_RECORD = ROOT / "bbt_mini" / "run" / "gpu_chapters.json"
sys.path.insert(0, str(ROOT))

TARGETS = {"roberta_8000_calls_s": 25.0, "speedup_vs_naive": 18.0, "peak_gb": 3.0, "bbtv2_over_bbt": 1.3}


def machine() -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "cpu": platform.processor()
            or platform.machine(), "cpu_count": os.cpu_count()}
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(device=torch.cuda.get_device_name(0), capability=f"{p.major}.{p.minor}",
                    gpu_memory_gb=round(p.total_memory / 1e9, 1), cuda=torch.version.cuda)
    else:
        info["device"] = "cpu"
    return info


def write(out: Path, name: str, payload: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    payload = {"machine": machine(), "command": " ".join([Path(sys.executable).name] + sys.argv),
               "date": time.strftime("%Y-%m-%d %H:%M:%S"), **payload}
    path = out / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {path}", flush=True)


def body_params(lm) -> int:
    """Parameters a token passes through (the transformer without embeddings and LM head)."""
    emb = {id(p) for m in (lm.model.get_input_embeddings(), lm.model.get_output_embeddings()) if m is not None
           for p in m.parameters()}
    return sum(p.numel() for p in lm.body.parameters() if id(p) not in emb)


def step_bench(out: Path, quick: bool) -> None:
    import torch

    from bbt_mini.lm.loading import load_model
    from bbt_mini.run.bench import bench

    cases = [  # (label, model, method, calls, examples, prompt_length, dtype: None = the device's default)
        ("roberta-large-shape BBT", "roberta-large-shape", "bbt", 8000, 32, 50, None),
        ("roberta-large-shape BBTv2", "roberta-large-shape", "bbtv2", 2000, 32, 50, None),
        ("smollm2 BBT", "smollm2", "bbt", 2000, 32, 50, None),
        ("smollm2 BBTv2", "smollm2", "bbtv2", 2000, 32, 50, None),
        # What a T4 or V100 computes in (fp16, the loss in fp32): checked against fp32 here.
        ("smollm2 BBT float16", "smollm2", "bbt", 400, 32, 50, "float16"),
    ]
    results = {}
    for label, model, method, calls, examples, L, dtype in cases:
        if quick:  # check the script itself: tiny sizes, and a small random model for RoBERTa's shape
            calls, examples, L = 40, 4, 5
            model = "smollm2-shape" if model == "roberta-large-shape" else model
        t = time.perf_counter()
        r = bench(model, method, calls=calls, naive_calls=20, popsize=20, examples=examples, prompt_length=L,
                  tokens=96, dtype=dtype, seed=0)
        r["wall_s"] = time.perf_counter() - t
        tokens_per_call = examples * (L + r["mean_text_tokens"])
        if model == "smollm2":  # the real model; else random weights of a real shape
            r["body_params"] = body_params(load_model("smollm2", dtype=getattr(torch, r["dtype"])))
        else:
            from bbt_mini.lm.tiny import random_shape_model

            r["body_params"] = body_params(random_shape_model(model, torch.device("cpu"), torch.float32))
        # 2 FLOPs per parameter per token (attention's own products are small at ~100 tokens).
        r["flops_per_call"] = 2 * r["body_params"] * tokens_per_call
        r["achieved_tflops"] = r["flops_per_call"] / r["fast_s_per_call"] / 1e12
        results[label] = r
        print(f"{label}: {r['fast_s_per_call'] * 1e3:.2f} ms/call, {r['speedup']:.1f}x naive, "
              f"{r['peak_mem_bytes'] / 1e9:.2f} GB, {r['achieved_tflops']:.0f} TFLOP/s, "
              f"logits agree: {r['logits_agree']}", flush=True)
        torch.cuda.empty_cache() if torch.cuda.is_available() else None
    rb, rv = results["roberta-large-shape BBT"], results["roberta-large-shape BBTv2"]
    sb, sv = results["smollm2 BBT"], results["smollm2 BBTv2"]
    checks = {
        "roberta_8000_calls_s": rb["fast_s_per_call"] * 8000,
        "speedup_vs_naive": rb["speedup"],
        "peak_gb": max(r["peak_mem_bytes"] for r in (rb, rv)) / 1e9,
        "bbtv2_over_bbt": rv["fast_s_per_call"] / rb["fast_s_per_call"],
        "smollm2_bbtv2_over_bbt": sv["fast_s_per_call"] / sb["fast_s_per_call"],
    }
    met = {k: (checks[k] >= v if k == "speedup_vs_naive" else checks[k] <= v) for k, v in TARGETS.items()}
    write(out, "bench", {"targets": TARGETS, "figures": checks, "met": met, "runs": results, "quick": quick})


def step_workers(out: Path, quick: bool) -> None:
    """Three BBT runs (seeds 1-3, colab sizes) one after another, then three at once."""
    from bbt_mini.run.runs import cached_runs

    os.environ["BBT_RECOMPUTE"] = "1"  # time the runs, not the cache
    budget = 40 if quick else 1000
    jobs = [dict(method="bbt", task="rotten_tomatoes", seed=s, profile=os.environ.get("BBT_PROFILE", "colab"),
                 budget=budget, test_size=200) for s in (1, 2, 3)]
    timings, results = {}, {}
    for workers in (1, 3):
        t = time.perf_counter()
        rs = cached_runs(jobs, workers=workers, desc=f"{workers} at once")
        timings[workers] = time.perf_counter() - t
        results[workers] = [r["test_accuracy"] for r in rs]
        print(f"{workers} at once: {timings[workers]:.1f} s, test accuracy {results[workers]}", flush=True)
    del os.environ["BBT_RECOMPUTE"]
    write(out, "workers", {"jobs": jobs, "seconds": {str(k): v for k, v in timings.items()},
                           "speedup": timings[1] / timings[3],
                           "test_accuracy": {str(k): v for k, v in results.items()}, "quick": quick})


def step_chapters(out: Path, names: list[str], timeout: int) -> None:
    """Each chapter alone under nbmake, timed; results merged into chapters.json.

    Each chapter starts with an empty run cache, as on a fresh Colab runtime (the converted
    model stays: on Colab converting it adds about 20 s to a chapter's first run).
    """
    import shutil

    from bbt_mini.core.settings import cache_dir

    # the chapters' record ships with the package (bbt_mini.run.timing prints it in each chapter's plan)
    path = CHAPTERS_RECORD if out == DEFAULT_OUT else out / "chapters.json"
    done = json.loads(path.read_text())["chapters"] if path.exists() else {}
    for name in names:
        nb = next((p for p in (ROOT / "book").rglob(f"{name}*.ipynb") if "_build" not in p.parts), None)
        if nb is None:
            raise SystemExit(f"no chapter called {name!r} under book/")
        cmd = [sys.executable, "-m", "pytest", "-q", "-o", "addopts=", "-p", "no:cacheprovider", "--nbmake",
               f"--nbmake-timeout={timeout}", str(nb.relative_to(ROOT))]
        shutil.rmtree(cache_dir() / "runs", ignore_errors=True)
        t = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - t
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
        done[nb.stem] = {"wall_s": round(wall, 1), "passed": proc.returncode == 0, "command": " ".join(cmd[1:]),
                         "profile": os.environ.get("BBT_PROFILE", "colab (GPU default)"), "tail": tail}
        print(f"{nb.stem}: {'passed' if proc.returncode == 0 else 'FAILED'} in {wall:.0f} s", flush=True)
        if proc.returncode:
            print("\n".join(tail), flush=True)
        write(path.parent, path.stem, {"chapters": done})


def step_plans(out: Path, names: list[str]) -> None:
    """Each named chapter's own time estimate on this device, without running the chapter.

    Runs a chapter's cells up to the one that prints ``plan.report()`` (imports, settings, the
    timed probe) in this process and records what it printed, into plans.json.
    """
    import contextlib
    import io

    path = out / "plans.json"
    done = json.loads(path.read_text())["plans"] if path.exists() else {}
    for name in names:
        nb = next((p for p in (ROOT / "book").rglob(f"{name}*.ipynb") if "_build" not in p.parts), None)
        if nb is None:
            raise SystemExit(f"no chapter called {name!r} under book/")
        cells = [c for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code"]
        text, scope = io.StringIO(), {"__name__": "__chapter__"}
        t = time.perf_counter()
        with contextlib.redirect_stdout(text):
            for cell in cells:
                source = "".join(cell["source"])
                exec(compile(source, f"{nb.stem}", "exec"), scope)
                if "plan.report()" in source:
                    break
        done[nb.stem] = {"report": text.getvalue().strip().splitlines(), "wall_s": round(time.perf_counter() - t, 1),
                         "profile": os.environ.get("BBT_PROFILE", "colab (GPU default)")}
        print(f"{nb.stem}:", *done[nb.stem]["report"], sep="\n  ", flush=True)
        write(out, "plans", {"plans": done})


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("step", choices=("bench", "workers", "chapters", "plans", "all"))
    p.add_argument("chapters", nargs="*", help="chapter names (prefixes such as 01_lmaas)")
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--quick", action="store_true", help="tiny sizes: check the script itself, e.g. on a CPU")
    p.add_argument("--timeout", type=int, default=900, help="seconds per notebook cell")
    a = p.parse_args(argv)
    out = Path(a.out)
    if a.step in ("bench", "all"):
        step_bench(out, a.quick)
    if a.step in ("workers", "all"):
        step_workers(out, a.quick)
    if a.step in ("chapters", "all") and a.chapters:
        step_chapters(out, a.chapters, a.timeout)
    if a.step == "plans":
        step_plans(out, a.chapters)
    return 0


if __name__ == "__main__":
    sys.exit(main())
