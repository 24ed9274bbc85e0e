"""A grid of runs: tasks x methods x seeds x one profile (and any setting swept), resumable, on Ray or here.

Read :func:`plan` first: it turns the grid's axes into :class:`Cell` s, each one run
(a :class:`bbt_mini.run.spec.RunSpec`) with its own name, checkpoint (``NAME.ckpt``) and result
(``NAME.json``, stored as the run cache stores its results: :func:`bbt_mini.run.runs.save`) in one
output folder. :func:`run_grid` then

* refuses, before anything runs, a task the hub cannot give here, settings a method does not
  take, and a folder whose manifest (``grid.json``: every cell's full settings) says that a cell
  of this name is another run (it would overwrite that grid's result);
* skips the cells whose result is already there, so the same command resumes a grid;
* runs the rest one after another in this process, or as Ray tasks (Moritz et al., 2018,
  "Ray: a distributed framework for emerging AI applications"; :func:`connect`): each with the
  CPUs and GPU share a run needs, retried ``max_retries`` times when its worker is lost; a
  retried cell resumes from its own checkpoint (written at every dev check), so a killed worker
  costs at most one dev-check interval of calls, and it ends exactly as an uninterrupted run;
* reports each finished cell in a line, and a cell that fails with its error while the others
  finish.

:func:`write_table` puts the results into the papers' table
(:func:`bbt_mini.core.paper.grid_table`), with the verdict rule it is given; :func:`cost`
says what a grid spends (calls, tokens) and how long it takes on the GPU recorded in
``results/gpu/bench.json``. Ray is optional (``pip install bbt-mini[grid]``) and imported only
when a grid runs on it.
"""
from __future__ import annotations

import itertools
import json
import os
import pickle
import socket
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..core import paper
from ..core.optimizers import check_seed
from ..core.profiles import get_profile
from ..core.results import to_json
from ..data.tasks import get_task
from ..methods.registry import METHODS, TUNERS, method
from .runs import load, run, save
from .spec import RUN_SIZES, RunSpec

MANIFEST = "grid.json"
BENCH = Path(__file__).resolve().parents[2] / "results" / "gpu" / "bench.json"
HUB_OFFLINE = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")


@dataclass(frozen=True)
class Cell:
    """One run of a grid: its file name and its spec."""

    name: str
    spec: RunSpec
    swept: tuple = ()  # the settings this cell's grid sweeps that it takes (they name it and its table row)

    @property
    def tuner(self) -> bool:
        return self.spec.tunes


def _value_name(value) -> str:
    return str(value).replace("/", "_").replace(" ", "_")


def cell_name(spec: RunSpec, swept: tuple = ()) -> str:
    """A cell's name from its spec: task, method, the values of the swept settings, seed
    (``rotten_tomatoes-bbt-intrinsic_dim_50-s1``)."""
    values = "".join(f"-{name}_{_value_name(spec.setting(name))}" for name in swept)
    return f"{spec.task_name}-{spec.method}{values}-s{spec.seed}"


def plan(tasks, methods, seeds, profile: str | None = None, model: str = "smollm2", settings: dict | None = None,
         device: str | None = None, dtype: str | None = None) -> list[Cell]:
    """The grid's cells, in order task, method, swept settings, seed.

    ``settings``: BBT/BBTv2 settings (``budget=``, ``intrinsic_dim=``...) and ``k``/``test_size``;
    a list is swept (one cell per value, named after it: :func:`cell_name`), a single value applies to
    every cell. Each cell's spec is made with ``per_task=True``: it also gets its task's sizes in the
    profile and the book's per-task recipe (:func:`bbt_mini.core.paper.task_settings`: both tuners train
    with the hinge loss on sentence pairs; every tuner runs the profile's budget, DBPedia's too, so BBT and
    BBTv2 meet at equal calls as in the BBTv2 paper's Table 3) (:mod:`bbt_mini.run.spec`); the given
    settings come last. A baseline takes only ``k`` and ``test_size``: its cells are not
    repeated over the tuners' swept settings.
    """
    profile = get_profile(profile)
    settings = dict(settings or {})
    for axis, values in (("tasks", tasks), ("methods", methods), ("seeds", seeds)):
        if not values:
            raise ValueError(f"a grid needs at least one of its {axis}")
        if len(set(values)) != len(values):
            raise ValueError(f"{axis} lists a value twice: {list(values)}")
    swept = {k: list(v) for k, v in settings.items() if isinstance(v, (list, tuple))}
    for name, values in swept.items():
        if not values or len(set(values)) != len(values):
            raise ValueError(f"the setting {name} sweeps {values}: give distinct values")
    fixed = {k: v for k, v in settings.items() if k not in swept}
    for seed in seeds:
        check_seed(seed)
    rows = [method(m) for m in methods]
    if not any(row.tunes for row in rows) and set(settings) - set(RUN_SIZES):
        raise ValueError(f"{sorted(set(settings) - set(RUN_SIZES))} set the tuners {TUNERS}, and this grid has "
                         f"none of them ({list(methods)}): nothing would use them")
    cells = []
    for task, row in itertools.product(tasks, rows):
        takes = None if row.tunes else RUN_SIZES  # a tuner gets every setting (and refuses what it does not take)
        mine = {k: v for k, v in swept.items() if takes is None or k in takes}
        for point in itertools.product(*mine.values()):
            chosen = {k: v for k, v in {**fixed, **dict(zip(mine, point))}.items() if takes is None or k in takes}
            sizes = {"k": chosen.pop("k", None), "test_size": chosen.pop("test_size", "profile")}
            for seed in seeds:  # settings out of range or not for the method: refused before anything runs
                spec = RunSpec(row.name, task, model, int(seed), profile, config=chosen, **sizes, device=device,
                               dtype=dtype, per_task=True)
                cells.append(Cell(cell_name(spec, tuple(mine)), spec, tuple(mine)))
    return cells


