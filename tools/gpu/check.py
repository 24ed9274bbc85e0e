"""The GPU checks: the benchmark at the GPU targets, chapters recorded in the colab profile.

    python tools/gpu/check.py bench                   # BBT and BBTv2, RoBERTa-large shape and SmolLM2
    python tools/gpu/check.py chapters 01_lmaas 03_cmaes   # chapters with nbmake, timed, recorded
    python tools/gpu/check.py plans 06_price          # only each chapter's own time estimate here
    python tools/gpu/check.py lease --seconds 570 --out $OUT   # a short loan, in order of value:
                                                      # record the chapters, then the benchmark
    python tools/gpu/check.py report                  # the README's tables from results/gpu/

Each step writes JSON into ``--out`` (default ``results/gpu/``) as soon as it finishes, with the
device's name, the library versions and the command, so that a machine lent for a few minutes
returns whatever it got through. Targets (the papers' setting: 8,000 calls of 20 x 32 examples x
96 tokens, L = 50): 8,000 RoBERTa-large-shape calls in at most 25 s on an H100/H200-class GPU, at
least 18x the naive loop, at most 3 GB, BBTv2 within 1.3x of BBT per call.
"""
from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import nbformat
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tools")]
import record  # noqa: E402
from bbt_mini.core.settings import CACHE_ENV, cache_dir  # noqa: E402
from bbt_mini.lm.loading import load_model  # noqa: E402
from bbt_mini.lm.tiny import random_shape_model  # noqa: E402
from bbt_mini.run.bench import bench  # noqa: E402

DEFAULT_OUT = ROOT / "results" / "gpu"
CHAPTERS_RECORD = ROOT / "bbt_mini" / "run" / "gpu_chapters.json"  # package data: each chapter's plan prints it
TARGETS = {"roberta_8000_calls_s": 25.0, "speedup_vs_naive": 18.0, "peak_gb": 3.0, "bbtv2_over_bbt": 1.3}
# A loan's order of value: every chapter in the colab profile, the shortest first, then the benchmark.
LEASE_ORDER = ["01_lmaas", "02_intrinsic_dimension", "03_cmaes", "03b_bbt_gain", "07_more_data",
               "04_divide_and_conquer", "benchmark", "06_price", "05_normal_sampler",
               "08_your_prompt", "07b_baselines"]
MIN_CHAPTER_S = 60  # a chapter is not started with less time than this before the deadline
MIN_BENCH_S = 120  # nor the benchmark (model loads and warm-up alone take tens of seconds)
T4_FP16_TFLOPS, T4_EFFICIENCY = 65.0, 0.35  # T4 datasheet (fp16 tensor cores); an assumed efficiency


def machine() -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "cpu_count": os.cpu_count(),
            "cpu": platform.processor() or platform.machine(), "device": "cpu"}
    with contextlib.suppress(ImportError):
        import transformers

        info["transformers"] = transformers.__version__
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(device=torch.cuda.get_device_name(0), capability=f"{p.major}.{p.minor}",
                    gpu_memory_gb=round(p.total_memory / 1e9, 1), cuda=torch.version.cuda)
    return info


