"""The grid: cells planned from the axes, resumed, refused before running, the same on Ray as here.

Tiny random models (their numbers mean nothing); tests marked ``ray`` start a local Ray of 2 CPUs.
"""
import csv
import io
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from tiny import tiny_folder

from bbt_mini.__main__ import main
from bbt_mini.book.notebook import compare
from bbt_mini.core import paper
from bbt_mini.methods.registry import config
from bbt_mini.run import grid

# The tiny model's sizes (tests/tiny.py's TINY): dev checks, and so checkpoints, every 8 calls.
SETTINGS = {"prompt_length": 2, "intrinsic_dim": 6, "popsize": 4, "budget": 16, "eval_every": 8, "p0": "zeros",
            "k": 2, "test_size": 8}
RUN_FLAGS = ["--k", "2", "--test-size", "8", "--device", "cpu", "--dtype", "float32", "--quiet"]
FLAGS = ["--prompt-length", "2", "--intrinsic-dim", "6", "--popsize", "4", "--budget", "16", "--eval-every", "8",
         "--p0", "zeros", *RUN_FLAGS]
TIMINGS = ("wall_s",)  # seconds differ between any two runs; everything else must not


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(tiny_folder(tmp_path_factory))


def cells_of(tiny, tasks=("rotten_tomatoes", "bbc_news"), methods=("bbt", "manual"), seeds=(1,), **changes):
    tuned = {"bbt", "bbtv2"} & set(methods)  # a grid of baselines alone takes no tuner settings
    settings = {k: v for k, v in SETTINGS.items() if tuned or k in ("k", "test_size")}
    return grid.plan(tasks, methods, seeds, "ci", tiny, {**settings, **changes}, device="cpu", dtype="float32")


def without_timings(result: dict) -> dict:
    out = {k: v for k, v in result.items() if k not in TIMINGS}
    out["meter"] = {k: v for k, v in result["meter"].items() if k not in TIMINGS}
    return out


def lines_of(cells, folder, **kw):
    lines = []
    outcome = grid.run_grid(cells, folder, progress=False, write=lines.append, **kw)
    return outcome, lines


def test_plan_sweeps_the_listed_settings_and_names_each_cell_after_them(tiny):
    cells = cells_of(tiny, tasks=("rotten_tomatoes",), seeds=(1, 2), intrinsic_dim=[6, 8], k=2)
    names = [c.name for c in cells]
    assert names == ["rotten_tomatoes-bbt-intrinsic_dim_6-s1", "rotten_tomatoes-bbt-intrinsic_dim_6-s2",
                     "rotten_tomatoes-bbt-intrinsic_dim_8-s1", "rotten_tomatoes-bbt-intrinsic_dim_8-s2",
                     "rotten_tomatoes-manual-s1", "rotten_tomatoes-manual-s2"]  # the manual prompt has no d
    assert [c.spec.config.intrinsic_dim for c in cells[:4]] == [6, 6, 8, 8]
    assert cells[-1].spec.config == {} and cells[-1].spec.k == 2  # the manual prompt takes no settings


def test_plan_applies_task_sizes_and_the_papers_settings_in_full():
    def changed(spec):  # the settings that differ from the method's at the profile's sizes
        return {k: v for k, v in vars(spec.config).items() if getattr(config(spec.method, spec.profile), k) != v}

    small = {c.name: c.spec for c in grid.plan(["bbc_news"], ["bbt", "manual"], [1], "small")}
    assert changed(small["bbc_news-bbt-s1"]) == {"budget": 50, "eval_every": 25}  # profiles.TASK_SIZES
    assert (small["bbc_news-bbt-s1"].k, small["bbc_news-bbt-s1"].test_size) == (1, 100)
    assert (small["bbc_news-manual-s1"].k, small["bbc_news-manual-s1"].config) == (1, {})
    full = {c.name: c.spec for c in grid.plan(["dbpedia", "rte"], ["bbt", "bbtv2"], [1], "full", "roberta-large")}
    assert changed(full["dbpedia-bbt-s1"]) == changed(full["dbpedia-bbtv2-s1"]) == {}  # Table 3: equal calls
    assert full["dbpedia-bbt-s1"].config.budget == full["dbpedia-bbtv2-s1"].config.budget == paper.TABLE_BUDGET
    assert changed(full["rte-bbt-s1"]) == changed(full["rte-bbtv2-s1"]) == {"loss": "hinge"}  # one pair-task rule
    for profile in ("ci", "small", "colab"):  # the same rule in every profile, for both tuners
        specs = {c.name: c.spec for c in grid.plan(["bbc_pairs", "rotten_tomatoes"], ["bbt", "bbtv2"], [1], profile)}
        assert {n: s.config.loss for n, s in specs.items()} == {
            "bbc_pairs-bbt-s1": "hinge", "bbc_pairs-bbtv2-s1": "hinge",
            "rotten_tomatoes-bbt-s1": "ce", "rotten_tomatoes-bbtv2-s1": "ce"}


