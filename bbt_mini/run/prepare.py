"""Glue for chapters and the command line: a task, a model and a seed become a ready service.

:func:`prepare` loads the model (once per process), draws the k-shot split, builds the
black box (or connects to a remote one) and encodes the train, dev and test examples once,
into a :class:`bbt_mini.methods.experiment.Setup`.
"""
from __future__ import annotations

from ..core.profiles import Profile, get_profile
from ..data.schema import Task
from ..data.splits import kshot_split
from ..data.tasks import get_task
from ..lm.encoding import Batch
from ..lm.loading import load_model
from ..lm.models import LanguageModel
from ..methods.experiment import Setup, texts_for
from ..service.blackbox import BlackBox, model_behind
from ..service.remote import remote_service


def prepare(task: str | Task = "rotten_tomatoes", model: str | LanguageModel = "smollm2", seed: int = 1,
            profile: str | Profile | None = None, variant: str | None = None, placement: str = "prepend",
            k: int | None = None, test_size: int | None | str = "profile", loss: str = "ce",
            device=None, dtype=None, service: BlackBox | None = None, api_key: str | None = None) -> Setup:
    """Load, split and encode. ``k`` and ``test_size`` default to the profile's values.

    ``service``: an in-process black box to reuse, or a remote one (:mod:`bbt_mini.service.remote`): its
    URL (``"http://127.0.0.1:8011/v1"``; the key: ``api_key``, else ``$BBT_API_KEY``) or a ``RemoteService``."""
    profile = get_profile(profile)
    task = get_task(task) if isinstance(task, str) else task
    remote = service is not None and not isinstance(service, BlackBox)  # a URL or a RemoteService
    if remote:  # the model stays on the server; the client holds its tokenizer and embedding table
        service = remote_service(service, task.verbalizer("causal", variant).words, model, loss, dtype, api_key)
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
