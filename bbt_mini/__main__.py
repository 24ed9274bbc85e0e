"""Command line: ``python -m bbt_mini run --task rotten_tomatoes --method bbt --seed 1 --out r.json``.

``python -m bbt_mini grid --tasks ... --methods ... --seeds ...`` runs a grid of them (:mod:`bbt_mini.run.grid`);
``python -m bbt_mini tasks`` lists the tasks; ``python -m bbt_mini.run.bench`` times the black box.

The tuned prompt as the product (:mod:`bbt_mini.run.prompt_file`): ``run ... --save-prompt p/`` keeps it,
``predict --prompt p/ --csv new.csv`` answers new rows with it and ``evaluate --prompt p/ --csv labelled.csv``
judges it against the manual prompt on the same rows.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

from .core import settings as machine
from .book.notebook import compare
from .core.paper import per_seed
from .core.profiles import PROFILES, get_profile
from .core.results import to_json
from .core.settings import API_KEY_ENV, DEFAULT_MAX_MODEL_LEN, DEFAULT_PORT, DTYPE_NAMES, DTYPES
from .data.tasks import TASKS, csv_task, get_task
from .lm.loading import check_label_words, model_folder, model_kind
from .methods.bbt import BBTConfig, settings
from .methods.experiment import PLACEMENTS
from .methods.registry import METHODS, TUNERS
from .run import grid as grids
from .run import own_data, prompt_file, runs, server
from .run.spec import RunSpec
from .service.fingerprint import weights_digest

CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(BBTConfig))  # the tuners' settings: one flag each


def parse_labels(text: str) -> dict:
    """``"negative:bad,positive:great"`` -> ``{"negative": " bad", "positive": " great"}``.

    A space is put before each word (the form most tokenizers use after another word).
    """
    labels = {}
    for item in text.split(","):
        if ":" not in item:
            raise ValueError(f"--labels needs VALUE:WORD pairs separated by commas; got {item!r}")
        value, word = item.split(":", 1)
        if not value or not word.strip():
            raise ValueError(f"--labels has an empty value or word in {item!r}")
        if value in labels:
            raise ValueError(f"--labels names the value {value!r} twice")
        labels[value] = " " + word.strip()
    if len(labels) < 2:
        raise ValueError("--labels needs at least two classes")
    return labels


def config_flags(parser: argparse.ArgumentParser, nargs: str | None = None) -> None:
    """One flag per field of :class:`bbt_mini.methods.bbt.BBTConfig`: name, type, help and choices come from there.

    ``nargs="+"`` (the grid): a flag takes several values, which the grid sweeps."""
    group = parser.add_argument_group("BBT and BBTv2 settings (default: the profile's, then the papers')"
                                      + ("; several values are swept" if nargs else ""))
    for name, kind, help, choices in settings(BBTConfig):
        group.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, choices=choices, help=help,
                           nargs=nargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bbt_mini", description="Black-Box Tuning of language models.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("tasks", help="list the registered tasks")
    run = sub.add_parser("run", help="run one method on one task and seed; print or write JSON")
    run.add_argument("--task", help="a registered task (see `tasks`); or use --csv")
    run.add_argument("--csv", help="your own data: a CSV file with a `label` column and the template's columns")
    run.add_argument("--template", help='with --csv: e.g. "Review: {text} It was" ({column} names a CSV column)')
    run.add_argument("--labels", help='with --csv: e.g. "negative:bad,positive:great" (label value:label word)')
    run.add_argument("--method", default="bbt", choices=tuple(METHODS))
    run.add_argument("--model", default="smollm2", help="smollm2 (offline), a hub name or a local folder")
    run.add_argument("--seed", type=int, default=1, help="seed of the split and the search (from 1)")
    run.add_argument("--profile", choices=sorted(PROFILES), help="a book size: the profile's shots, budget and "
                     "sizes. Without it: the sizes of $BBT_PROFILE, or colab on a GPU and small on a CPU, but the "
                     "papers' 16 shots per class (or as many as the data affords, with a warning), and a tuner "
                     "states its budget and the time it will take here before it starts")
    run.add_argument("--variant", help="template variant, e.g. `paper` for rotten_tomatoes")
    run.add_argument("--placement", choices=PLACEMENTS, default="prepend",
                     help="where the soft prompt goes: before the text, or between text and question (causal LMs)")
    config_flags(run)
    run.add_argument("--k", type=int, help="examples per class for train (and as many for dev; default: the "
                     "profile's with --profile, else the papers' 16 or as many as the data affords)")
    run.add_argument("--test-size", type=int, help="test examples (default: the profile's)")
    run.add_argument("--steps", type=int, help="prompt_tuning / feature_mlp: optimisation steps")
    run.add_argument("--per-class", type=int, help="icl: demonstrations per class (default: the whole k-shot train "
                     "set)")
    run.add_argument("--checkpoint", help="bbt / bbtv2: file to save the run's state to, every dev check")
    run.add_argument("--resume", action="store_true", help="continue from --checkpoint if it exists")
    run.add_argument("--device", help="cpu, cuda, cuda:1... (default: $BBT_DEVICE, else CUDA if present)")
    run.add_argument("--dtype", choices=sorted(DTYPES), help="(default: $BBT_DTYPE, else bf16 where it is native, "
                     "fp16 on older GPUs, else float32)")
    run.add_argument("--service", help="a remote black box: an OpenAI-compatible server's URL, e.g. "
                     "http://127.0.0.1:8011/v1 (see `serve`; bbt and manual only)")
    run.add_argument("--api-key", help="with --service: the server's API key (default: $BBT_API_KEY); --dtype "
                     "then names the server's number format, as the result records it")
    run.add_argument("--out", help="write the JSON result here (default: print it)")
    run.add_argument("--save-prompt", metavar="DIR", help="bbt / bbtv2: save the tuned prompt in this folder "
                     "(for `predict` and `evaluate`; a PEFT adapter too where PEFT places it as tuned)")
    run.add_argument("--force", action="store_true", help="with --save-prompt: replace a prompt already there")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    for name, text in (("predict", "answer new rows with a saved prompt: the class and each label word's "
                        "probability"),
                       ("evaluate", "the saved prompt and the manual prompt on the same labelled rows, judged "
                        "by the book's rule")):
        answer_flags(sub.add_parser(name, help=text), name == "predict")
    grid_flags(sub.add_parser("grid", help="tasks x methods x seeds in one profile, resumable, in this process "
                              "or on Ray; writes the papers' table"))
    serve = sub.add_parser("serve", help="build the server's environment once and start vLLM on the model "
                           "(an OpenAI-compatible server for --service)")
    serve.add_argument("--model", default="smollm2", help="smollm2 (offline) or a local model folder")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT)
    serve.add_argument("--api-key", help="refuse requests without this key (default: $BBT_API_KEY, else none)")
    serve.add_argument("--max-model-len", type=int, default=DEFAULT_MAX_MODEL_LEN,
                       help="the most tokens of one sequence")
    serve.add_argument("--dtype", choices=DTYPE_NAMES,
                       help="the server's number format (default: bfloat16 on a GPU that runs it natively, float16 "
                       "on older ones such as a T4, float32 on a CPU)")
    serve.add_argument("--build-only", action="store_true", help="build the environment and stop")
    return parser


def answer_flags(cmd: argparse.ArgumentParser, predict: bool) -> None:
    """The flags of ``predict`` and ``evaluate``."""
    cmd.add_argument("--prompt", required=True, metavar="DIR", help="a folder written by run --save-prompt")
    rows = cmd.add_mutually_exclusive_group(required=True) if predict else cmd
    rows.add_argument("--csv", required=not predict, help="a CSV with the template's columns"
                      + ("" if predict else " and a label column (the prompt's classes)"))
    if predict:
        rows.add_argument("--text", help="one text for the template's one column")
    cmd.add_argument("--out", help="write the answers as CSV here (default: print them)" if predict
                     else "write the scores, answers and verdict as JSON here")
    cmd.add_argument("--model", help="answer with this model (default: the one tuned on; its weights must be the "
                     "same)")
    cmd.add_argument("--service", help="answer through this OpenAI-compatible server (see `serve`), e.g. "
                     "http://127.0.0.1:8011/v1")
    cmd.add_argument("--api-key", help="with --service: the server's API key (default: $BBT_API_KEY)")
    cmd.add_argument("--device", help="cpu, cuda... (default: $BBT_DEVICE, else CUDA if present)")
    cmd.add_argument("--dtype", choices=sorted(DTYPES), help="(default: as `run`)")
    cmd.add_argument("--batch-size", type=int, default=32, help="rows per request")
    cmd.add_argument("--quiet", action="store_true", help="no progress bar")


def grid_flags(grid: argparse.ArgumentParser) -> None:
    grid.add_argument("--tasks", nargs="+", required=True, help="registered tasks (see `tasks`)")
    grid.add_argument("--methods", nargs="+", required=True, choices=tuple(METHODS))
    grid.add_argument("--seeds", nargs="+", type=int, required=True, help="seeds (from 1)")
    grid.add_argument("--profile", choices=sorted(PROFILES), help="experiment size (default: $BBT_PROFILE, or "
                      "colab on a GPU and small on a CPU)")
    grid.add_argument("--model", default="smollm2", help="smollm2 (offline), a hub name or a local folder")
    grid.add_argument("--out", help="the grid's folder: results, checkpoints, manifest, table (default: "
                      "grid-PROFILE)")
    config_flags(grid, nargs="+")
    grid.add_argument("--k", type=int, nargs="+", help="examples per class for train (and as many for dev)")
    grid.add_argument("--test-size", type=int, nargs="+", help="test examples (default: the profile's)")
    grid.add_argument("--device", help="cpu, cuda... (default: $BBT_DEVICE, else CUDA where the run goes)")
    grid.add_argument("--dtype", choices=sorted(DTYPES), help="(default: as `run`)")
    where = grid.add_mutually_exclusive_group()
    where.add_argument("--ray", action="store_true", help="run the cells as Ray tasks on a local Ray instance")
    where.add_argument("--address", help="run the cells on the Ray cluster at this address (HOST:PORT)")
    grid.add_argument("--cpus-per-run", type=float, default=1, help="Ray: CPUs each run reserves")
    grid.add_argument("--gpus-per-run", type=float, default=0, help="Ray: GPUs each run reserves (0.25: four "
                      "runs share one GPU; on one GPU, 1: runs sharing it in separate processes are slower, "
                      "results/README.md)")
    grid.add_argument("--max-retries", type=int, default=3, help="Ray: retries of a cell whose worker is lost")
    grid.add_argument("--quiet", action="store_true", help="no progress bar")


def grid(args) -> int:
    """The grid command: plan, run what is not done, write the table; 1 if a cell failed."""
    if (args.cpus_per_run != 1 or args.gpus_per_run or args.max_retries != 3) and not (args.ray or args.address):
        raise ValueError("--cpus-per-run, --gpus-per-run and --max-retries are for Ray: add --ray or --address")
    names = [*CONFIG_FIELDS, "k", "test_size"]
    chosen = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
    values = {n: v[0] if len(v) == 1 else v for n, v in chosen.items()}
    profile = get_profile(args.profile).name
    cells = grids.plan(args.tasks, args.methods, args.seeds, profile, args.model, values, args.device, args.dtype)
    folder = Path(args.out or f"grid-{profile}")
    print(f"grid in {folder}: {grids.describe_cost(grids.cost(cells))}", flush=True)
    outcome = grids.run_grid(cells, folder, ray=args.ray, address=args.address, cpus_per_run=args.cpus_per_run,
                             gpus_per_run=args.gpus_per_run, max_retries=args.max_retries, progress=not args.quiet,
                             write=None if not args.quiet else print)
    table = grids.write_table(outcome, folder, per_seed(compare), cells)
    print(table.markdown())
    print(f"{len(outcome.results)} of {len(cells)} cells done ({len(outcome.skipped)} were already), "
          f"{len(outcome.failed)} failed; table: {folder / 'table.md'}, {folder / 'table.csv'}")
    for name, error in outcome.failed.items():
        print(f"failed: {name}: {error}", file=sys.stderr)
    return 0 if outcome.ok else 1


def serve(args) -> int:
    if args.build_only:
        print(server.build())
        return 0
    key = machine.api_key(args.api_key)
    return server.serve(args.model, args.port, key, max_model_len=args.max_model_len, dtype=args.dtype)


def check_paths(args) -> None:
    """Files the run reads or writes, checked before any model loads (a run can take hours)."""
    if getattr(args, "save_prompt", None):
        prompt_file.check_target(args.save_prompt, args.force)
    if args.out:
        folder = Path(args.out).resolve().parent
        if not folder.is_dir():
            raise FileNotFoundError(f"--out {args.out}: the folder {folder} does not exist")
        if not os.access(folder, os.W_OK):
            raise PermissionError(f"--out {args.out}: the folder {folder} is not writable")
    if args.csv and not Path(args.csv).is_file():
        raise FileNotFoundError(f"--csv {args.csv}: no such file")


def user_defaults(spec: RunSpec, paper_shots: bool, probe: bool) -> RunSpec:
    """A user's run (a ``--csv``, or a ``--task`` without ``--profile``), not a chapter's: with ``paper_shots``
    the papers' 16 shots per class, or as many as the data affords with a warning
    (:func:`bbt_mini.run.own_data.user_k`); a tuner's budget stated before it starts, and (``probe``) the time it
    will take here (:func:`bbt_mini.run.own_data.plan_lines`)."""
    task = get_task(spec.task) if isinstance(spec.task, str) else spec.task
    if paper_shots:
        k, warning = own_data.user_k(task)
        spec = dataclasses.replace(spec, k=k)
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
    if spec.tunes:
        for line in own_data.plan_lines(spec, len(task.classes), probe=probe):
            print(line, file=sys.stderr)
    return spec


def run(args) -> dict:
    if bool(args.task) == bool(args.csv):
        raise ValueError("give exactly one of --task or --csv")
    if args.csv and not (args.template and args.labels):
        raise ValueError("--csv needs --template and --labels")
    if args.task and (args.template or args.labels):
        raise ValueError("--template and --labels go with --csv")
    if args.resume and not args.checkpoint:
        raise ValueError("--resume needs --checkpoint")
    if args.api_key and not args.service:
        raise ValueError("--api-key goes with --service")
    if args.force and not args.save_prompt:
        raise ValueError("--force goes with --save-prompt")
    if args.save_prompt and args.method not in TUNERS:
        raise ValueError(f"--save-prompt keeps a tuned prompt: the tuners {TUNERS}, not {args.method}")
    names = (*CONFIG_FIELDS, "steps", "per_class")
    config = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    spec = RunSpec(args.method, args.task or args.csv, args.model, args.seed, args.profile, config=config, k=args.k,
                   test_size="profile" if args.test_size is None else args.test_size, variant=args.variant,
                   placement=args.placement, device=args.device, dtype=args.dtype, service=args.service)
    runs.check_checkpoint(spec, args.checkpoint)
    check_paths(args)
    if args.csv:  # the CSV's task, once read, takes the place of its path
        labels = parse_labels(args.labels)
        kind = "causal" if args.service else model_kind(args.model)  # the configuration only: no weights load
        check_label_words(args.model, labels.values())  # the tokenizer only
        spec = dataclasses.replace(spec, task=csv_task(args.csv, args.template, labels, kind=kind))
    if args.csv or args.profile is None:
        spec = user_defaults(spec, args.profile is None and args.k is None, not args.service)
    if args.save_prompt and isinstance(model_folder(args.model), Path):  # a hub model is not downloaded yet
        weights_digest(args.model)  # the fingerprint the prompt file will name, computed (and cached) before the run
    if args.api_key:  # a secret: it reaches the run through this process's environment, never through the spec
        os.environ[API_KEY_ENV] = args.api_key
    result, setup = runs.run_with_setup(spec, args.checkpoint, args.resume, not args.quiet)
    if "_prompt" in result and spec.tunes:  # a tuned prompt: judged against the manual one, kept if asked
        for line in own_data.against_manual(result, setup):
            print(line, file=sys.stderr)
    if args.save_prompt:
        saved = prompt_file.save_prompt(result, setup, args.save_prompt, args.force)
        peft = saved.meta["peft"]
        print(f"prompt saved in {saved.folder}" + ("; PEFT adapter beside it" if peft["written"]
                                                   else f"; {peft['why_not']}"), file=sys.stderr)
    return result


def answer(args) -> int:
    """``predict`` and ``evaluate``: every input is checked (the prompt file, the rows, the model's weights)
    before the model loads."""
    if args.api_key and not args.service:
        raise ValueError("--api-key goes with --service")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1; got {args.batch_size}")
    saved = prompt_file.load_prompt(args.prompt)
    evaluate = args.command == "evaluate"
    if evaluate or args.csv:
        rows, labels = prompt_file.read_rows(args.csv, saved, labelled=evaluate)
    else:
        rows, labels = prompt_file.text_rows(args.text, saved), None
    check_paths(args)
    service = prompt_file.service_for(saved, args.model, args.service, args.device, args.dtype,
                                      machine.api_key(args.api_key) if args.service else None)
    progress = not args.quiet
    if not evaluate:
        table = prompt_file.predictions(saved, rows, prompt_file.answer(saved, service, rows, True, args.batch_size,
                                                                        progress))
        prompt_file.write_csv(table, args.out or sys.stdout)
        if args.out:
            print(f"{len(table)} answers written to {args.out}")
        return 0
    out = prompt_file.evaluate_rows(saved, service, rows, labels, args.batch_size, progress)
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2, default=float))
    for name in ("tuned", "manual"):
        side = out[name]
        f1 = f", F1 {side['test_f1']:.3f}" if "test_f1" in side else ""
        print(f"{side['method']}: accuracy {side['test_accuracy']:.3f}{f1} on {out['rows']} rows")
    print(out["comparison"]["sentence"])
    return 0


def list_tasks() -> None:
    for name, task in TASKS.items():
        print(f"{name:16s} {task.source:8s} {len(task.classes)} classes  {task.description}")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "tasks":
        list_tasks()
        return 0
    if args.command == "serve":
        return serve(args)
    if args.command in ("predict", "evaluate"):
        try:
            return answer(args)
        except (ValueError, OSError, RuntimeError, KeyError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    if args.command == "grid":
        try:
            return grid(args)
        except (ValueError, OSError, RuntimeError, KeyError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    try:
        result = run(args)
        text = to_json(result, args.out)
    except (ValueError, OSError, RuntimeError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.out:
        summary = {k: result[k] for k in ("task", "method", "seed", "test_accuracy", "calls") if k in result}
        print(json.dumps(summary))
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
