"""The papers' headline table, and a renderer that puts new runs beside it.

Numbers: BBTv2 paper (Sun et al., 2022b), Table 3: RoBERTa-large, 16 shots per class, test
accuracy (MRPC: F1), averaged over three seeds. The BBT row is as reported there; the ICML
BBT paper itself reports DBPedia 87.80 (average 73.01).
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

PAPER_TASKS = ("sst2", "yelp_polarity", "ag_news", "dbpedia", "mrpc", "snli", "rte")
PAPER_TABLE = {
    "model tuning": (85.39, 91.82, 86.36, 97.98, 77.35, 54.64, 58.60),
    "prompt tuning": (68.23, 61.02, 84.81, 87.75, 51.61, 36.13, 54.69),
    "P-Tuning v2": (64.33, 92.63, 83.46, 97.05, 68.14, 36.89, 50.78),
    "Adapter": (83.91, 90.99, 86.01, 97.99, 69.20, 57.46, 48.62),
    "LoRA": (88.49, 90.21, 87.09, 97.86, 72.14, 61.03, 49.22),
    "BitFit": (81.19, 88.63, 86.83, 94.42, 66.26, 53.42, 52.59),
    "manual prompt": (79.82, 89.65, 76.96, 41.33, 67.40, 31.11, 51.62),
    "in-context learning": (79.79, 85.38, 62.21, 34.83, 45.81, 47.11, 60.36),
    "Feature-MLP": (64.80, 79.20, 70.77, 87.78, 68.40, 42.01, 53.43),
    "Feature-BiLSTM": (65.95, 74.68, 77.28, 90.37, 71.55, 46.02, 52.17),
    "BBT": (89.56, 91.50, 81.51, 79.99, 61.56, 46.58, 52.59),
    "BBTv2": (90.33, 92.86, 85.28, 93.64, 77.01, 57.27, 56.68),
}
METHOD_NAMES = {"manual": "manual prompt", "calibrated": "contextual calibration", "icl": "in-context learning",
                "feature_mlp": "Feature-MLP",
                "prompt_tuning": "prompt tuning", "bbt": "BBT", "bbtv2": "BBTv2"}


def paper_table() -> str:
    """The papers' table as Markdown (the last column is the average)."""
    head = "| method | " + " | ".join(PAPER_TASKS) + " | avg |\n|---|" + "---|" * (len(PAPER_TASKS) + 1) + "\n"
    rows = [f"| {m} | " + " | ".join(f"{v:.2f}" for v in vals) + f" | {np.mean(vals):.2f} |"
            for m, vals in PAPER_TABLE.items()]
    return head + "\n".join(rows)


def score(result: dict) -> float:
    """A result's headline number in percent: F1 where the task reports it, else accuracy."""
    return 100 * result.get("test_f1", result["test_accuracy"])


def method_label(result: dict) -> str:
    """A result's row name: the method as the papers name it, and its optimiser if not CMA-ES.

    BBT and BBTv2 results name a non-CMA optimiser in their method (``bbtv2-sep-cma``, see
    :func:`bbt_mini.methods.bbt.method_name`), so runs with different optimisers never share a row.
    """
    method = result["method"]
    optimizer = (result.get("config") or {}).get("optimizer", "cma")
    base = method.removesuffix(f"-{optimizer}") if optimizer != "cma" else method
    name = METHOD_NAMES.get(base, base)
    return name if optimizer == "cma" or base not in ("bbt", "bbtv2") else f"{name} ({optimizer})"


def results_table(results: list, tasks: tuple | None = None) -> str:
    """Markdown table of mean +- std over seeds for each (method, task) in ``results``."""
    cells = defaultdict(list)
    for r in results:
        cells[(method_label(r), r["task"])].append(score(r))
    tasks = tasks or tuple(dict.fromkeys(r["task"] for r in results))
    methods = list(dict.fromkeys(m for m, _ in cells))
    out = ["| method | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    for m in methods:
        row = []
        for t in tasks:
            v = cells.get((m, t))
            row.append("-" if not v else f"{np.mean(v):.2f} ± {np.std(v):.2f} (n={len(v)})")
        out.append(f"| {m} | " + " | ".join(row) + " |")
    return "\n".join(out)
