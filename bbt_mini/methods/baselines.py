"""What black-box tuning is measured against.

Through the black box (no weights needed):

* :func:`manual_prompt`: the task's template and label words, no soft prompt;
* :func:`calibrated_prompt`: the same, with contextual calibration (Zhao et al., 2021): the
  label words' probabilities on content-free inputs (``"N/A"``...) put in the template are
  the template's bias, divided out of every test answer; no tuning, no training data;
* :func:`in_context`: the k-shot training examples written out, with their answers, before
  each test input (Brown et al., 2020). The demonstrations are the same for every input,
  so they go in as a prompt of real token embeddings, whose keys and values the service
  computes once (exactly what feeding them as text computes). They always precede the
  whole test input, whatever the setup's placement, and stay within the model's length limit.

With the weights (what a reader who *can* download the model would do; these cross the
service boundary on purpose, through :class:`bbt_mini.service.whitebox.WhiteBox`):

* :func:`prompt_tuning`: the same soft prompt, trained by gradient descent with Adam
  (Lester et al., 2021);
* :func:`feature_mlp`: a small MLP trained on the frozen model's features at the read-out
  position (the papers' Feature-MLP);
* :func:`feature_bilstm`: a BiLSTM over the frozen model's features at every token (the papers'
  Feature-BiLSTM).

The methods that train inside the model (model tuning, BitFit, LoRA, P-Tuning v2, adapters) are
:mod:`bbt_mini.methods.finetune`.
"""
from __future__ import annotations

import hashlib
import time
import warnings

import numpy as np
import torch
from tqdm.auto import tqdm

from ..core.metrics import log_softmax, softmax
from ..core.projection import P0_FIRST_TOKEN, first_token_ids
from ..core.results import result, used_since
from ..core.settings import peak_memory
from ..lm.encoding import Batch
from ..service.blackbox import BlackBox
from ..service.whitebox import WhiteBox
from .experiment import Setup, evaluate, no_prompt, scores, texts_for

DEMO_SEPARATOR = "\n\n"  # after each demonstration


def _result(setup: Setup, method: str, test: dict, before: dict, **extra) -> dict:
    """The common result schema (:func:`bbt_mini.core.results.result`); ``before``: the meter when the run began.

    The gradient baselines work on the weights (:class:`~bbt_mini.service.whitebox.WhiteBox`), not through
    the service, so its meter shows none of their passes: they report them as ``passes``.
    """
    return result(setup, method, test, used_since(setup.service.meter, before), **extra)


def _shares(service: BlackBox, batch: Batch, prompt=None) -> tuple[dict, list]:
    """Scores of one prompt on ``batch`` and how often each class is predicted."""
    p = no_prompt(service) if prompt is None else np.asarray(prompt)[None]
    logits = service(p, batch).logits[0]
    pred = logits.argmax(-1)
    return scores(logits, batch.labels), [float(np.mean(pred == c)) for c in range(service.num_classes)]


def manual_prompt(setup: Setup) -> dict:
    """Test scores of the template alone (zero-shot, no soft prompt): 1 API call on the test set."""
    m0 = setup.service.meter.snapshot()
    test, shares = _shares(setup.service, setup.test)
    dev = evaluate(setup.service, setup.dev)
    return _result(setup, "manual", test, m0, calls=0, dev_accuracy=dev["accuracy"], predicted_share=shares)


CONTENT_FREE = ("N/A", "", "[MASK]")  # Zhao et al. (2021)'s content-free inputs, averaged


def label_bias(setup: Setup, content_free: tuple[str, ...] = CONTENT_FREE) -> np.ndarray:
    """The template's prior over the label words: their probabilities with no content (C,).

    Each content-free string fills every text field of the template; the softmax over the
    label words is averaged over the strings and renormalised (Zhao et al., 2021, Sec. 5).
    One API call, on ``len(content_free)`` examples."""
    if not content_free:
        raise ValueError("contextual calibration needs at least one content-free input, e.g. 'N/A'")
    fields = setup.verbalizer.fields
    examples = [{**{f: text for f in fields}, "label": 0} for text in content_free]
    batch = setup.service.encode(texts_for(setup.task, setup.verbalizer, examples, setup.service, setup.placement),
                                 [0] * len(examples))
    logits = setup.service(no_prompt(setup.service), batch).logits[0].astype(np.float64)
    p = softmax(logits).mean(0)
    return p / p.sum()


