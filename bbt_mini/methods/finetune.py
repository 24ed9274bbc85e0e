"""The gradient methods that change the model: the rest of BBTv2's comparison (its Table 1), white-box on purpose.

Each trains something *in* the model with Adam on the k-shot training set (one full-batch forward and
backward per step, cross-entropy over the label words read out where the service reads them), checks
dev every ``eval_every`` steps, keeps the best-dev state, and scores it on the same test set, with the
result schema of :func:`bbt_mini.methods.baselines.prompt_tuning` (so a result pairs with BBT's):

* :func:`model_tuning`: every weight (Devlin et al., 2019's fine-tuning, with the task's template);
* :func:`bitfit`: only the bias terms (Ben Zaken et al., 2022, https://arxiv.org/abs/2106.10199);
* :func:`lora`: a low-rank update ``B A`` beside the attention projections, through Hugging Face
  ``peft`` (Hu et al., 2022, https://arxiv.org/abs/2106.09685);
* :func:`p_tuning_v2`: trained key/value prefixes at every layer, ``peft``'s prefix tuning
  (Li and Liang, 2021; Liu et al., 2022, https://arxiv.org/abs/2110.07602): BBTv2's gradient counterpart;
* :func:`adapter`: bottleneck adapters after each layer's attention and MLP branch (Houlsby et al.,
  2019, https://arxiv.org/abs/1902.00751), written here with forward hooks: AdapterHub's ``adapters``
  (1.3.0, the newest) requires ``transformers~=4.57.6`` and this package runs on transformers 5, and
  ``peft`` has no Houlsby adapter.

They train a float32 copy of the model (never the service's own: the service stays as it was), in
``eval`` mode (no dropout: a run is a function of its seed). ``peft`` is imported only when LoRA or
P-Tuning v2 runs (it takes seconds to import). Their settings are :data:`SETTINGS`.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import time
import warnings

import torch
from tqdm.auto import tqdm

from ..core.results import result, used_since
from ..core.settings import peak_memory
from ..lm.encoding import Batch
from ..lm.models import LanguageModel
from ..service.blackbox import model_behind
from ..service.whitebox import WhiteBox, residual_branches
from .experiment import Setup, scores, texts_for

# Each method's settings: the defaults of its function, and where they come from. The BBT papers do not state
# their baselines' settings (nor does the book's anchor file), so the values come from each method's own paper.
# Those papers train on a GPU for epochs of mini-batches; the book counts full-batch Adam steps (as prompt
# tuning does), so the steps and dev checks are the book's.
SETTINGS = {
    "model_tuning": {"lr": 1e-5, "steps": 30, "eval_every": 5,
                     "source": "lr: the smallest of Gao et al. (2021, LM-BFF)'s grid for fine-tuning RoBERTa-large "
                               "on 16 shots"},
    "bitfit": {"lr": 1e-3, "steps": 30, "eval_every": 5, "terms": "auto",
               "source": "lr: the largest of Ben Zaken et al. (2022)'s grid {1e-4, 4e-4, 7e-4, 1e-3}"},
    "lora": {"lr": 4e-4, "steps": 30, "eval_every": 5, "rank": 8, "alpha": 8,
             "source": "rank 8, alpha 8, no dropout, on the query and value maps: peft 0.21.2's LoraConfig "
                       "defaults (Hu et al. (2022) use rank 8 with alpha 16 on RoBERTa-large); lr: the book's"},
    "p_tuning_v2": {"lr": 5e-3, "steps": 30, "eval_every": 5, "prompt_length": 10,
                    "source": "prefix length: the profile's prompt length (BBTv2's L; the default here is the small "
                              "profile's); no reparametrisation, as Liu et al. on NLU; lr: the book's (they tune it "
                              "per task)"},
    "adapter": {"lr": 1e-3, "steps": 30, "eval_every": 5, "bottleneck": 64,
                "source": "bottleneck 64 and lr from Houlsby et al. (2019)'s grids {8, 64, 256} and "
                          "{3e-5, 3e-4, 3e-3} (lr: the book's 1e-3 between the last two)"},
}
TERMS = ("auto", "bias", "norm")  # BitFit: what trains (see :func:`bitfit`)


# ------------------------------------------------------------------ the model, its read-out, the loop


def trainable_copy(setup: Setup) -> LanguageModel:
    """A float32 copy of the model behind ``setup``'s service, for a method to train in place."""
    lm = model_behind(setup.service)
    box = WhiteBox.behind(setup.service, dtype=torch.float32)
    if box.lm is lm:  # already float32: the service's own model, so copy it
        return dataclasses.replace(lm, model=copy.deepcopy(lm.model))
    return box.lm


