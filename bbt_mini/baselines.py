"""What black-box tuning is measured against.

Through the black box (no weights needed):

* :func:`manual_prompt`: the task's template and label words, no soft prompt;
* :func:`in_context`: the k-shot training examples written out, with their answers, before
  each test input (Brown et al., 2020). The demonstrations are the same for every input,
  so they go in as a prompt of real token embeddings, whose keys and values the service
  computes once (exactly what feeding them as text computes).

With the weights (what a reader who *can* download the model would do; these cross the
service boundary on purpose and say so):

* :func:`prompt_tuning`: the same soft prompt, trained by gradient descent with Adam
  (Lester et al., 2021);
* :func:`feature_mlp`: a small MLP trained on the frozen model's features at the read-out
  position (the papers' Feature-MLP).
"""
from __future__ import annotations

import resource
import time

import numpy as np
import torch

from .bbt import versions
from .blackbox import Batch, BlackBox
from .experiment import Setup, evaluate, scores, texts_for
from .models import load_model


def _result(setup: Setup, method: str, test: dict, **extra) -> dict:
    out = {"task": setup.task.name, "method": method, "model": setup.lm.name, "seed": setup.seed,
           "profile": setup.profile.name, "test_accuracy": test["accuracy"], **extra, "versions": versions()}
    if setup.task.metric == "f1":
        out["test_f1"] = test["f1"]
    return out


def _shares(service: BlackBox, batch: Batch, prompt=None) -> tuple[dict, list]:
    """Scores of one prompt on ``batch`` and how often each class is predicted."""
    p = np.zeros((1, 0, service.hidden_size), np.float32) if prompt is None else np.asarray(prompt)[None]
    logits = service(p, batch).logits[0]
    pred = logits.argmax(-1)
    return scores(logits, batch.labels), [float(np.mean(pred == c)) for c in range(service.num_classes)]


def manual_prompt(setup: Setup) -> dict:
    """Test scores of the template alone (zero-shot, no soft prompt): 1 API call on the test set."""
    m0 = setup.service.meter.snapshot()
    test, shares = _shares(setup.service, setup.test)
    dev = evaluate(setup.service, setup.dev)
    used = {k: v - m0[k] for k, v in setup.service.meter.snapshot().items()}
    return _result(setup, "manual", test, calls=0, dev_accuracy=dev["accuracy"], predicted_share=shares,
                   tokens=used["tokens"], wall_s=used["wall_s"], meter=used)


def demonstrations(setup: Setup, per_class: int | None = None, seed: int | None = None) -> str:
    """The training examples as demonstrations: each filled template followed by its label word."""
    rng = np.random.default_rng(setup.seed if seed is None else seed)
    examples = setup.split.train
    if per_class is not None:
        chosen = []
        for c in range(len(setup.task.classes)):
            chosen += [ex for ex in examples if ex["label"] == c][:per_class]
        examples = [chosen[i] for i in rng.permutation(len(chosen))]
    words = setup.verbalizer.words
    parts = []
    for ex in examples:
        text = setup.task.format(ex, setup.verbalizer, None)
        word = words[ex["label"]]
        parts.append(text.replace("<mask>", word.strip()) if "<mask>" in text else text + word)
    return "\n\n".join(parts) + "\n\n"


def in_context(setup: Setup, per_class: int | None = None) -> dict:
    """In-context learning: demonstrations from the training set before every test input.

    ``per_class``: demonstrations per class (default: all of the k-shot training set).
    One API call on the test set (with a long prompt: the meter counts its tokens).
    """
    context = demonstrations(setup, per_class)
    ids = setup.lm.tokenizer(context, add_special_tokens=False)["input_ids"]
    prompt = setup.service.token_embeddings(ids)
    m0 = setup.service.meter.snapshot()
    test, shares = _shares(setup.service, setup.test, prompt)
    used = {k: v - m0[k] for k, v in setup.service.meter.snapshot().items()}
    return _result(setup, "icl", test, calls=0, demonstrations=context.count("\n\n"), context_tokens=len(ids),
                   predicted_share=shares, tokens=used["tokens"], wall_s=used["wall_s"], meter=used)


# ------------------------------------------------------------------ with the weights


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _whitebox(setup: Setup) -> tuple[BlackBox, Batch, Batch, Batch]:
    """A float32 copy of the model with the same read-out, for gradients; re-encoded batches."""
    lm = load_model(setup.lm.name, device=setup.lm.device, dtype=torch.float32)
    service = BlackBox(lm, setup.verbalizer.words, cache_prompt=False)
    enc = lambda exs: service.encode(texts_for(setup.task, setup.verbalizer, exs, lm, setup.placement),
                                     [e["label"] for e in exs])
    return service, enc(setup.split.train), enc(setup.split.dev), enc(setup.split.test)