def calibrate(logits: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Calibrated logits: ``log softmax(logits) - log bias``, i.e. each answer's probabilities
    divided by the template's prior and renormalised (Zhao et al.'s ``W = diag(p_cf)^-1, b = 0``)."""
    logits = np.asarray(logits, dtype=np.float64)
    bias = np.asarray(bias, dtype=np.float64)
    if bias.shape != logits.shape[-1:] or np.any(bias <= 0):
        raise ValueError(f"the bias must be {logits.shape[-1]} positive probabilities, got {bias}")
    return log_softmax(logits) - np.log(bias)


def calibrated_prompt(setup: Setup, content_free: tuple[str, ...] = CONTENT_FREE) -> dict:
    """The manual prompt with contextual calibration (Zhao et al., 2021): its test answers,
    each divided by the label-word probabilities measured on content-free inputs.

    No tuning and no training data: one API call on the content-free inputs and one on the
    test set (as :func:`manual_prompt`). The result records the bias (``label_bias``) and how
    often each class is predicted before (``predicted_share_uncalibrated``) and after."""
    service = setup.service
    m0 = service.meter.snapshot()
    bias = label_bias(setup, tuple(content_free))
    raw = service(no_prompt(service), setup.test).logits[0]
    logits = calibrate(raw, bias)
    pred, raw_pred = logits.argmax(-1), raw.argmax(-1)
    classes = range(service.num_classes)
    return _result(setup, "calibrated", scores(logits, setup.test.labels), m0, calls=0,
                   content_free=list(content_free), label_bias=bias.tolist(),
                   predicted_share=[float(np.mean(pred == c)) for c in classes],
                   predicted_share_uncalibrated=[float(np.mean(raw_pred == c)) for c in classes])


def demonstrations(setup: Setup, per_class: int | None = None, seed: int | None = None) -> str:
    """The training examples as demonstrations: each filled template followed by its label word."""
    rng = np.random.default_rng(setup.seed if seed is None else seed)
    examples = setup.split.train
    if per_class is not None:
        most = int(np.bincount([ex["label"] for ex in examples], minlength=len(setup.task.classes)).min())
        if not 1 <= per_class <= most:
            raise ValueError(f"per_class must lie in 1..{most} (the k-shot training set's smallest class); "
                             f"got {per_class}")
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
    return DEMO_SEPARATOR.join(parts) + DEMO_SEPARATOR


def _context_ids(setup: Setup, per_class: int | None) -> tuple[str, list]:
    context = demonstrations(setup, per_class)
    return context, setup.service.token_ids(context)


def _most_per_class(setup: Setup, room: int) -> int:
    """The most demonstrations per class whose context fits in ``room`` tokens (0: not even one)."""
    for n in range(int(np.bincount(setup.train.labels, minlength=setup.service.num_classes).min()), 0, -1):
        if len(_context_ids(setup, n)[1]) <= room:
            return n
    return 0


def in_context(setup: Setup, per_class: int | None = None) -> dict:
    """In-context learning: demonstrations from the training set before every test input.

    ``per_class``: demonstrations per class (default: all of the k-shot training set, or, if
    they overflow the model's length limit with the longest test input, the most per class
    that fit, with a warning). An explicit ``per_class`` that does not fit is refused.
    One API call on the test set (with a long prompt: the meter counts its tokens).
    """
    service = setup.service
    test = setup.test
    if setup.placement != "prepend":  # the demonstrations go before the whole test input
        test = service.encode(texts_for(setup.task, setup.verbalizer, setup.split.test, service, "prepend"),
                              [e["label"] for e in setup.split.test])
    limit = service.max_length
    room = None if limit is None else limit - len(test.head) - int(test.lengths().max())
    context, ids = _context_ids(setup, per_class)
    if room is not None and len(ids) > room:
        most = _most_per_class(setup, room)
        shown = f"{context.count(DEMO_SEPARATOR)} demonstrations ({len(ids)} tokens)"
        if per_class is not None or not most:
            fit = f"at most {most} per class fit" if most else "not even one per class fits"
            raise ValueError(f"{shown} overflow {service.model_name}: with the longest test input there is room "
                             f"for {room} (of {limit}); {fit}")
        warnings.warn(f"all {shown} overflow {service.model_name}'s {limit} tokens; using {most} per class",
                      stacklevel=2)
        per_class = most
        context, ids = _context_ids(setup, per_class)
    prompt = service.token_embeddings(ids)
    m0 = service.meter.snapshot()
    test_scores, shares = _shares(service, test, prompt)
    return _result(setup, "icl", test_scores, m0, calls=0, demonstrations=context.count(DEMO_SEPARATOR),
                   per_class=per_class, context_tokens=len(ids), predicted_share=shares)


# ------------------------------------------------------------------ with the weights


def _fingerprint(model: torch.nn.Module) -> str:
    """A hash of every parameter's bytes: any change to any weight changes it."""
    h = hashlib.sha256()
    for p in model.parameters():
        h.update(p.detach().contiguous().view(torch.uint8).cpu().numpy().tobytes())
    return h.hexdigest()


