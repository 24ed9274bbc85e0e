"""The data model of a task: its examples, its template and label words, and a k-shot split.

:class:`Task` holds a classification task's classes, its data loader and its verbalizers
(a template and one label word per class for each model kind); :class:`Split` is the
k-shot train/dev/test split a run uses. The registered tasks are :mod:`bbt_mini.data.tasks`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

Example = dict  # {"text": ..., (more text fields), "label": int}
STRENGTH_NAMES = ("strong", "weak")  # variant names that stand for a task's strong and weak manual prompt


@dataclass(frozen=True)
class Verbalizer:
    """A template and one label word per class, for one kind of model."""

    template: str
    words: tuple[str, ...]

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(re.findall(r"{(\w+)}", self.template))


@dataclass(frozen=True)
class Task:
    """A classification task: its classes, its data loader and its verbalizers.

    ``verbalizers`` maps a name to a :class:`Verbalizer`. Names start with the model kind
    (``masked`` or ``causal``); ``masked`` and ``causal`` are the defaults, variants such as
    ``causal-paper`` are alternatives a chapter compares. ``strengths`` names, for the offline
    model, the variant whose manual prompt is ``strong`` and the one whose prompt is ``weak``
    (measured on a 100-sentence test set, see :data:`bbt_mini.data.tasks.STRENGTHS`):
    ``variant="weak"`` selects it.
    """

    name: str
    classes: tuple[str, ...]
    verbalizers: dict
    loader: Callable[[], dict]  # -> {"train": [Example], "test": [Example]} (or "pool")
    metric: str = "accuracy"  # "accuracy" or "f1" (MRPC, as the papers report)
    source: str = "offline"  # "offline", "hub" or "csv"
    description: str = ""
    test_pool: int = 0  # offline tasks with one split: examples held out, once, as the test set
    strengths: dict = field(default_factory=dict)  # "strong"/"weak" -> the variant (None: the default)

    def verbalizer(self, kind: str, variant: str | None = None) -> Verbalizer:
        """The template and label words for a model kind (``masked``/``causal``) and an optional variant
        (``"strong"`` and ``"weak"`` name the variants of :attr:`strengths`)."""
        if variant in STRENGTH_NAMES:
            if variant not in self.strengths:
                raise ValueError(f"task {self.name!r} names no {variant} template; "
                                 f"its variants: {sorted(self.verbalizers)}")
            variant = self.strengths[variant]
        key = kind if variant in (None, "", "default") else f"{kind}-{variant}"
        if key not in self.verbalizers:
            raise ValueError(f"task {self.name!r} has no verbalizer {key!r}; it has {sorted(self.verbalizers)}")
        return self.verbalizers[key]

    def format(self, example: Example, verbalizer: Verbalizer, mask_token: str | None = None) -> str:
        """The example's text in the template (``<mask>`` replaced by the tokenizer's mask token)."""
        missing = [f for f in verbalizer.fields if f not in example]
        if missing:
            raise KeyError(f"example lacks field(s) {missing} that the template {verbalizer.template!r} names")
        text = verbalizer.template.format(**{f: example[f] for f in verbalizer.fields})
        if "<mask>" in text and mask_token is not None:
            text = text.replace("<mask>", mask_token)
        return text


@dataclass
class Split:
    """A k-shot split: ``train`` and ``dev`` with k examples per class each, and ``test``."""

    train: list
    dev: list
    test: list
    seed: int
    k: int
    info: dict = field(default_factory=dict)
