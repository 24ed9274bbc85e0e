"""The GPU checks: the benchmark at the GPU targets, many runs at once, chapters in the colab profile.

    python tools/gpu_check.py bench                  # (a) BBT and BBTv2, RoBERTa-large shape and SmolLM2
    python tools/gpu_check.py workers                # (b) one run after another vs several at once
    python tools/gpu_check.py chapters 01_lmaas 03_cmaes   # (c) chapters with nbmake, timed, recorded
    python tools/gpu_check.py all 01_lmaas           # all three, in that order
    python tools/gpu_check.py plans 06_price         # only each chapter's own time estimate here
    python tools/gpu_check.py lease --seconds 570 --out $OUT   # what a short loan is for, in order of value:
                                                     # record the chapters, then the benchmark, by a deadline

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
# A loan's order of value: every chapter recorded in the colab profile, the shortest first
# (an H100 took 0.4, 1.4 and 2.9 minutes for chapters 1-3; 4, 7 and the appendix are untimed
# there; chapter 6 ran past 5 minutes; chapter 5 plans about 36,000 calls), then the benchmark.
LEASE_ORDER = ["01_lmaas", "02_intrinsic_dimension", "03_cmaes", "07_more_data", "04_divide_and_conquer",
               "benchmark", "06_price", "05_normal_sampler"]
MIN_CHAPTER_S = 60  # a chapter is not started with less time than this before the deadline
MIN_BENCH_S = 120  # nor the benchmark (model loads and warm-up alone take tens of seconds)


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
        write(out, "bench", {"targets": TARGETS, "runs": results, "quick": quick, "partial": True})
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


def chapter_notebook(name: str) -> Path:
    nb = next((p for p in sorted((ROOT / "book").rglob(f"{name}*.ipynb"))
               if "_build" not in p.parts and "recorded" not in p.parts), None)
    if nb is None:
        raise SystemExit(f"no chapter called {name!r} under book/")
    return nb


def source_commit() -> str:
    """The commit this tree came from: git if it is here, else $BBT_COMMIT, else the packed one."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "-uno"], cwd=ROOT, capture_output=True,
                               text=True).stdout.strip()
        return head + (" with uncommitted changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        packed = Path("/tmp/bbt_gpu/source_commit")  # written by tools/gpu_pack.sh, carried in .gpu/c
        if os.environ.get("BBT_COMMIT"):
            return os.environ["BBT_COMMIT"]
        if packed.exists():
            return f"{packed.read_text().strip()} (the commit .gpu/ was packed at; no git here)"
        return "unknown (no git here: the package and code hashes identify it)"


def _run_killable(cmd: list[str], seconds: float | None, env: dict | None = None) -> tuple[int | None, str]:
    """Run ``cmd`` in its own process group; past ``seconds`` kill the group (the kernel too)."""
    import signal

    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env=env)
    try:
        text, _ = proc.communicate(timeout=seconds)
        return proc.returncode, text
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        text, _ = proc.communicate()
        return None, text


