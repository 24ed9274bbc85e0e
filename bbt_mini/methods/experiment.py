"""One run's ingredients (:class:`Setup`) and how a prompt is scored on them (:func:`evaluate`).

What the tuning loop and the baselines work on: the service and the encoded examples.
:func:`bbt_mini.run.prepare.prepare` makes a :class:`Setup` from a task, a model and a seed
(it loads the model: orchestration, a layer above).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.metrics import accuracy, f1
from ..core.profiles import Profile
from ..data.schema import Split, Task, Verbalizer
from ..lm.encoding import Batch
from ..service.blackbox import BlackBox

PLACEMENTS = ("prepend", "between")


@dataclass
class Setup:
    """Everything one run needs: the service and the encoded examples (no model: it stays in the service)."""

    task: Task
    verbalizer: Verbalizer
    split: Split
    service: BlackBox
    train: Batch
    dev: Batch
    test: Batch
    profile: Profile
    seed: int
    placement: str


def texts_for(task: Task, verbalizer: Verbalizer, examples: list, service, placement: str = "prepend"):
    """The examples as the service takes them: strings (prompt first) or ``(before, after)`` pairs.

    ``service``: the black box (or anything with its ``mask_token``), whose mask token the
    template gets."""
    if placement not in PLACEMENTS:
        raise ValueError(f"unknown placement {placement!r}; choose one of {PLACEMENTS}")
    mask = service.mask_token
    if placement == "prepend":
        return [task.format(ex, verbalizer, mask) for ex in examples]
    # "between": the prompt goes right after the last text field, before the question.
    tpl = verbalizer.template
    field = "{" + verbalizer.fields[-1] + "}"
    last = tpl.rindex(field) + len(field)  # the end of the last text field's placeholder
    head, tail = Verbalizer(tpl[:last], verbalizer.words), tpl[last:]
    return [(task.format(ex, head, mask), tail) for ex in examples]


def scores(logits: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy, (binary tasks) F1 and the answered class of each example, from one candidate's logits (B, C)."""
    out = {"accuracy": float(accuracy(logits[None], labels)[0]), "answers": np.asarray(logits).argmax(-1).tolist()}
    if logits.shape[-1] == 2:
        out["f1"] = float(f1(logits[None], labels)[0])
    return out


def no_prompt(service: BlackBox) -> np.ndarray:
    """The empty prompt (L = 0): the manual template alone."""
    return np.zeros((1, 0, service.hidden_size), np.float32)


def evaluate(service: BlackBox, batch: Batch, prompt: np.ndarray | None = None, base=None) -> dict:
    """Scores of one prompt (L, H), a deep prompt (layers, L, H) or none, on ``batch``; ``base``: the
    token ids of the prompt's ``p0`` (:meth:`bbt_mini.service.blackbox.BlackBox.__call__`)."""
    if prompt is None:
        prompt, base = no_prompt(service), None
    else:
        prompt = np.asarray(prompt)[None]
    r = service(prompt, batch, base=base)
    return {**scores(r.logits[0], batch.labels), "loss": float(r.loss[0])}