@pytest.mark.parametrize("settings,message", [({"budget": 0}, "budget must be at least 1"),
                                              ({"intrinsic_dim": [6, 6]}, "distinct values"),
                                              ({"wat": 1}, "unknown settings")])
def test_plan_refuses_bad_settings_before_anything_runs(tiny, settings, message):
    with pytest.raises(ValueError, match=message):
        cells_of(tiny, **settings)
    with pytest.raises(ValueError, match="nothing would use them"):
        cells_of(tiny, methods=("manual",), budget=[8, 16])


def test_a_rerun_runs_nothing_and_a_half_finished_grid_only_what_is_left(tiny, tmp_path, monkeypatch):
    cells = cells_of(tiny)
    outcome, lines = lines_of(cells, tmp_path)
    assert outcome.ok and len(outcome.results) == 4 and len(lines) == 4 and not outcome.skipped
    first = {n: without_timings(r) for n, r in outcome.results.items()}
    (tmp_path / "bbc_news-bbt-s1.json").unlink()
    (tmp_path / "bbc_news-bbt-s1.ckpt").unlink()
    outcome, lines = lines_of(cells, tmp_path)
    assert [line.split(":")[0] for line in lines] == ["done bbc_news-bbt-s1"]
    assert sorted(outcome.skipped) == sorted(set(first) - {"bbc_news-bbt-s1"})
    assert {n: without_timings(r) for n, r in outcome.results.items()} == first  # recomputed to the same

    def must_not_run(*args):
        raise AssertionError("a finished cell ran again")

    monkeypatch.setattr(grid, "run_cell", must_not_run)
    outcome, lines = lines_of(cells, tmp_path)
    assert outcome.ok and not lines and len(outcome.skipped) == 4


def test_a_failing_cell_is_reported_the_others_finish_and_the_exit_code_says_so(tiny, tmp_path, capsys):
    (tmp_path / "rotten_tomatoes-bbt-s1.ckpt").write_bytes(b"not a checkpoint")  # a corrupt checkpoint: it raises
    args = ["grid", "--tasks", "rotten_tomatoes", "bbc_news", "--methods", "bbt", "manual", "--seeds", "1",
            "--profile", "ci", "--model", tiny, "--out", str(tmp_path), *FLAGS]
    assert main(args) == 1
    out, err = capsys.readouterr()
    assert "FAILED rotten_tomatoes-bbt-s1: UnpicklingError" in out and "failed: rotten_tomatoes-bbt-s1" in err
    assert {p.stem for p in tmp_path.glob("*.json")} == {"grid", "rotten_tomatoes-manual-s1", "bbc_news-bbt-s1",
                                                         "bbc_news-manual-s1"}
    rows = list(csv.DictReader(io.StringIO((tmp_path / "table.csv").read_text())))
    assert {(r["task"], r["method"]) for r in rows} == {("rotten_tomatoes", "manual prompt"), ("bbc_news", "BBT"),
                                                        ("bbc_news", "manual prompt")}
    assert "| BBT | - | 89.56 |" in (tmp_path / "table.md").read_text()  # the failed cell is missing, not invented


def test_a_grid_that_would_overwrite_another_is_refused_before_anything_runs(tiny, tmp_path, monkeypatch, capsys):
    lines_of(cells_of(tiny, tasks=("rotten_tomatoes",), methods=("manual",)), tmp_path)
    monkeypatch.setattr(grid, "run_cell", lambda *a: pytest.fail("ran before refusing"))
    with pytest.raises(ValueError, match="another grid's results.*test_size: 6 here, 8 there"):
        grid.run_grid(cells_of(tiny, tasks=("rotten_tomatoes",), methods=("manual",), test_size=6), tmp_path)
    args = ["grid", "--tasks", "rotten_tomatoes", "--methods", "manual", "--seeds", "1", "--profile", "ci",
            "--model", tiny, "--out", str(tmp_path), *RUN_FLAGS]
    args[args.index("--test-size") + 1] = "6"
    assert main(args) == 2 and "choose another --out folder" in capsys.readouterr().err
    stray = tmp_path / "other"
    stray.mkdir()
    (stray / "r.json").write_text("{}")
    with pytest.raises(ValueError, match="no grid.json"):
        grid.run_grid(cells_of(tiny), stray)