def check_tasks(tasks) -> None:
    """Refuse, before anything runs, a task that is not registered or that the hub cannot give here."""

    hub = [t for t in tasks if get_task(t).source == "hub"]
    if not hub:
        return
    off = [v for v in HUB_OFFLINE if os.environ.get(v) == "1"]
    if off:
        switches = " and ".join(f"{v}=1" for v in off)
        raise ValueError(f"{', '.join(hub)} come{'s' * (len(hub) == 1)} from the Hugging Face hub, but {switches} "
                         f"keep{'s' * (len(off) == 1)} the hub off here: every such cell would fail. Run them where "
                         "the hub is reachable (Colab), or use the offline tasks (rotten_tomatoes, imdb, bbc_news, "
                         "bbc_pairs)")
    try:
        import datasets  # noqa: F401
    except ImportError:
        raise ValueError(f"{', '.join(hub)} come from the Hugging Face hub and need the `datasets` package "
                         "(pip install datasets) and the network") from None


def check_gpu_share(cells: list[Cell]) -> None:
    """On Ray, a task that reserves no GPU sees none (Ray sets ``CUDA_VISIBLE_DEVICES`` to empty for it): refuse
    a grid that would then quietly run on the CPU of a GPU machine, or fail for want of the GPU it names."""

    devices = {c.spec.device for c in cells}
    if any(d and str(d).startswith("cuda") for d in devices) or (None in devices and torch.cuda.is_available()):
        raise ValueError("the cells would run on a GPU, but --gpus-per-run is 0 and Ray hides the GPUs from a task "
                         "that reserves none: give --gpus-per-run (1: a whole GPU per run), or --device cpu")


def check_folder(cells: list[Cell], folder: Path) -> dict:
    """The folder's manifest with this grid's cells added; refused if a cell would overwrite another grid's."""
    path = folder / MANIFEST
    if path.exists():
        manifest = json.loads(path.read_text())
    else:
        strays = sorted(p.name for p in folder.glob("*.json")) if folder.is_dir() else []
        if strays:
            raise ValueError(f"{folder} holds results ({', '.join(strays[:3])}...) but no {MANIFEST}: they were not "
                             "written by a grid, and cells of this one could overwrite them; use another --out folder")
        manifest = {"cells": {}}
    clashes = []
    for cell in cells:
        theirs, mine = manifest["cells"].get(cell.name), _manifest_entry(cell)
        if theirs is not None and theirs != mine:
            differ = [f"{k}: {mine.get(k)!r} here, {theirs.get(k)!r} there"
                      for k in sorted(set(mine) | set(theirs)) if mine.get(k) != theirs.get(k)]
            clashes.append(f"{cell.name} ({'; '.join(differ)})")
    if clashes:
        raise ValueError(f"{folder} holds another grid's results under the names of this grid's cells: "
                         f"{'; '.join(clashes[:3])}{' ...' if len(clashes) > 3 else ''}. Running would overwrite "
                         "them: choose another --out folder")
    manifest["cells"].update({cell.name: _manifest_entry(cell) for cell in cells})
    return manifest


def _manifest_entry(cell: Cell) -> dict:
    """The cell's spec as the manifest holds it (read back from JSON)."""
    return json.loads(json.dumps(cell.spec.as_dict(), sort_keys=True, default=str))


def finished(cell: Cell, folder: Path) -> bool:
    return (folder / f"{cell.name}.json").exists()