def readout_logits(box: WhiteBox, batch: Batch, prefix=None) -> torch.Tensor:
    """(B, C) label-word logits of the model as it now is, no soft prompt, differentiable in its weights.

    The whole text (``batch.full_ids``) in one forward per length group, read out where the service reads
    (:meth:`WhiteBox.features`). ``prefix(n)``: P-Tuning v2's keys/values for ``n`` sequences, before the text.
    """
    lm, forward = box.lm, box.forward
    out = torch.empty(len(batch), len(box.label_words), device=lm.device)
    for idx in forward.groups(batch):
        ids, mask = forward.pad([batch.full_ids(i) for i in idx])
        kw = {}
        if prefix is not None:
            kv, n = prefix(len(idx))
            mask = torch.cat([torch.ones(len(idx), n, dtype=mask.dtype, device=mask.device), mask], 1)
            kw = {forward._cache_kw: kv}
        h = lm.body(input_ids=ids, attention_mask=mask, **kw).last_hidden_state
        pos = torch.as_tensor([batch.readout[i] + len(batch.prefix(i)) for i in idx], device=h.device)
        out[torch.as_tensor(idx, device=lm.device)] = lm.head_logits(h[torch.arange(len(idx)), pos],
                                                                     forward.label_ids).float()
    return out


def _batches(setup: Setup, box: WhiteBox) -> tuple[Batch, Batch, Batch]:
    def enc(examples: list) -> Batch:
        return box.encode(texts_for(setup.task, setup.verbalizer, examples, box, setup.placement),
                          [e["label"] for e in examples])

    return enc(setup.split.train), enc(setup.split.dev), enc(setup.split.test)


def check_steps(steps: int, lr: float, eval_every: int) -> None:
    """Refuse a loop that cannot run: no steps, no dev checks, a learning rate that is not positive."""
    if steps < 1 or eval_every < 1:
        raise ValueError(f"steps and eval_every must be at least 1; got steps={steps}, eval_every={eval_every}")
    if not lr > 0:
        raise ValueError(f"the learning rate must be positive; got lr={lr}")