def write(out: Path, name: str, payload: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    payload = {"machine": machine(), "command": " ".join([Path(sys.executable).name] + sys.argv),
               "date": time.strftime("%Y-%m-%d %H:%M:%S"), **payload}
    (out / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {out / name}.json", flush=True)


def body_params(lm) -> int:
    """Parameters a token passes through (the transformer without embeddings and LM head)."""
    emb = {id(p) for m in (lm.model.get_input_embeddings(), lm.model.get_output_embeddings()) if m is not None
           for p in m.parameters()}
    return sum(p.numel() for p in lm.body.parameters() if id(p) not in emb)


def step_bench(out: Path, quick: bool) -> None:
    cases = [  # (label, model, method, calls, dtype: None = the device's default); 32 examples, L = 50
        ("roberta-large-shape BBT", "roberta-large-shape", "bbt", 8000, None),
        ("roberta-large-shape BBTv2", "roberta-large-shape", "bbtv2", 2000, None),
        ("smollm2 BBT", "smollm2", "bbt", 2000, None),
        ("smollm2 BBTv2", "smollm2", "bbtv2", 2000, None),
        ("smollm2 BBT float16", "smollm2", "bbt", 400, "float16"),  # what a T4 or V100 computes in
    ]
    results = {}
    for label, model, method, calls, dtype in cases:
        examples, L = 32, 50
        if quick:  # check the script itself: tiny sizes, and a small random model for RoBERTa's shape
            calls, examples, L = 40, 4, 5
            model = "smollm2-shape" if model == "roberta-large-shape" else model
        t = time.perf_counter()
        r = bench(model, method, calls=calls, naive_calls=20, popsize=20, examples=examples, prompt_length=L,
                  tokens=96, dtype=dtype, seed=0)
        r["wall_s"] = time.perf_counter() - t
        lm = (load_model("smollm2", dtype=getattr(torch, r["dtype"])) if model == "smollm2"
              else random_shape_model(model, torch.device("cpu"), torch.float32))  # random weights, real shape
        r["body_params"] = body_params(lm)
        # 2 FLOPs per parameter per token (attention's own products are small at ~100 tokens).
        r["flops_per_call"] = 2 * r["body_params"] * examples * (L + r["mean_text_tokens"])
        r["achieved_tflops"] = r["flops_per_call"] / r["fast_s_per_call"] / 1e12
        results[label] = r
        write(out, "bench", {"targets": TARGETS, "runs": results, "quick": quick, "partial": True})
        print(f"{label}: {r['fast_s_per_call'] * 1e3:.2f} ms/call, {r['speedup']:.1f}x naive, "
              f"{r['peak_mem_bytes'] / 1e9:.2f} GB, {r['achieved_tflops']:.0f} TFLOP/s, "
              f"logits agree: {r['logits_agree']}", flush=True)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    rb, rv = results["roberta-large-shape BBT"], results["roberta-large-shape BBTv2"]
    checks = {"roberta_8000_calls_s": rb["fast_s_per_call"] * 8000, "speedup_vs_naive": rb["speedup"],
              "peak_gb": max(r["peak_mem_bytes"] for r in (rb, rv)) / 1e9,
              "bbtv2_over_bbt": rv["fast_s_per_call"] / rb["fast_s_per_call"],
              "smollm2_bbtv2_over_bbt": results["smollm2 BBTv2"]["fast_s_per_call"]
              / results["smollm2 BBT"]["fast_s_per_call"]}
    met = {k: (checks[k] >= v if k == "speedup_vs_naive" else checks[k] <= v) for k, v in TARGETS.items()}
    write(out, "bench", {"targets": TARGETS, "figures": checks, "met": met, "runs": results, "quick": quick})


def chapter_notebook(name: str) -> Path:
    found = [p for stem, p in record.chapters(ROOT / "book").items() if stem.startswith(name)]
    if not found:
        raise SystemExit(f"no chapter called {name!r} under book/")
    return found[0]


def source_commit() -> str:
    """The commit this tree came from: git if it is here, else $BBT_COMMIT, else the one packed."""
    git = subprocess.run(["git", "describe", "--always", "--abbrev=12", "--dirty= with uncommitted changes"],
                         cwd=ROOT, capture_output=True, text=True)
    packed = Path("/tmp/bbt_gpu/source_commit")  # written by tools/gpu/pack.sh, carried in .gpu/c
    return (git.stdout.strip() if git.returncode == 0 else os.environ.get("BBT_COMMIT")
            or (f"{packed.read_text().strip()} (packed; no git here)" if packed.exists() else "unknown"))


def run_killable(cmd: list[str], seconds: float | None, env: dict | None = None) -> tuple[int | None, str]:
    """Run ``cmd`` in its own process group; past ``seconds`` kill the group (the kernel too)."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env=env)
    try:
        text = proc.communicate(timeout=seconds)[0]
        return proc.returncode, text
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return None, proc.communicate()[0]


def step_chapters(out: Path, names: list[str], timeout: int, keep: Path | None = None,
                  deadline: float | None = None) -> list[str]:
    """Each chapter alone under nbmake, timed; results merged into chapters.json.

    Each chapter starts with an empty run cache, as on a fresh Colab runtime (a new cache folder
    that links everything of $BBT_MINI_CACHE but its runs, so a shared cache is never emptied;
    the converted model stays). The kernel draws figures inline (MPLBACKEND unset for it). With
    ``keep``, a complete run becomes a recording (tools/record.py) in ``keep``. With ``deadline``
    (a time.time()), a chapter that cannot start is skipped, one that reaches it is stopped.
    Returns the chapters it finished (passed or not).
    """
    path = CHAPTERS_RECORD if out == DEFAULT_OUT else out / "chapters.json"
    done = json.loads(path.read_text())["chapters"] if path.exists() else {}
    finished = []
    for name in names:
        nb = chapter_notebook(name)
        cell_timeout, hard = timeout, None
        if deadline is not None:
            if (left := deadline - time.time()) < MIN_CHAPTER_S:
                print(f"{nb.stem}: not started, {left:.0f} s left before the deadline", flush=True)
                continue
            cell_timeout, hard = int(min(timeout, left - 20)), left
        cmd = [sys.executable, "-m", "pytest", "-q", "-o", "addopts=", "-p", "no:cacheprovider", "--nbmake",
               f"--nbmake-timeout={cell_timeout}", *(["--overwrite"] if keep else []), str(nb.relative_to(ROOT))]
        cache, shared = Path(tempfile.mkdtemp(prefix="bbt_cache_")), cache_dir()
        shared.mkdir(parents=True, exist_ok=True)
        for entry in shared.iterdir():
            if entry.name != "runs":
                (cache / entry.name).symlink_to(entry.resolve())
        env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"} | {CACHE_ENV: str(cache)}
        original, date, t = nb.read_bytes(), time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), time.perf_counter()
        try:
            code, text = run_killable(cmd, hard, env)
            executed = nb.read_bytes()
        finally:
            nb.write_bytes(original)  # the chapter stays output-free
            for entry in cache.iterdir():  # what the chapter converted goes to the shared cache
                if not entry.is_symlink() and entry.name != "runs" and not (shared / entry.name).exists():
                    entry.rename(shared / entry.name)
            shutil.rmtree(cache, ignore_errors=True)  # links and this chapter's runs only
        wall, tail = time.perf_counter() - t, text.strip().splitlines()[-15:]
        state = "passed" if code == 0 else "FAILED" if code is not None else "KILLED at the deadline"
        done[nb.stem] = {"wall_s": round(wall, 1), "passed": code == 0, "command": " ".join(cmd[1:]),
                         "profile": os.environ.get("BBT_PROFILE", "colab (GPU default)"), "tail": tail,
                         "cell_timeout_s": cell_timeout, "killed": code is None}
        print(f"{nb.stem}: {state} in {wall:.0f} s", *(tail if code else []), sep="\n", flush=True)
        if keep and code == 0:
            provenance = {"device": machine()["device"], "commit": source_commit(), "date": date,
                          "profile": done[nb.stem]["profile"], "wall_s": round(wall, 1),
                          "command": f"{os.environ.get('BBT_LEASE_COMMAND', 'tools/gpu/check.py')}: pytest "
                                     + " ".join(cmd[4:])}
            try:
                rec = record.recording(nbformat.reads(executed.decode(), as_version=4),
                                       nbformat.reads(original.decode(), as_version=4), provenance, ROOT)
                keep.mkdir(parents=True, exist_ok=True)
                nbformat.write(rec, keep / nb.name)
                done[nb.stem]["recorded"] = nb.name
            except ValueError as error:  # too large, or not the chapter's code
                done[nb.stem]["recorded"] = f"not recorded: {error}"
        write(path.parent, path.stem, {"chapters": done})
        finished.append(nb.stem)
    return finished


def bundle(recorded: Path, out: Path, limit: int = 15 * 2**20) -> list[Path]:
    """The recordings as few .tar.gz files of at most ``limit`` bytes each (a GPU machine returns
    at most 8 files of 16 MiB), rewritten whole each time so a cut run leaves valid ones."""
    groups, sizes = [[]], [0]
    for nb in sorted(recorded.glob("*.ipynb")):
        size = len(gzip.compress(nb.read_bytes(), 6)) + 1024
        if sizes[-1] + size > limit and groups[-1]:
            groups.append([]), sizes.append(0)
        groups[-1].append(nb)
        sizes[-1] += size
    written = []
    for i, group in enumerate((g for g in groups if g), 1):
        tmp = out / f".recorded-{i}.tar.gz.tmp"
        with tarfile.open(tmp, "w:gz") as tar:
            for nb in group:
                tar.add(nb, arcname=f"recorded/{nb.name}")
        written.append(tmp.replace(out / f"recorded-{i}.tar.gz"))
    for old in set(out.glob("recorded-*.tar.gz")) - set(written):
        old.unlink()
    return written


def step_lease(out: Path, state: Path, names: list[str], seconds: float, timeout: int, again: bool) -> None:
    """A short GPU loan, in order of value: record the chapters (colab profile), then the benchmark.

    The deadline counts from $BBT_LEASE_START (tools/gpu/check.sh sets it before installing) or
    from now. Everything is written to ``state`` (kept on a machine that stays warm: a second call
    resumes, skipping what is done) and copied to ``out`` after each step: chapters.json,
    bench.json, lease.json and recorded-N.tar.gz (tools/record.py unpack reads them).
    """
    deadline = float(os.environ.get("BBT_LEASE_START") or time.time()) + seconds
    os.environ.setdefault("BBT_LEASE_COMMAND", " ".join(["tools/gpu/check.py", *sys.argv[1:]]))
    state.mkdir(parents=True, exist_ok=True)
    chapters_json = state / "chapters.json"
    done = json.loads(chapters_json.read_text())["chapters"] if chapters_json.exists() else {}
    # A chapter that ran (passed or failed) is done; one killed at a deadline or never started is not.
    todo = [n for n in (names or LEASE_ORDER)
            if again or done.get(chapter_notebook(n).stem, {"killed": True}).get("killed")]
    print(f"lease: {deadline - time.time():.0f} s left; chapters to record: {', '.join(todo) or 'none'}", flush=True)
    summary = {"order": todo, "seconds": seconds, "finished": [], "bench": None}

    def report():
        summary["left_s"] = round(deadline - time.time())
        write(state, "lease", summary)
        if state.resolve() != out.resolve():  # what comes back
            out.mkdir(parents=True, exist_ok=True)
            for path in state.glob("*.json"):
                shutil.copy(path, out / path.name)
            bundle(state / "recorded", out)

    for name in todo:
        summary["finished"] += step_chapters(state, [name], timeout, keep=state / "recorded", deadline=deadline)
        report()
    left, bench_json = deadline - time.time(), state / "bench.json"
    if bench_json.exists() and not again and not json.loads(bench_json.read_text()).get("partial"):
        summary["bench"] = "done in an earlier call"
    elif left < MIN_BENCH_S:
        summary["bench"] = f"not started: {left:.0f} s left"
    else:  # in its own process, so the deadline can stop it; it writes bench.json after each case
        code, text = run_killable([sys.executable, __file__, "bench", "--out", str(state)], left - 10)
        print(text[-4000:], flush=True)
        summary["bench"] = {0: "finished", None: "stopped at the deadline"}.get(code, f"failed ({code})")
    report()
    print(f"lease: done with {deadline - time.time():.0f} s left: {summary['finished']}, bench {summary['bench']}",
          flush=True)


def step_plans(out: Path, names: list[str]) -> None:
    """Each chapter's own time estimate on this device: its cells up to the one that prints
    ``plan.report()``, run in this process; what they printed goes into plans.json."""
    path = out / "plans.json"
    done = json.loads(path.read_text())["plans"] if path.exists() else {}
    for name in names:
        nb = chapter_notebook(name)
        text, scope, t = io.StringIO(), {"__name__": "__chapter__"}, time.perf_counter()
        with contextlib.redirect_stdout(text):
            for cell in [c for c in nbformat.read(nb, as_version=4).cells if c.cell_type == "code"][1:]:
                exec(compile(cell.source, nb.stem, "exec"), scope)  # [1:]: not the install cell (%pip)
                if "plan.report()" in cell.source:
                    break
        done[nb.stem] = {"report": text.getvalue().strip().splitlines(), "wall_s": round(time.perf_counter() - t, 1),
                         "profile": os.environ.get("BBT_PROFILE", "colab (GPU default)")}
        print(f"{nb.stem}:", *done[nb.stem]["report"], sep="\n  ", flush=True)
        write(out, "plans", {"plans": done})


def step_report(out: Path) -> None:
    """The README's tables: the benchmark against its targets; each chapter's time, with a T4
    estimate: per call the larger of a call's FLOPs at a T4's fp16 rate times an assumed efficiency
    and the measured GPU's time per call; a chapter scaled by that ratio (an upper estimate)."""
    bench_json = out / "bench.json"
    bench_run = json.loads(bench_json.read_text()) if bench_json.exists() else None
    ratio = None
    if bench_run:
        m = bench_run["machine"]
        print(f"Benchmark on {m['device']} (torch {m['torch']}, transformers {m.get('transformers')}), "
              f"`{bench_run['command']}`:\n\n| case | s per call | 8,000 calls | vs naive loop | peak GPU memory | "
              "logits agree |\n|---|---|---|---|---|---|")
        for label, r in bench_run["runs"].items():
            print(f"| {label} ({r['examples_per_call']} examples, L = {r['prompt_length']}, {r['dtype']}) | "
                  f"{r['fast_s_per_call'] * 1e3:.2f} ms | {r['fast_s_per_call'] * 8000:.1f} s | "
                  f"{r['speedup']:.1f}x | {r['peak_mem_bytes'] / 1e9:.2f} GB | {r['logits_agree']} |")
        print("\n| target | measured | met |\n|---|---|---|")
        for k, v in bench_run["targets"].items():
            print(f"| {k} {'>=' if k == 'speedup_vs_naive' else '<='} {v} | {bench_run['figures'][k]:.2f} | "
                  f"{'yes' if bench_run['met'][k] else 'no'} |")
        r = bench_run["runs"]["smollm2 BBT"]
        t4 = max(r["flops_per_call"] / (T4_FP16_TFLOPS * 1e12 * T4_EFFICIENCY), r["fast_s_per_call"])
        ratio = t4 / r["fast_s_per_call"]
        print(f"\nT4 estimate: {t4 * 1e3:.1f} ms per SmolLM2 call at the colab shape ({ratio:.1f}x the measured "
              f"GPU's), from {T4_FP16_TFLOPS:.0f} TFLOP/s fp16 at {T4_EFFICIENCY:.0%} efficiency.")
    if CHAPTERS_RECORD.exists():
        chapters = json.loads(CHAPTERS_RECORD.read_text())
        print(f"\n| chapter | {chapters['machine']['device']}, colab profile | passed | T4 (estimate) |\n"
              "|---|---|---|---|")
        for name, c in sorted(chapters["chapters"].items()):
            t4 = "-" if ratio is None or not c["passed"] else f"{c['wall_s'] * ratio / 60:.0f} min"
            print(f"| {name} | {c['wall_s'] / 60:.1f} min | {'yes' if c['passed'] else 'NO'} | {t4} |")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("step", choices=("bench", "chapters", "plans", "lease", "report"))
    p.add_argument("chapters", nargs="*", help="chapter names (prefixes such as 01_lmaas)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--quick", action="store_true", help="bench: tiny sizes, to check the script itself on a CPU")
    p.add_argument("--timeout", type=int, default=900, help="seconds per notebook cell")
    p.add_argument("--seconds", type=float, default=570, help="lease: the deadline, from $BBT_LEASE_START")
    p.add_argument("--state", type=Path, default=Path("/tmp/bbt_gpu/lease"), help="lease: kept between calls")
    p.add_argument("--again", action="store_true", help="lease: redo what an earlier call finished")
    a = p.parse_args(argv)
    if a.step == "lease":
        step_lease(a.out, a.state, a.chapters, a.seconds, a.timeout, a.again)
    elif a.step == "bench":
        step_bench(a.out, a.quick)
    elif a.step == "chapters":  # each complete run kept as a recording: out/recorded, bundled
        step_chapters(a.out, a.chapters, a.timeout, keep=a.out / "recorded")
        bundle(a.out / "recorded", a.out)
    else:
        step_plans(a.out, a.chapters) if a.step == "plans" else step_report(a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
