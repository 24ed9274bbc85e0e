"""Glue for chapters and the command line: a task, a model and a seed become a ready service.

:func:`prepare` loads the model (once per process), draws the k-shot split, builds the
black box and encodes the train, dev and test examples once.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..service.blackbox import Batch, BlackBox, model_behind
from ..core.metrics import accuracy, f1
from ..lm.models import LanguageModel, load_model
from ..core.profiles import Profile, get_profile
from ..data.tasks import Split, Task, Verbalizer, get_task, kshot_split

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
    test_at: tuple = ()  # budgets at which a tuning run also tests its would-be result (bbt_mini.methods.tuning)


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
    last = tpl.rindex("{" + verbalizer.fields[-1] + "}") + len(verbalizer.fields[-1]) + 2
    head, tail = Verbalizer(tpl[:last], verbalizer.words), tpl[last:]
    return [(task.format(ex, head, mask), tail) for ex in examples]


def prepare(task: str | Task = "rotten_tomatoes", model: str | LanguageModel = "smollm2", seed: int = 1,
            profile: str | Profile | None = None, variant: str | None = None, placement: str = "prepend",
            k: int | None = None, test_size: int | None | str = "profile", loss: str = "ce",
            device=None, dtype=None, service: BlackBox | None = None) -> Setup:
    """Load, split and encode. ``k`` and ``test_size`` default to the profile's values.

    ``service``: an in-process black box to reuse, or a remote one (:mod:`bbt_mini.service.remote`): its
    URL (``"http://127.0.0.1:8011/v1"``; the key from ``$BBT_API_KEY``) or a ``RemoteService``."""
    profile = profile if isinstance(profile, Profile) else get_profile(profile)
    task = get_task(task) if isinstance(task, str) else task
    remote = service is not None and not isinstance(service, BlackBox)  # a URL or a RemoteService
    if remote:  # the model stays on the server; the client holds its tokenizer and embedding table
        from ..service.remote import remote_service

        service = remote_service(service, task.verbalizer("causal", variant).words, model, loss, dtype)
    else:
        lm = model if isinstance(model, LanguageModel) else load_model(model, device=device, dtype=dtype)
    verbalizer = task.verbalizer(service.kind if remote else lm.kind, variant)
    split = kshot_split(task, k or profile.k_shot, seed, profile.test_size if test_size == "profile" else test_size)
    if not remote and (service is None or model_behind(service) is not lm or service.label_words != verbalizer.words):
        service = BlackBox(lm, verbalizer.words, loss=loss)

    def encode(examples: list) -> Batch:
        return service.encode(texts_for(task, verbalizer, examples, service, placement), [e["label"] for e in examples])

    return Setup(task, verbalizer, split, service, encode(split.train), encode(split.dev), encode(split.test),
                 profile, seed, placement)


def scores(logits: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy, (binary tasks) F1 and the answered class of each example, from one candidate's logits (B, C)."""
    out = {"accuracy": float(accuracy(logits[None], labels)[0]), "answers": np.asarray(logits).argmax(-1).tolist()}
    if logits.shape[-1] == 2:
        out["f1"] = float(f1(logits[None], labels)[0])
    return out


def no_prompt(service: BlackBox) -> np.ndarray:
    """The empty prompt (L = 0): the manual template alone."""
    return np.zeros((1, 0, service.hidden_size), np.float32)


def evaluate(service: BlackBox, batch: Batch, prompt: np.ndarray | None = None) -> dict:
    """Scores of one prompt (L, H), a deep prompt (layers, L, H) or none, on ``batch``."""
    prompt = no_prompt(service) if prompt is None else np.asarray(prompt)[None]
    r = service(prompt, batch)
    return {**scores(r.logits[0], batch.labels), "loss": float(r.loss[0])}