def prompt_tuning(setup: Setup, prompt_length: int = 10, steps: int = 30, lr: float = 1e-2, eval_every: int = 5,
                  seed: int | None = None, init: str = "tokens", progress: bool = True) -> dict:
    """Gradient prompt tuning: Adam on the soft prompt, full-batch cross-entropy on train.

    The model is frozen (its weights are checked unchanged); only the ``L x hidden`` prompt
    learns. The best-dev prompt is tested. Cost: one forward and one backward pass over
    the training set per step.
    """
    from tqdm.auto import tqdm

    service, train, dev, test = _whitebox(setup)
    lm = service.lm
    torch.manual_seed(setup.seed if seed is None else seed)
    if init == "tokens":
        start = torch.tensor(service.token_embeddings(range(1000, 1000 + prompt_length)))
    else:
        start = torch.zeros(prompt_length, lm.hidden_size)
    prompt = torch.nn.Parameter(start.clone())
    opt = torch.optim.Adam([prompt], lr=lr)
    labels = torch.as_tensor(train.labels)
    fingerprint = lambda: [float(p.double().sum()) for p in lm.model.parameters()]
    before = fingerprint()
    rss0, t0 = _peak_rss_bytes(), time.perf_counter()
    curve, best = [], (-1.0, prompt.detach().clone(), 0)
    for step in tqdm(range(1, steps + 1), desc="prompt tuning", disable=not progress, mininterval=5.0):
        logits = service._logits(prompt[None], train)[0]  # white-box: the same forward, with gradients
        loss = torch.nn.functional.cross_entropy(logits, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        entry = {"step": step, "train_loss": loss.item()}
        if step % eval_every == 0 or step == steps:
            with torch.no_grad():
                dev_acc = evaluate(service, dev, prompt.detach().numpy())["accuracy"]
            entry["dev_acc"] = dev_acc
            if dev_acc > best[0]:
                best = (dev_acc, prompt.detach().clone(), step)
        curve.append(entry)
    wall = time.perf_counter() - t0
    unchanged = fingerprint() == before
    test_scores = evaluate(service, test, best[1].numpy())
    return _result(setup, "prompt_tuning", test_scores, steps=steps, lr=lr, prompt_length=prompt_length,
                   best_dev_acc=best[0], best_dev_step=best[2], curve=curve, wall_s=wall,
                   passes={"forward_examples": steps * len(train), "backward_examples": steps * len(train)},
                   peak_rss_growth_bytes=_peak_rss_bytes() - rss0, weights_unchanged=unchanged,
                   _prompt=best[1].numpy())


def features(service: BlackBox, batch: Batch) -> torch.Tensor:
    """The frozen model's final hidden state at the read-out position of each example (B, hidden)."""
    lm = service.lm
    out = torch.empty(len(batch), lm.hidden_size)
    with torch.inference_mode():
        for idx in service._groups(batch, np.arange(len(batch))):
            ids, mask = service._pad([batch.head + batch.pieces[i] for i in idx])
            h = lm.body(input_ids=ids, attention_mask=mask).last_hidden_state
            pos = torch.as_tensor(batch.readout[idx] + len(batch.head))
            out[torch.as_tensor(idx)] = h[torch.arange(len(idx)), pos].float().cpu()
    return out


def feature_mlp(setup: Setup, hidden: int = 256, steps: int = 300, lr: float = 1e-3, weight_decay: float = 1e-2,
                eval_every: int = 25, seed: int | None = None) -> dict:
    """Feature-MLP: frozen features at the read-out position, a 2-layer MLP trained with Adam.

    Cost: one forward pass per example to extract features (train, dev, test), then a tiny
    MLP. The best-dev MLP is tested.
    """
    service = setup.service
    t0 = time.perf_counter()
    X = {name: features(service, b) for name, b in (("train", setup.train), ("dev", setup.dev), ("test", setup.test))}
    torch.manual_seed(setup.seed if seed is None else seed)
    mean, std = X["train"].mean(0), X["train"].std(0) + 1e-6
    norm = {k: (v - mean) / std for k, v in X.items()}
    mlp = torch.nn.Sequential(torch.nn.Linear(service.hidden_size, hidden), torch.nn.ReLU(),
                              torch.nn.Linear(hidden, service.num_classes))
    opt = torch.optim.AdamW(mlp.parameters(), lr=lr, weight_decay=weight_decay)
    y = torch.as_tensor(setup.train.labels)
    best = (-1.0, None, 0)
    for step in range(1, steps + 1):
        loss = torch.nn.functional.cross_entropy(mlp(norm["train"]), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % eval_every == 0:
            with torch.no_grad():
                acc = scores(mlp(norm["dev"]).numpy(), setup.dev.labels)["accuracy"]
            if acc > best[0]:
                best = (acc, {k: v.clone() for k, v in mlp.state_dict().items()}, step)
    mlp.load_state_dict(best[1])
    with torch.no_grad():
        test = scores(mlp(norm["test"]).numpy(), setup.test.labels)
    n = len(setup.train) + len(setup.dev) + len(setup.test)
    return _result(setup, "feature_mlp", test, best_dev_acc=best[0], best_dev_step=best[2], steps=steps,
                   wall_s=time.perf_counter() - t0, passes={"forward_examples": n, "backward_examples": 0})