def test_more_seeds_in_the_same_folder_extend_the_grid(tiny, tmp_path, monkeypatch):
    lines_of(cells_of(tiny, tasks=("rotten_tomatoes",), methods=("manual",)), tmp_path)
    outcome, lines = lines_of(cells_of(tiny, tasks=("rotten_tomatoes",), methods=("manual",), seeds=(1, 2)), tmp_path)
    assert outcome.skipped == ["rotten_tomatoes-manual-s1"] and len(lines) == 1 and len(outcome.results) == 2


def test_hub_tasks_are_refused_up_front_when_the_hub_is_off(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(ValueError, match="sst2 comes from the Hugging Face hub, but HF_DATASETS_OFFLINE=1"):
        grid.run_grid(grid.plan(["rotten_tomatoes", "sst2"], ["manual"], [1], "ci"), tmp_path)
    assert not (tmp_path / "grid.json").exists()
    with pytest.raises(ValueError, match="unknown task 'sst3'"):
        grid.run_grid(grid.plan(["sst3"], ["manual"], [1], "ci"), tmp_path)


def test_on_ray_a_gpu_machine_needs_a_gpu_share_before_anything_runs(tiny, tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cells = grid.plan(["rotten_tomatoes"], ["manual"], [1], "ci", tiny)
    with pytest.raises(ValueError, match="Ray hides the GPUs from a task that reserves none"):
        grid.run_grid(cells, tmp_path, ray=True)
    assert not (tmp_path / "grid.json").exists()
    with pytest.raises(ValueError, match="give --gpus-per-run"):
        grid.run_grid(grid.plan(["rotten_tomatoes"], ["manual"], [1], "ci", tiny, device="cuda"), tmp_path,
                      address="127.0.0.1:9")


def result(task, method, seed, acc, optimizer="cma", **extra):
    config = {"optimizer": optimizer, "intrinsic_dim": 6} if method in ("bbt", "bbtv2") else None
    return {"task": task, "method": method, "seed": seed, "test_accuracy": acc, "k": 2, "config": config, **extra}


def test_the_table_puts_means_beside_the_papers_numbers_and_judges_with_the_given_rule():
    results = [result("rotten_tomatoes", "manual", s, 0.60) for s in (1, 2, 3)]
    results += [result("rotten_tomatoes", "bbt", s, a) for s, a in ((1, 0.70), (2, 0.72), (3, 0.74))]
    results += [result("rotten_tomatoes", "bbtv2", s, a) for s, a in ((1, 0.70), (2, 0.75), (3, 0.71))]
    results += [result("mrpc", "bbt", s, 0.5, test_f1=f) for s, f in ((1, 0.6), (2, 0.7))]
    table = paper.grid_table(results, paper.per_seed(compare))
    bbt = table.cell("rotten_tomatoes", "BBT")
    assert (bbt["n"], bbt["mean"], bbt["std"], bbt["paper_task"], bbt["paper"]) == (3, 72.0, 2.0, "sst2", 89.56)
    mrpc = table.cell("mrpc", "BBT")
    assert (mrpc["mean"], mrpc["paper"]) == (65.0, 61.56)  # F1 for MRPC, as the papers report it
    expected = compare([100 * a for a in (0.70, 0.72, 0.74)], 100 * 0.60, "BBT", "the manual prompt",
                       what="test score (%)", fmt=".2f")
    assert table.sentence("rotten_tomatoes", "BBT", "manual prompt") == expected.sentence
    assert expected.verdict == "higher"  # the manual prompt's seeds are one fixed reference: spread of BBT's alone
    versus = [(v["method"], v["versus"]) for v in table.verdicts if v["task"] == "rotten_tomatoes"]
    assert versus == [("BBT", "manual prompt"), ("BBTv2", "manual prompt"), ("BBTv2", "BBT")]
    md = table.markdown()
    assert "| rotten_tomatoes | paper: sst2 (stand-in) | mrpc | paper: mrpc |" in md
    assert "| BBT | 72.00 ± 2.00 (n=3) | 89.56 | 65.00 ± 7.07 (n=2) | 61.56 |" in md
    assert expected.sentence in md
    rows = list(csv.DictReader(io.StringIO(table.verdicts_csv())))
    assert rows[0]["sentence"] == expected.sentence and rows[0]["verdict"] == "higher"


def test_the_table_gives_each_swept_value_its_row_and_compares_like_with_like():
    results = [result("bbc_news", "manual", 1, 0.3)]
    for d, accs in ((6, (0.4, 0.5)), (8, (0.6, 0.7))):
        for method in ("bbt", "bbtv2"):
            results += [result("bbc_news", method, s, a, intrinsic_dim=d) for s, a in zip((1, 2), accs)]
    for r in results:
        if r["config"]:
            r["config"]["intrinsic_dim"] = r.pop("intrinsic_dim")
    table = paper.grid_table(results, paper.per_seed(compare), sweep=("intrinsic_dim",))
    assert table.methods == ["manual prompt", "BBT (intrinsic_dim=6)", "BBT (intrinsic_dim=8)",
                             "BBTv2 (intrinsic_dim=6)", "BBTv2 (intrinsic_dim=8)"]  # in the papers' row order
    pairs = {(v["method"], v["versus"]) for v in table.verdicts if v["versus"] != "manual prompt"}
    assert pairs == {("BBTv2 (intrinsic_dim=6)", "BBT (intrinsic_dim=6)"),
                     ("BBTv2 (intrinsic_dim=8)", "BBT (intrinsic_dim=8)")}


def test_each_paper_number_sits_beside_the_run_of_its_budget_and_tuners_meet_at_equal_calls():
    """DBPedia: BBT at 8,000 calls beside the BBTv2 paper's 79.99 and judged against BBTv2 at 8,000; BBT at
    20,000 beside the ICML paper's own 87.80 and never judged against BBTv2 at 8,000."""
    def runs(method, budget, accs):
        out = [result("dbpedia", method, s, a) for s, a in zip((1, 2), accs)]
        for r in out:
            r["config"]["budget"] = budget
        return out

    equal = paper.grid_table(runs("bbt", 8000, (0.80, 0.82)) + runs("bbtv2", 8000, (0.90, 0.92)),
                             paper.per_seed(compare))
    assert (equal.cell("dbpedia", "BBT")["paper"], equal.cell("dbpedia", "BBTv2")["paper"]) == (79.99, 93.64)
    assert [(v["method"], v["versus"]) for v in equal.verdicts] == [("BBTv2", "BBT")]
    assert "| BBT | 81.00 ± 1.41 (n=2) | 79.99 |" in equal.markdown()
    longer = paper.grid_table(runs("bbt", 20000, (0.86, 0.88)) + runs("bbtv2", 8000, (0.90, 0.92)),
                              paper.per_seed(compare))
    bbt = longer.cell("dbpedia", "BBT")
    assert (bbt["budget"], bbt["paper"], bbt["paper_budget"]) == (20000, 87.80, 20000)
    assert longer.verdicts == []  # 20,000 calls against 8,000: not an equal-budget comparison
    short = paper.grid_table(runs("bbt", 2000, (0.5, 0.6)), None)
    assert "| BBT | 55.00 ± 7.07 (n=2) | 79.99 (at 8,000 calls) |" in short.markdown()  # another budget: said


def test_cost_of_the_papers_grid_counts_its_calls_and_prices_them_from_the_benchmark():
    cells = grid.plan(paper.PAPER_TASKS, ["manual", "bbt", "bbtv2"], [1, 2, 3], "full", "roberta-large")
    c = grid.cost(cells)
    assert (c["cells"], c["tuning_runs"]) == (63, 42)
    assert c["calls"] == 2 * 3 * 7 * 8000  # every tuner at Table 3's 8,000 calls, DBPedia's BBT too
    record = json.loads(grid.BENCH.read_text())["runs"]["roberta-large-shape BBT"]
    sst2 = grid.cost([c for c in cells if c.name == "sst2-bbt-s1"])
    assert sst2["gpu_s"] == pytest.approx(8000 * record["fast_s_per_call"])  # 32 examples of the benchmark's length
    assert sst2["tokens"] == 8000 * 32 * (50 + record["mean_text_tokens"])
    assert "tuning calls" in grid.describe_cost(c)


# ----------------------------------------------------------------------------- on Ray

@pytest.mark.ray
def test_an_unreachable_ray_address_is_refused_at_once(tiny, tmp_path, capsys):
    started = time.perf_counter()
    args = ["grid", "--tasks", "rotten_tomatoes", "--methods", "manual", "--seeds", "1", "--profile", "ci",
            "--model", tiny, "--out", str(tmp_path / "g"), "--address", "127.0.0.1:9", *RUN_FLAGS]
    import ray

    assert not ray.is_initialized()  # (an instance of this process would be used instead of the address)
    assert main(args) == 2
    assert "cannot reach the Ray cluster at 127.0.0.1:9" in capsys.readouterr().err
    assert time.perf_counter() - started < 30 and not (tmp_path / "g").exists()



HOLD, HELD = "HOLD", "held.pid"


def _hold_at_first_checkpoint():
    """Ray workers' setup: where the checkpoint's folder holds HOLD, the first worker to save a checkpoint
    there writes its pid and waits to be killed (a worker lost mid-cell)."""
    from bbt_mini.methods.tuning import Run

    save = Run.save

    def save_then_hold(self, path, state):
        save(self, path, state)
        folder = Path(path).parent
        if (folder / HOLD).exists():
            try:
                fd = os.open(folder / "held", os.O_CREAT | os.O_EXCL)  # once: the retry goes on
            except FileExistsError:
                return
            os.close(fd)
            (folder / HELD).write_text(str(os.getpid()))
            while True:
                time.sleep(0.1)

    Run.save = save_then_hold


@pytest.fixture(scope="module")
def ray_local():
    import ray  # the grid extra: CI installs it, and these tests must run there
    here = Path(__file__).resolve().parent
    path = os.pathsep.join([str(here.parent), str(here), os.environ.get("PYTHONPATH", "")])
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path, "OMP_NUM_THREADS": "1"},
                          "worker_process_setup_hook": _hold_at_first_checkpoint})
    yield ray
    ray.shutdown()