def _whitebox_batches(setup: Setup, box: WhiteBox) -> tuple[Batch, Batch, Batch]:
    """The train, dev and test examples encoded for ``box`` (a copy of the model may differ in dtype only)."""
    def enc(examples: list) -> Batch:
        return box.encode(texts_for(setup.task, setup.verbalizer, examples, box, setup.placement),
                          [e["label"] for e in examples])

    return enc(setup.split.train), enc(setup.split.dev), enc(setup.split.test)


def prompt_tuning(setup: Setup, prompt_length: int = 10, steps: int = 30, lr: float = 1e-2, eval_every: int = 5,
                  seed: int | None = None, init: str = "tokens", progress: bool = True) -> dict:
    """Gradient prompt tuning: Adam on the soft prompt, full-batch cross-entropy on train.

    The model is frozen (its weights are checked unchanged, byte for byte); only the
    ``L x hidden`` prompt learns, on a float32 copy of the model. The best-dev prompt is tested. Cost: one forward
    and one backward pass over the training set per step.
    """
    if init not in ("tokens", "zeros"):
        raise ValueError(f"unknown init {init!r}; choose 'tokens' or 'zeros'")
    box = WhiteBox.behind(setup.service, dtype=torch.float32)
    train, dev, test = _whitebox_batches(setup, box)
    torch.manual_seed(setup.seed if seed is None else seed)
    if init == "tokens":
        vocab = box.lm.model.get_input_embeddings().num_embeddings
        ids = torch.tensor(first_token_ids(prompt_length, vocab, P0_FIRST_TOKEN))  # BBT's p0 tokens
        with torch.no_grad():
            start = box.lm.embed(ids).float().cpu()
    else:
        start = torch.zeros(prompt_length, box.hidden_size)
    prompt = torch.nn.Parameter(start.clone())
    opt = torch.optim.Adam([prompt], lr=lr)
    labels = torch.as_tensor(train.labels)

    def test_scores(batch: Batch, p: torch.Tensor) -> dict:
        with torch.inference_mode():
            return scores(box.logits(p[None], batch)[0].float().cpu().numpy(), batch.labels)

    before = _fingerprint(box.lm.model)
    rss0, t0, m0 = peak_memory(), time.perf_counter(), setup.service.meter.snapshot()
    curve, best = [], (-1.0, prompt.detach().clone(), 0)
    for step in tqdm(range(1, steps + 1), desc="prompt tuning", disable=not progress, mininterval=5.0):
        logits = box.logits(prompt[None], train)[0]
        loss = torch.nn.functional.cross_entropy(logits, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        entry = {"step": step, "train_loss": loss.item()}
        if step % eval_every == 0 or step == steps:
            dev_acc = test_scores(dev, prompt.detach())["accuracy"]
            entry["dev_acc"] = dev_acc
            if dev_acc > best[0]:
                best = (dev_acc, prompt.detach().clone(), step)
        curve.append(entry)
    wall = time.perf_counter() - t0
    unchanged = _fingerprint(box.lm.model) == before
    return _result(setup, "prompt_tuning", test_scores(test, best[1]), m0, steps=steps, lr=lr,
                   prompt_length=prompt_length, best_dev_acc=best[0], best_dev_step=best[2], curve=curve, wall_s=wall,
                   passes={"forward_examples": steps * len(train), "backward_examples": steps * len(train)},
                   peak_rss_growth_bytes=peak_memory() - rss0, weights_unchanged=unchanged,
                   trainable_parameters=prompt.numel(), _prompt=best[1].numpy())


def feature_mlp(setup: Setup, hidden: int = 256, steps: int = 300, lr: float = 1e-3, weight_decay: float = 1e-2,
                eval_every: int = 25, seed: int | None = None) -> dict:
    """Feature-MLP: frozen features at the read-out position, a 2-layer MLP trained with Adam.

    Cost: one forward pass per example to extract features (train, dev, test), then a tiny
    MLP. The best-dev MLP is tested.
    """
    box = WhiteBox.behind(setup.service)
    t0, m0 = time.perf_counter(), setup.service.meter.snapshot()
    X = {name: box.features(b) for name, b in (("train", setup.train), ("dev", setup.dev), ("test", setup.test))}
    torch.manual_seed(setup.seed if seed is None else seed)
    mean, std = X["train"].mean(0), X["train"].std(0) + 1e-6
    norm = {k: (v - mean) / std for k, v in X.items()}
    mlp = torch.nn.Sequential(torch.nn.Linear(box.hidden_size, hidden), torch.nn.ReLU(),
                              torch.nn.Linear(hidden, setup.service.num_classes))
    opt = torch.optim.AdamW(mlp.parameters(), lr=lr, weight_decay=weight_decay)
    y = torch.as_tensor(setup.train.labels)
    best = (-1.0, None, 0)
    for step in range(1, steps + 1):
        loss = torch.nn.functional.cross_entropy(mlp(norm["train"]), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % eval_every == 0 or step == steps:
            with torch.no_grad():
                acc = scores(mlp(norm["dev"]).numpy(), setup.dev.labels)["accuracy"]
            if acc > best[0]:
                best = (acc, {k: v.clone() for k, v in mlp.state_dict().items()}, step)
    mlp.load_state_dict(best[1])
    with torch.no_grad():
        test = scores(mlp(norm["test"]).numpy(), setup.test.labels)
    n = len(setup.train) + len(setup.dev) + len(setup.test)
    return _result(setup, "feature_mlp", test, m0, best_dev_acc=best[0], best_dev_step=best[2], steps=steps,
                   wall_s=time.perf_counter() - t0, passes={"forward_examples": n, "backward_examples": 0},
                   trainable_parameters=sum(p.numel() for p in mlp.parameters()))


def token_features(box: WhiteBox, batch: Batch) -> list[torch.Tensor]:
    """Each example's final hidden states at all its tokens, no prompt: a list of (T_i, hidden), float32."""
    out = [None] * len(batch)
    with torch.inference_mode():
        for idx in box.forward.groups(batch):
            seqs = [batch.full_ids(i) for i in idx]
            ids, mask = box.forward.pad(seqs)
            h = box.lm.body(input_ids=ids, attention_mask=mask).last_hidden_state.float().cpu()
            for row, (i, seq) in enumerate(zip(idx, seqs)):
                out[i] = h[row, :len(seq)].clone()
    return out


class BiLSTMHead(torch.nn.Module):
    """A bidirectional LSTM over a sequence of features, then a linear map from its two final states."""

    def __init__(self, features: int, hidden: int, classes: int):
        super().__init__()
        self.lstm = torch.nn.LSTM(features, hidden, batch_first=True, bidirectional=True)
        self.out = torch.nn.Linear(2 * hidden, classes)

    def forward(self, seqs: list[torch.Tensor]) -> torch.Tensor:
        packed = torch.nn.utils.rnn.pack_sequence(seqs, enforce_sorted=False)
        _, (h, _) = self.lstm(packed)  # h: (2, B, hidden), the forward pass's last state and the backward's
        return self.out(torch.cat([h[0], h[1]], -1))


def feature_bilstm(setup: Setup, hidden: int = 128, steps: int = 300, lr: float = 1e-3, weight_decay: float = 1e-2,
                   eval_every: int = 25, seed: int | None = None) -> dict:
    """Feature-BiLSTM: the frozen model's final hidden states at every token of the text, a BiLSTM over them
    and a linear classifier on its two final states, trained with AdamW (the papers' Feature-BiLSTM).

    As :func:`feature_mlp`: one forward pass per example to extract features, standardised with the training
    tokens' mean and spread; the best-dev head is tested.
    """
    box = WhiteBox.behind(setup.service)
    t0, m0, rss0 = time.perf_counter(), setup.service.meter.snapshot(), peak_memory()
    X = {name: token_features(box, b) for name, b in (("train", setup.train), ("dev", setup.dev),
                                                      ("test", setup.test))}
    tokens = torch.cat(X["train"])
    mean, std = tokens.mean(0), tokens.std(0) + 1e-6
    norm = {k: [(x - mean) / std for x in v] for k, v in X.items()}
    torch.manual_seed(setup.seed if seed is None else seed)
    head = BiLSTMHead(box.hidden_size, hidden, setup.service.num_classes)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    y = torch.as_tensor(setup.train.labels)
    best, curve = (-1.0, None, 0), []
    for step in range(1, steps + 1):
        loss = torch.nn.functional.cross_entropy(head(norm["train"]), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        entry = {"step": step, "train_loss": loss.item()}
        if step % eval_every == 0 or step == steps:
            with torch.no_grad():
                entry["dev_acc"] = scores(head(norm["dev"]).numpy(), setup.dev.labels)["accuracy"]
            if entry["dev_acc"] > best[0]:
                best = (entry["dev_acc"], {k: v.clone() for k, v in head.state_dict().items()}, step)
        curve.append(entry)
    head.load_state_dict(best[1])
    with torch.no_grad():
        test = scores(head(norm["test"]).numpy(), setup.test.labels)
    n = len(setup.train) + len(setup.dev) + len(setup.test)
    return _result(setup, "feature_bilstm", test, m0, best_dev_acc=best[0], best_dev_step=best[2], steps=steps,
                   hidden=hidden, lr=lr, curve=curve, wall_s=time.perf_counter() - t0,
                   trainable_parameters=sum(p.numel() for p in head.parameters()),
                   passes={"forward_examples": n, "backward_examples": 0},
                   peak_rss_growth_bytes=peak_memory() - rss0)