def train(setup: Setup, method: str, box: WhiteBox, params: list, *, steps: int, lr: float, eval_every: int,
          seed: int | None, progress: bool, prefix=None, frozen: list | None = None, **extra) -> dict:
    """Adam on ``params`` (the trainable tensors, inside ``box``'s model or beside it), the best-dev state tested.

    Cost: one forward and one backward pass over the training set per step (``passes``, as prompt tuning
    counts them); dev checks and the test are forwards without gradients. ``frozen``: the weights that must
    not move, checked byte for byte after training (``base_unchanged``).
    """
    check_steps(steps, lr, eval_every)
    if not params:
        raise ValueError(f"{method}: nothing to train")
    train_b, dev, test = _batches(setup, box)
    torch.manual_seed(setup.seed if seed is None else seed)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=lr)
    labels = torch.as_tensor(train_b.labels, device=box.lm.device)

    def test_scores(batch: Batch) -> dict:
        with torch.inference_mode():
            return scores(readout_logits(box, batch, prefix).cpu().numpy(), batch.labels)

    before = _fingerprint(frozen) if frozen is not None else None
    device = box.lm.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    mem0, t0, m0 = peak_memory(device), time.perf_counter(), setup.service.meter.snapshot()
    curve, best = [], (-1.0, [p.detach().clone() for p in params], 0)
    for step in tqdm(range(1, steps + 1), desc=method, disable=not progress, mininterval=5.0):
        loss = torch.nn.functional.cross_entropy(readout_logits(box, train_b, prefix), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        entry = {"step": step, "train_loss": loss.item()}
        if step % eval_every == 0 or step == steps:
            entry["dev_acc"] = test_scores(dev)["accuracy"]
            if entry["dev_acc"] > best[0]:
                best = (entry["dev_acc"], [p.detach().clone() for p in params], step)
        curve.append(entry)
    wall = time.perf_counter() - t0  # the training loop and its dev checks, as prompt tuning's
    with torch.no_grad():
        for p, kept in zip(params, best[1]):
            p.copy_(kept)
    test_result = test_scores(test)
    memory = ({"peak_gpu_bytes": peak_memory(device)} if device.type == "cuda"
              else {"peak_rss_growth_bytes": peak_memory(device) - mem0})
    if before is not None:
        extra["base_unchanged"] = _fingerprint(frozen) == before
    return result(setup, method, test_result, used_since(setup.service.meter, m0), steps=steps, lr=lr,
                  eval_every=eval_every, best_dev_acc=best[0], best_dev_step=best[2], curve=curve, wall_s=wall,
                  trainable_parameters=sum(p.numel() for p in params),
                  passes={"forward_examples": steps * len(train_b), "backward_examples": steps * len(train_b)},
                  **memory, **extra)


def _fingerprint(params: list) -> str:
    """A hash of the bytes of ``params``, one tensor at a time (any change to any of them changes it)."""
    h = hashlib.sha256()
    for p in params:
        h.update(p.detach().contiguous().view(torch.uint8).cpu().numpy().tobytes())
    return h.hexdigest()


def _base(lm: LanguageModel) -> list:
    return list(lm.model.parameters())


# ------------------------------------------------------------------ the methods


def model_tuning(setup: Setup, lr: float = 1e-5, steps: int = 30, eval_every: int = 5, seed: int | None = None,
                 progress: bool = True, lm: LanguageModel | None = None) -> dict:
    """Fine-tuning: every weight of the model trains (embeddings, layers, output head).

    ``lm``: the float32 model to train in place (default: a copy of the service's, :func:`trainable_copy`).
    """
    lm = lm or trainable_copy(setup)
    box = WhiteBox(lm, setup.service.label_words)
    return train(setup, "model_tuning", box, _base(lm), steps=steps, lr=lr, eval_every=eval_every, seed=seed,
                 progress=progress)


def bitfit_parameters(lm: LanguageModel, terms: str = "auto") -> tuple[str, list]:
    """BitFit's trainable tensors in the transformer (``lm.body``, not the output head): ``(terms, tensors)``.

    ``terms="bias"``: every bias term (Ben Zaken et al.); refused on a model that has none. Llama-family
    models (SmolLM2, the tiny causal model) have none: their linear maps are bias-free and RMSNorm has only
    a gain. ``"norm"``: the normalisation gains (LayerNorm/RMSNorm weights), the only per-channel vectors such
    a model has: a BitFit-like variant (a gain scales a channel, a bias shifts it), not the paper's method.
    ``"auto"`` (the default): biases where the model has any, else the gains, with a warning.
    """
    if terms not in TERMS:
        raise ValueError(f"unknown terms {terms!r}; choose one of {TERMS}")
    named = list(lm.body.named_parameters())
    biases = [p for name, p in named if name.endswith(".bias")]
    if terms == "bias" and not biases:
        raise ValueError(f"{lm.name} has no bias terms (Llama-family layers have none); use terms='norm' to "
                         "train its normalisation gains instead (a BitFit-like variant)")
    if terms == "auto":
        terms = "bias" if biases else "norm"
        if not biases:
            warnings.warn(f"{lm.name} has no bias terms: BitFit trains its normalisation gains instead",
                          stacklevel=3)
    if terms == "bias":
        return terms, biases
    norms = [m.weight for m in lm.body.modules()
             if (isinstance(m, torch.nn.LayerNorm) or type(m).__name__.endswith("Norm"))
             and getattr(m, "weight", None) is not None]
    return terms, norms


def bitfit(setup: Setup, lr: float = 1e-3, steps: int = 30, eval_every: int = 5, terms: str = "auto",
           seed: int | None = None, progress: bool = True, lm: LanguageModel | None = None) -> dict:
    """BitFit: only the bias terms train (:func:`bitfit_parameters`; ``terms`` says which, and the result too).

    Every other weight is checked unchanged after training (``base_unchanged``).
    """
    lm = lm or trainable_copy(setup)
    terms, params = bitfit_parameters(lm, terms)
    chosen = {id(p) for p in params}
    frozen = [p for p in _base(lm) if id(p) not in chosen]
    return train(setup, "bitfit", WhiteBox(lm, setup.service.label_words), params, steps=steps, lr=lr,
                 eval_every=eval_every, seed=seed, progress=progress, frozen=frozen, terms=terms)


def lora(setup: Setup, lr: float = 4e-4, steps: int = 30, eval_every: int = 5, rank: int = 8, alpha: int = 8,
         seed: int | None = None, progress: bool = True, lm: LanguageModel | None = None) -> dict:
    """LoRA through ``peft``'s ``LoraConfig``: ``W x + (alpha / rank) B A x`` on peft's default target maps
    for the model's family (query and value), ``B`` starting at zero; the base weights stay frozen
    (``base_unchanged``). ``lm`` is left with the LoRA layers in it (``peft`` injects them in place),
    so a caller can merge them (``merge()`` on each ``peft.tuners.lora.LoraLayer``)."""
    if rank < 1 or alpha <= 0:
        raise ValueError(f"LoRA needs rank >= 1 and alpha > 0; got rank={rank}, alpha={alpha}")
    lm = lm or trainable_copy(setup)
    check_steps(steps, lr, eval_every)
    torch.manual_seed(setup.seed if seed is None else seed)  # A's initialisation
    base = _base(lm)
    import peft  # lazily: slow to import

    peft.get_peft_model(lm.model, peft.LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0))
    params = [p for name, p in lm.model.named_parameters() if "lora_" in name]
    return train(setup, "lora", WhiteBox(lm, setup.service.label_words), params, steps=steps, lr=lr,
                 eval_every=eval_every, seed=seed, progress=progress, frozen=base, rank=rank, alpha=alpha)