@pytest.mark.ray
def test_a_grid_on_ray_gives_the_same_results_as_in_process(tiny, tmp_path, ray_local):
    cells = cells_of(tiny)
    here, _ = lines_of(cells, tmp_path / "here")
    there, lines = lines_of(cells, tmp_path / "ray", ray=True)
    assert there.ok and len(there.results) == 4
    assert all(f"pid {os.getpid()}]" not in line and "pid" in line for line in lines)  # they ran in Ray's workers
    assert {n: without_timings(r) for n, r in there.results.items()} == \
        {n: without_timings(r) for n, r in here.results.items()}


@pytest.mark.ray
def test_a_killed_worker_is_retried_and_its_cell_resumes_to_the_uninterrupted_result(tiny, tmp_path, ray_local):
    cells = cells_of(tiny, tasks=("rotten_tomatoes",), methods=("bbt",))
    whole, _ = lines_of(cells, tmp_path / "whole")
    folder = tmp_path / "killed"
    folder.mkdir()
    (folder / HOLD).write_text("")
    killed = []

    def kill_when_held():
        for _ in range(1200):
            if (folder / HELD).exists() and (folder / HELD).read_text():
                pid = int((folder / HELD).read_text())
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.1)

    killer = threading.Thread(target=kill_when_held)
    killer.start()
    outcome, lines = lines_of(cells, folder, ray=True, max_retries=2)
    killer.join()
    assert killed, "the worker never reached its checkpoint"
    assert outcome.ok, outcome.failed
    assert "resumed at call 8" in lines[0] and f"pid {killed[0]}]" not in lines[0]  # another worker, from call 8
    name = cells[0].name
    assert without_timings(outcome.results[name]) == without_timings(whole.results[name])


@pytest.mark.ray
def test_on_ray_a_cell_that_raises_is_reported_and_the_others_complete(tiny, tmp_path, ray_local):
    (tmp_path / "bbc_news-bbt-s1.ckpt").write_bytes(b"not a checkpoint")
    outcome, lines = lines_of(cells_of(tiny), tmp_path, ray=True)
    assert list(outcome.failed) == ["bbc_news-bbt-s1"] and "UnpicklingError" in outcome.failed["bbc_news-bbt-s1"]
    assert sorted(outcome.results) == ["bbc_news-manual-s1", "rotten_tomatoes-bbt-s1", "rotten_tomatoes-manual-s1"]
    assert sum(line.startswith("FAILED bbc_news-bbt-s1") for line in lines) == 1
