"""Command line: ``python -m bbt_mini run --task rotten_tomatoes --method bbt --seed 1 --out r.json``.

``python -m bbt_mini tasks`` lists the tasks; ``python -m bbt_mini.bench`` times the black box.
"""
from __future__ import annotations

import argparse
import json
import sys

from .profiles import DTYPES, PROFILES
from .runs import METHODS



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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bbt_mini", description="Black-Box Tuning of language models.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("tasks", help="list the registered tasks")
    run = sub.add_parser("run", help="run one method on one task and seed; print or write JSON")
    run.add_argument("--task", help="a registered task (see `tasks`); or use --csv")
    run.add_argument("--csv", help="your own data: a CSV file with a `label` column and the template's columns")
    run.add_argument("--template", help='with --csv: e.g. "Review: {text} It was" ({column} names a CSV column)')
    run.add_argument("--labels", help='with --csv: e.g. "negative:bad,positive:great" (label value:label word)')
    run.add_argument("--method", default="bbt", choices=METHODS)
    run.add_argument("--model", default="smollm2", help="smollm2 (offline), a hub name or a local folder")
    run.add_argument("--seed", type=int, default=1, help="seed of the split and the search (from 1)")
    run.add_argument("--profile", choices=sorted(PROFILES), help="experiment size (default: $BBT_PROFILE, or "
                     "colab on a GPU and small on a CPU)")
    run.add_argument("--budget", type=int, help="API calls for tuning (default: the profile's)")
    run.add_argument("--variant", help="template variant, e.g. `paper` for rotten_tomatoes")
    run.add_argument("--placement", choices=("prepend", "between"), default="prepend",
                     help="where the soft prompt goes: before the text, or between text and question (causal LMs)")
    run.add_argument("--prompt-length", type=int, help="L")
    run.add_argument("--intrinsic-dim", type=int, help="d")
    run.add_argument("--popsize", type=int)
    run.add_argument("--sigma0", type=float)
    run.add_argument("--alpha", type=float)
    run.add_argument("--sampler", choices=("uniform", "normal", "normal-v1"))
    run.add_argument("--optimizer", choices=("cma", "sep-cma", "mini-cma", "random"))
    run.add_argument("--loss", choices=("ce", "hinge", "neg_acc"))
    run.add_argument("--bound", type=float, help="box on z (the ICML-era code: 5)")
    run.add_argument("--eval-every", type=int)
    run.add_argument("--k", type=int, help="examples per class for train (and as many for dev)")
    run.add_argument("--test-size", type=int, help="test examples (default: the profile's)")
    run.add_argument("--steps", type=int, help="prompt_tuning / feature_mlp: optimisation steps")
    run.add_argument("--checkpoint", help="file to save the run's state to, every dev check")
    run.add_argument("--resume", action="store_true", help="continue from --checkpoint if it exists")
    run.add_argument("--device", help="cpu, cuda, cuda:1... (default: CUDA if present)")
    run.add_argument("--dtype", choices=sorted(DTYPES), help="(default: bf16 where it is native, fp16 on "
                     "older GPUs, else float32)")
    run.add_argument("--out", help="write the JSON result here (default: print it)")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def run(args) -> dict:
    from .runs import CONFIG_FIELDS, run as run_method
    from .tasks import csv_task

    if bool(args.task) == bool(args.csv):
        raise ValueError("give exactly one of --task or --csv")
    if args.csv:
        if not (args.template and args.labels):
            raise ValueError("--csv needs --template and --labels")
        from .models import load_model

        kind = load_model(args.model, device=args.device, dtype=args.dtype).kind
        task = csv_task(args.csv, args.template, parse_labels(args.labels), kind=kind)
    else:
        if args.template or args.labels:
            raise ValueError("--template and --labels go with --csv")
        task = args.task
    if args.resume and not args.checkpoint:
        raise ValueError("--resume needs --checkpoint")
    config = {name: getattr(args, name) for name in CONFIG_FIELDS if getattr(args, name, None) is not None}
    method_kw = {"steps": args.steps} if args.steps else {}
    return run_method(args.method, task, args.model, args.seed, args.profile, variant=args.variant,
                      placement=args.placement, k=args.k, test_size=args.test_size or "profile",
                      checkpoint=args.checkpoint, resume=args.resume, progress=not args.quiet, device=args.device,
                      dtype=args.dtype, method_kw=method_kw, **config)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "tasks":
        from .tasks import TASKS

        for name, task in TASKS.items():
            print(f"{name:16s} {task.source:8s} {len(task.classes)} classes  {task.description}")
        return 0
    from .bbt import to_json

    try:
        result = run(args)
    except (ValueError, FileNotFoundError, RuntimeError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    text = to_json(result, args.out)
    if args.out:
        summary = {k: result[k] for k in ("task", "method", "seed", "test_accuracy", "calls") if k in result}
        print(json.dumps(summary))
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