def step_chapters(out: Path, names: list[str], timeout: int, keep: Path | None = None,
                  deadline: float | None = None) -> list[str]:
    """Each chapter alone under nbmake, timed; results merged into chapters.json.

    Each chapter starts with an empty run cache, as on a fresh Colab runtime (a new cache
    folder that links everything of $BBT_MINI_CACHE but its runs, so a shared cache is never
    emptied; the converted model stays: on Colab converting it adds about 20 s to a chapter's
    first run). The kernel draws figures inline (MPLBACKEND unset for it). With
    ``keep``, each executed notebook (outputs included, also when it failed) becomes a
    recorded notebook (tools/record.py) in book/recorded/ and in ``keep``. With ``deadline``
    (a time.time()), no cell may run past it: a chapter that cannot start is skipped, one
    that reaches it is stopped (nbmake's cell timeout keeps what ran; past that, killed).
    Returns the chapters it finished (passed or not).
    """
    import shutil
    import tempfile

    from bbt_mini.core.settings import CACHE_ENV, cache_dir

    # the chapters' record ships with the package (bbt_mini.run.timing prints it in each chapter's plan)
    path = CHAPTERS_RECORD if out == DEFAULT_OUT else out / "chapters.json"
    done = json.loads(path.read_text())["chapters"] if path.exists() else {}
    finished = []
    for name in names:
        nb = chapter_notebook(name)
        cell_timeout, hard = timeout, None
        if deadline is not None:
            left = deadline - time.time()
            if left < MIN_CHAPTER_S:
                print(f"{nb.stem}: not started, {left:.0f} s left before the deadline", flush=True)
                continue
            cell_timeout, hard = int(min(timeout, left - 20)), left
        cmd = [sys.executable, "-m", "pytest", "-q", "-o", "addopts=", "-p", "no:cacheprovider", "--nbmake",
               f"--nbmake-timeout={cell_timeout}", *(["--overwrite"] if keep else []), str(nb.relative_to(ROOT))]
        cache = Path(tempfile.mkdtemp(prefix="bbt_cache_"))
        shared = cache_dir()
        shared.mkdir(parents=True, exist_ok=True)
        for entry in shared.iterdir():
            if entry.name != "runs":
                (cache / entry.name).symlink_to(entry.resolve())
        env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"} | {CACHE_ENV: str(cache)}
        original = nb.read_bytes()
        date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        t = time.perf_counter()
        try:
            code, text = _run_killable(cmd, hard, env)
            executed = nb.read_bytes()
        finally:
            nb.write_bytes(original)  # the chapter stays output-free; its executed copy is kept below
            for entry in cache.iterdir():  # what the chapter converted goes to the shared cache
                if not entry.is_symlink() and entry.name != "runs" and not (shared / entry.name).exists():
                    entry.rename(shared / entry.name)
            shutil.rmtree(cache, ignore_errors=True)  # links and this chapter's runs only
        wall = time.perf_counter() - t
        tail = text.strip().splitlines()[-15:]
        state = "passed" if code == 0 else "FAILED" if code is not None else "KILLED at the deadline"
        done[nb.stem] = {"wall_s": round(wall, 1), "passed": code == 0, "command": " ".join(cmd[1:]),
                         "profile": os.environ.get("BBT_PROFILE", "colab (GPU default)"), "tail": tail,
                         "cell_timeout_s": cell_timeout, "killed": code is None}
        print(f"{nb.stem}: {state} in {wall:.0f} s", flush=True)
        if code:
            print("\n".join(tail), flush=True)
        if keep and executed != original:
            done[nb.stem]["recorded"] = keep_recording(nb, executed, keep, date, wall, cmd, code)
        write(path.parent, path.stem, {"chapters": done})
        finished.append(nb.stem)
    return finished


def keep_recording(chapter: Path, executed: bytes, keep: Path, date: str, wall: float, cmd: list[str],
                   code: int | None) -> str:
    """The executed notebook as book/recorded/<chapter>.ipynb (tools/record.py), copied into ``keep``."""
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import record

    import torch

    cpu = f"CPU ({platform.processor() or platform.machine()})"
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else cpu
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / chapter.name
        raw.write_bytes(executed)
        note = None if code is not None else "the run was stopped at the loan's deadline"
        provenance = {"device": device, "commit": source_commit(), "date": date,
                      "profile": os.environ.get("BBT_PROFILE", "colab (GPU default)"),
                      "command": f"{os.environ.get('BBT_LEASE_COMMAND', 'tools/gpu_check.py')}: "
                                 + " ".join(["pytest", *cmd[4:]]),
                      "wall_s": round(wall, 1), "package_hash": record.package_hash(ROOT), "note": note}
        out = record.record(raw, chapter, provenance, ROOT / "book")
    keep.mkdir(parents=True, exist_ok=True)
    (keep / out.name).write_bytes(out.read_bytes())
    print(f"recorded {out.relative_to(ROOT)} ({out.stat().st_size / 2**20:.2f} MiB)", flush=True)
    return str(out.relative_to(ROOT))


def bundle(recorded: Path, out: Path, limit: int = 15 * 2**20) -> list[Path]:
    """The recorded notebooks as few .tar.gz files of at most ``limit`` bytes each (a GPU machine
    returns at most 8 files of 16 MiB), rewritten whole each time so a cut run leaves valid ones."""
    import gzip
    import tarfile

    groups, sizes = [[]], [0]
    for nb in sorted(recorded.glob("*.ipynb")):
        size = len(gzip.compress(nb.read_bytes(), 6)) + 1024
        if sizes[-1] + size > limit and groups[-1]:
            groups.append([]), sizes.append(0)
        groups[-1].append(nb)
        sizes[-1] += size
    written = []
    for i, group in enumerate(g for g in groups if g):
        path = out / f"recorded-{i + 1}.tar.gz"
        tmp = out / f".recorded-{i + 1}.tar.gz.tmp"
        with tarfile.open(tmp, "w:gz") as tar:
            for nb in group:
                tar.add(nb, arcname=f"recorded/{nb.name}")
        os.replace(tmp, path)
        written.append(path)
    for old in out.glob("recorded-*.tar.gz"):
        if old not in written:
            old.unlink()
    return written