def p_tuning_v2(setup: Setup, lr: float = 5e-3, steps: int = 30, eval_every: int = 5, prompt_length: int = 10,
                seed: int | None = None, progress: bool = True, lm: LanguageModel | None = None) -> dict:
    """P-Tuning v2: ``prompt_length`` trained key/value vectors at every layer, before the text (``peft``'s
    ``PrefixTuningConfig``, no reparametrisation). The text attends to them at every layer; the model's
    weights are frozen (``base_unchanged``). BBTv2 searches a prompt at every layer without gradients;
    this trains one with them."""
    if prompt_length < 1:
        raise ValueError(f"prompt_length must be at least 1; got {prompt_length}")
    lm = lm or trainable_copy(setup)
    check_steps(steps, lr, eval_every)
    torch.manual_seed(setup.seed if seed is None else seed)  # the prefix's initialisation
    import peft  # lazily: slow to import

    task_type = "CAUSAL_LM" if lm.kind == "causal" else "FEATURE_EXTRACTION"
    model = peft.get_peft_model(lm.model, peft.PrefixTuningConfig(task_type=task_type,
                                                                    num_virtual_tokens=prompt_length))
    params = [p for p in model.prompt_encoder.parameters()]

    def prefix(n: int):
        return model.get_prompt(n), prompt_length

    return train(setup, "p_tuning_v2", WhiteBox(lm, setup.service.label_words), params, steps=steps, lr=lr,
                 eval_every=eval_every, seed=seed, progress=progress, prefix=prefix, frozen=_base(lm),
                 prompt_length=prompt_length)


class Bottleneck(torch.nn.Module):
    """Houlsby et al.'s adapter: ``h + up(gelu(down(h)))``, ``up`` starting at zero (the identity at first)."""

    def __init__(self, hidden: int, size: int):
        super().__init__()
        self.down, self.up = torch.nn.Linear(hidden, size), torch.nn.Linear(size, hidden)
        torch.nn.init.normal_(self.down.weight, std=1e-2)
        torch.nn.init.zeros_(self.down.bias)
        torch.nn.init.zeros_(self.up.weight)
        torch.nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.up(torch.nn.functional.gelu(self.down(h)))


def _adapt(adapter: Bottleneck):
    """A forward hook that passes a branch's output through ``adapter``."""
    def hook(module, args, out):
        if isinstance(out, tuple):
            return (adapter(out[0]), *out[1:])
        return adapter(out)
    return hook


def adapter(setup: Setup, lr: float = 1e-3, steps: int = 30, eval_every: int = 5, bottleneck: int = 64,
            seed: int | None = None, progress: bool = True, lm: LanguageModel | None = None) -> dict:
    """Bottleneck adapters: one after each layer's attention output map and one after its MLP's last map
    (:func:`bbt_mini.service.whitebox.residual_branches`), before the branch joins the residual stream, as
    Houlsby et al. place them; only the adapters train (``2 x layers x (2 x hidden x bottleneck + bottleneck
    + hidden)`` parameters; Houlsby et al. also train the layer norms, not done here). The hooks are removed
    at the end, leaving the model as it was (``base_unchanged``)."""
    if bottleneck < 1:
        raise ValueError(f"bottleneck must be at least 1; got {bottleneck}")
    lm = lm or trainable_copy(setup)
    check_steps(steps, lr, eval_every)
    torch.manual_seed(setup.seed if seed is None else seed)
    branches = [m for pair in residual_branches(lm) for m in pair]
    adapters = [Bottleneck(lm.hidden_size, bottleneck).to(lm.device) for _ in branches]
    handles = [m.register_forward_hook(_adapt(a)) for m, a in zip(branches, adapters)]
    try:
        return train(setup, "adapter", WhiteBox(lm, setup.service.label_words),
                     [p for a in adapters for p in a.parameters()], steps=steps, lr=lr, eval_every=eval_every,
                     seed=seed, progress=progress, frozen=_base(lm), bottleneck=bottleneck)
    finally:
        for h in handles:
            h.remove()