def _checkpoint_calls(path: Path | None) -> int:
    """Calls already made by the run whose checkpoint is ``path`` (0: none to resume from)."""
    if path is None or not path.exists():
        return 0

    with open(path, "rb") as f:
        return int(pickle.load(f).get("calls", 0))


def run_cell(name: str, spec: RunSpec, folder: str) -> dict:
    """Run one cell (resuming from its checkpoint in ``folder`` if there is one); return its result
    (JSON-ready) and where it ran, or its error. Never raises for the run's own errors: the grid reports them."""
    ckpt = Path(folder) / f"{name}.ckpt" if spec.tunes else None
    where = {"name": name, "host": socket.gethostname(), "pid": os.getpid()}
    try:
        resumed_at = _checkpoint_calls(ckpt)
        result = run(spec, ckpt, resume=ckpt is not None, progress=False)
    except Exception as err:  # the grid goes on with the other cells and reports this one
        return {**where, "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
    return {**where, "resumed_at": resumed_at, "result": json.loads(to_json(result))}


@dataclass
class Outcome:
    """What :func:`run_grid` did: every cell's result (read back or computed), and the cells that failed."""

    results: dict  # cell name -> result dict, in the grid's order
    failed: dict  # cell name -> error message
    skipped: list  # cells already finished before this call

    @property
    def ok(self) -> bool:
        return not self.failed


def connect(address: str | None = None, num_cpus: int | None = None):
    """Ray, connected: an instance already started in this process, the cluster at ``address``
    (checked first: an unreachable address is refused at once, not after Ray's own minute of
    retries), or a new local instance."""
    try:
        import ray
    except ImportError:
        raise RuntimeError("the grid on Ray needs Ray: pip install 'bbt-mini[grid]' (ray==2.60.0)") from None
    if ray.is_initialized():
        return ray
    if address and address != "auto":
        host_port = address.split("://", 1)[-1]
        host, _, port = host_port.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"--address {address}: give HOST:PORT (a Ray head node, e.g. 10.0.0.1:6379) or "
                             "ray://HOST:PORT")
        try:
            socket.create_connection((host, int(port)), timeout=5).close()
        except OSError as err:
            raise ConnectionError(f"cannot reach the Ray cluster at {address}: {err}. Start it there with "
                                  "`ray start --head --port PORT`, or run with --ray for a local instance") from None
    try:
        ray.init(address=address, num_cpus=None if address else num_cpus, include_dashboard=False,
                 logging_level="ERROR", log_to_driver=False)
    except Exception as err:
        raise ConnectionError(f"could not connect to Ray{f' at {address}' if address else ''}: {err}") from None
    return ray


def _summary(name: str, result: dict, out: dict) -> str:
    where = "" if out.get("pid") == os.getpid() else f" [{out.get('host')} pid {out.get('pid')}]"
    resumed = f", resumed at call {out['resumed_at']}" if out.get("resumed_at") else ""
    return (f"done {name}: test {paper.score(result):.2f}, {result.get('calls', 0):,} calls, "
            f"{result.get('tokens', 0):,} tokens, {result.get('wall_s', 0):.0f} s{resumed}{where}")


def run_grid(cells: list[Cell], folder: str | Path, ray: bool = False, address: str | None = None,
             cpus_per_run: float = 1, gpus_per_run: float = 0, max_retries: int = 3, progress: bool = True,
             write=None) -> Outcome:
    """Run the cells not yet finished in ``folder``; see the module doc. ``ray`` or ``address``: as Ray tasks.

    ``write``: where the lines go (default: above the progress bar). Returns an :class:`Outcome`.
    """

    if cpus_per_run <= 0 or gpus_per_run < 0 or max_retries < 0:
        raise ValueError(f"cpus_per_run must be positive and gpus_per_run, max_retries 0 or more; got "
                         f"{cpus_per_run}, {gpus_per_run}, {max_retries}")
    folder = Path(folder)
    if (ray or address) and not gpus_per_run:
        check_gpu_share(cells)
    check_tasks(dict.fromkeys(c.spec.task for c in cells))
    manifest = check_folder(cells, folder)
    client = connect(address, num_cpus=None) if (ray or address) else None  # refused here if unreachable
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    os.replace(tmp, folder / MANIFEST)

    skipped = [c.name for c in cells if finished(c, folder)]
    todo = [c for c in cells if not finished(c, folder)]
    bar = tqdm(total=len(todo), unit="cell", desc=f"grid ({len(skipped)} of {len(cells)} cells already done)",
               disable=not progress, mininterval=1.0)
    write = write or bar.write
    failed, calls = {}, 0

    def finish(cell: Cell, out: dict) -> None:
        nonlocal calls
        if "error" in out:
            failed[cell.name] = out["error"]
            write(f"FAILED {cell.name}: {out['error']}")
        else:
            result = out["result"]
            save(result, folder / f"{cell.name}.json")
            calls += result.get("calls", 0)
            write(_summary(cell.name, result, out))
        bar.update(1)
        bar.set_postfix(calls=f"{calls:,}", failed=len(failed), refresh=True)

    try:
        if client is None:
            for cell in todo:
                finish(cell, run_cell(cell.name, cell.spec, str(folder)))
        else:
            task = client.remote(run_cell).options(num_cpus=cpus_per_run, num_gpus=gpus_per_run,
                                                   max_retries=max_retries, retry_exceptions=False)
            pending = {task.remote(cell.name, cell.spec, str(folder.resolve())): cell for cell in todo}
            while pending:
                done, _ = client.wait(list(pending), num_returns=1)
                for ref in done:
                    cell = pending.pop(ref)
                    try:
                        out = client.get(ref)
                    except Exception as err:  # the worker was lost more than max_retries times
                        out = {"error": f"{type(err).__name__}: {str(err).splitlines()[0]}"}
                    finish(cell, out)
    finally:
        bar.close()
    results = {c.name: load(folder / f"{c.name}.json") for c in cells if finished(c, folder)}
    return Outcome(results, failed, skipped)