def mirror(state: Path, out: Path) -> None:
    """What the loan has finished so far, from ``state`` into ``out`` (what comes back)."""
    if state.resolve() == out.resolve():
        return
    out.mkdir(parents=True, exist_ok=True)
    for path in state.glob("*.json"):
        (out / path.name).write_bytes(path.read_bytes())
    if (state / "recorded").is_dir():
        bundle(state / "recorded", out)


def step_lease(out: Path, state: Path, names: list[str], seconds: float, timeout: int, again: bool) -> None:
    """A short GPU loan, in order of value: record the chapters (colab profile), then the benchmark.

    The deadline counts from $BBT_LEASE_START (tools/gpu_check.sh sets it before installing) or
    from now. Everything is written to ``state`` (kept between calls on a machine that stays
    warm: a second call resumes, skipping what is done) and copied to ``out`` after each step:
    chapters.json, bench.json, lease.json and recorded-N.tar.gz (tools/record.py unpack reads them).
    """
    start = float(os.environ.get("BBT_LEASE_START") or time.time())
    deadline = start + seconds
    os.environ.setdefault("BBT_LEASE_COMMAND", " ".join(["tools/gpu_check.py", *sys.argv[1:]]))
    state.mkdir(parents=True, exist_ok=True)
    recorded = state / "recorded"
    chapters_json = state / "chapters.json"
    done = json.loads(chapters_json.read_text())["chapters"] if chapters_json.exists() else {}
    # Resuming: a chapter that ran (passed or failed: its recording says which) is done; one
    # killed at a deadline or never started is tried again.
    todo = [n for n in (names or LEASE_ORDER)
            if again or done.get(chapter_notebook(n).stem, {"killed": True}).get("killed")]
    print(f"lease: {deadline - time.time():.0f} s left; chapters to record: {', '.join(todo) or 'none'}", flush=True)
    summary = {"order": todo, "seconds": seconds, "finished": [], "bench": None}

    def report():
        summary["left_s"] = round(deadline - time.time())
        write(state, "lease", summary)
        mirror(state, out)

    for name in todo:
        summary["finished"] += step_chapters(state, [name], timeout, keep=recorded, deadline=deadline)
        report()
    left = deadline - time.time()
    if (state / "bench.json").exists() and not again and not json.loads((state / "bench.json").read_text()).get(
            "partial"):
        summary["bench"] = "done in an earlier call"
    elif left < MIN_BENCH_S:
        summary["bench"] = f"not started: {left:.0f} s left"
    else:  # in its own process, so the deadline can stop it; it writes bench.json after each case
        code, text = _run_killable([sys.executable, str(Path(__file__).resolve()), "bench", "--out", str(state)],
                                   left - 10)
        print(text[-4000:], flush=True)
        summary["bench"] = {0: "finished"}.get(code, "stopped at the deadline" if code is None else f"failed ({code})")
    report()
    print(f"lease: done with {deadline - time.time():.0f} s left: {summary['finished']}, bench {summary['bench']}",
          flush=True)


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
    p.add_argument("step", choices=("bench", "workers", "chapters", "plans", "all", "lease"))
    p.add_argument("chapters", nargs="*", help="chapter names (prefixes such as 01_lmaas)")
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--quick", action="store_true", help="tiny sizes: check the script itself, e.g. on a CPU")
    p.add_argument("--timeout", type=int, default=900, help="seconds per notebook cell")
    p.add_argument("--seconds", type=float, default=570, help="lease: the deadline, from $BBT_LEASE_START")
    p.add_argument("--state", default="/tmp/bbt_gpu/lease", help="lease: kept between calls; resumes")
    p.add_argument("--again", action="store_true", help="lease: redo what an earlier call finished")
    a = p.parse_args(argv)
    out = Path(a.out)
    if a.step == "lease":
        step_lease(out, Path(a.state), a.chapters, a.seconds, a.timeout, a.again)
        return 0
    if a.step in ("bench", "all"):
        step_bench(out, a.quick)
    if a.step in ("workers", "all"):
        step_workers(out, a.quick)
    if a.step in ("chapters", "all") and a.chapters:  # each executed notebook kept: out/recorded, book/recorded
        step_chapters(out, a.chapters, a.timeout, keep=out / "recorded")
        bundle(out / "recorded", out)
    if a.step == "plans":
        step_plans(out, a.chapters)
    return 0


if __name__ == "__main__":
    sys.exit(main())