def write_table(outcome: Outcome, folder: str | Path, verdict, cells: list[Cell] | None = None) -> paper.GridTable:
    """The papers' table of a grid's results (:func:`bbt_mini.core.paper.grid_table`), written into
    ``folder`` as ``table.md``, ``table.csv`` and ``verdicts.csv``; ``verdict`` is the book's rule."""
    cells = cells or []
    sweep = tuple(dict.fromkeys(name for c in cells for name in c.swept))
    tasks = tuple(dict.fromkeys(c.spec.task_name for c in cells)) or None
    table = paper.grid_table(list(outcome.results.values()), verdict, tasks=tasks, sweep=sweep)
    folder = Path(folder)
    (folder / "table.md").write_text(table.markdown() + "\n")
    (folder / "table.csv").write_text(table.csv())
    (folder / "verdicts.csv").write_text(table.verdicts_csv())
    return table


# ----------------------------------------------------------------------------- what a grid costs

def cost(cells: list[Cell], bench: Path = BENCH) -> dict:
    """What a grid spends and, from the recorded benchmark, how long its tuning takes on that GPU.

    ``calls``: tuning calls (dev checks and test sets not counted); ``tokens``: those calls' tokens,
    the texts taken as long as the benchmark's (an estimate); ``gpu_s``: the benchmark's seconds
    per call for the model's shape (RoBERTa-large for masked hub models, else SmolLM2), scaled by
    the examples per call and the tokens per example.
    """

    record = json.loads(bench.read_text()) if bench.exists() else None
    calls = tokens = gpu_s = 0.0
    for cell in cells:
        if not cell.tuner:
            continue
        config = cell.spec.config
        examples = cell.spec.k * len(get_task(cell.spec.task).classes)
        shape = "roberta-large-shape" if "roberta" in cell.spec.model else "smollm2"
        case = (record or {}).get("runs", {}).get(f"{shape} {METHODS[cell.spec.method].label}")
        text = case["mean_text_tokens"] if case else 96.0
        calls += config.budget
        tokens += config.budget * examples * (config.prompt_length + text)
        if case:
            size = examples / case["examples_per_call"] * (config.prompt_length + text) / (case["prompt_length"] + text)
            gpu_s += config.budget * case["fast_s_per_call"] * size
    device = record["machine"]["device"] if record else None
    return {"cells": len(cells), "tuning_runs": sum(c.tuner for c in cells), "calls": int(calls),
            "tokens": int(tokens), "gpu_s": gpu_s if record else None, "gpu": device}


def describe_cost(c: dict) -> str:
    """:func:`cost` in a line."""
    if c["gpu_s"] is None:
        gpu = ""
    else:
        took = f"{c['gpu_s']:.0f} s" if c["gpu_s"] < 90 else f"{c['gpu_s'] / 60:.0f} min"
        gpu = f"; about {took} of tuning on one {c['gpu']} (recorded benchmark, one run at a time)"
    tokens = f"{c['tokens'] / 1e6:,.1f} M" if c["tokens"] >= 1e6 else f"{c['tokens']:,}"
    return (f"{c['cells']} cells ({c['tuning_runs']} tuning runs): {c['calls']:,} tuning calls, "
            f"about {tokens} tokens{gpu}")
