"""BBT: Black-Box Tuning (Sun et al., 2022a), the loop.

    z* = argmin_z  loss( f(A z + p0; X_train), Y_train )

Each generation: the optimiser proposes ``popsize`` vectors ``z`` (``ask``), the projection
turns them into prompts, the black box scores all of them in one request (``popsize`` API
calls), the optimiser learns from the losses (``tell``). Every ``eval_every`` calls the
incumbent (the lowest training loss so far) is scored on the dev set; the prompt with the
best dev accuracy is the one tested at the end. Dev and test queries are metered by the
service but not charged to the tuning budget, as in the papers.

The bookkeeping shared with BBTv2 (curves, dev checks, checkpoints, the progress bar)
lives in :class:`Run`.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .blackbox import BlackBox, accuracy
from .experiment import Setup, evaluate
from .optimizers import OPTIMIZERS, make_optimizer, restore
from .profiles import Profile
from .projection import SAMPLERS, Projection, make_A

LOSS_NAMES = ("ce", "hinge", "neg_acc")


@dataclass
class BBTConfig:
    """BBT's settings. Defaults are the papers' (Table 2 and the authors' code)."""

    prompt_length: int = 50  # L
    intrinsic_dim: int = 500  # d
    popsize: int = 20  # candidates per generation (= API calls per generation)
    budget: int = 8000  # API calls spent on the training set
    sigma0: float = 1.0  # CMA-ES initial step size
    bound: float | None = None  # box on z (the ICML-era code used 5); None: unbounded
    loss: str = "ce"  # "ce", "hinge" (margin 2) or "neg_acc"
    eval_every: int = 100  # API calls between dev checks
    sampler: str = "uniform"  # A: "uniform" (BBT), "normal" or "normal-v1" (BBTv2)
    alpha: float = 1.0  # scale of the normal sampler
    optimizer: str = "cma"  # "cma", "sep-cma", "mini-cma" or "random"
    p0: str = "tokens"  # "tokens": embeddings of tokens 1000..1000+L-1 (the papers); "zeros"
    checkpoint_every: int = 0  # API calls between checkpoints (0: at every dev check)

    @classmethod
    def from_profile(cls, profile: Profile, **overrides) -> "BBTConfig":
        """The profile's sizes, the papers' choices for the rest, then ``overrides``."""
        base = dict(prompt_length=profile.prompt_length, intrinsic_dim=profile.intrinsic_dim,
                    popsize=profile.popsize, budget=profile.budget, sigma0=profile.sigma0,
                    eval_every=profile.eval_every, sampler=profile.sampler, alpha=profile.alpha)
        return cls(**{**base, **overrides})

    def check(self) -> None:
        if self.loss not in LOSS_NAMES:
            raise ValueError(f"unknown loss {self.loss!r}; choose one of {LOSS_NAMES}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.sampler!r}; choose one of {SAMPLERS}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose one of {OPTIMIZERS}")
        if self.p0 not in ("tokens", "zeros"):
            raise ValueError(f"p0 must be 'tokens' or 'zeros'; got {self.p0!r}")
        for name in ("prompt_length", "intrinsic_dim", "popsize", "budget", "eval_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1; got {getattr(self, name)}")
        if self.popsize < 2:
            raise ValueError("CMA-ES needs a population of at least 2")
        if self.sigma0 <= 0:
            raise ValueError(f"sigma0 must be positive; got {self.sigma0}")


def p0_for(service: BlackBox, config: BBTConfig) -> np.ndarray:
    """``p0``: embeddings of ``L`` real tokens (ids 1000.., as the authors' code) or zeros."""
    L, H = config.prompt_length, service.hidden_size
    if config.p0 == "zeros":
        return np.zeros((L, H), np.float32)
    return service.token_embeddings(range(1000, 1000 + L))


def projection_for(service: BlackBox, config: BBTConfig, seed: int) -> Projection:
    """The fixed random projection of a BBT run, a function of the seed alone."""
    p0 = p0_for(service, config)
    rng = np.random.default_rng([seed, 0xA])
    mu_hat, sigma_hat = service.embedding_stats() if config.sampler != "uniform" else (0.0, None)
    A = make_A(config.sampler, p0.size, config.intrinsic_dim, rng, mu_hat=mu_hat, sigma_hat=sigma_hat,
               sigma0=config.sigma0, alpha=config.alpha)
    return Projection(A, p0)


@dataclass
class Run:
    """Bookkeeping of one tuning run: curves, dev checks, the best prompt, checkpoints."""

    setup: Setup
    config: object
    seed: int
    method: str
    calls: int = 0
    curve: list = field(default_factory=list)  # per generation: calls, train loss/acc (+ dev acc at checks)
    best_dev: float = -1.0
    best_prompt: np.ndarray | None = None
    best_calls: int = 0
    incumbent: tuple = (np.inf, None, -1)  # (train loss, prompt, calls when found) of the best candidate so far
    dev_calls: int = 0  # API calls spent on dev checks (metered, not charged to the budget)
    _checked: int = -1  # id of the incumbent at the last dev check
    _next_eval: int = 0
    meter0: dict = field(default_factory=dict)
    wall_before: float = 0.0  # seconds spent before a resume
    t0: float = field(default_factory=time.perf_counter)

    def __post_init__(self):
        self.meter0 = self.setup.service.meter.snapshot()
        self._next_eval = self.config.eval_every

    def record(self, losses: np.ndarray, logits: np.ndarray, prompts: np.ndarray) -> dict:
        """Log one generation; return its curve entry."""
        self.calls += len(losses)
        i = int(np.argmin(losses))
        if losses[i] < self.incumbent[0]:
            self.incumbent = (float(losses[i]), prompts[i].copy(), self.calls)
        entry = {"calls": self.calls, "train_loss": float(losses[i]), "train_loss_mean": float(losses.mean()),
                 "train_acc": float(accuracy(logits[i:i + 1], self.setup.train.labels)[0])}
        if self.calls >= self._next_eval or self.calls >= self.config.budget:
            while self._next_eval <= self.calls:
                self._next_eval += self.config.eval_every
            entry["dev_acc"] = self.check_dev()
        self.curve.append(entry)
        return entry

    def check_dev(self) -> float:
        """Score the incumbent on dev (once per new incumbent); keep it if it is the best so far."""
        loss, prompt, found = self.incumbent
        if prompt is not None and found != self._checked:
            self._checked = found
            acc = evaluate(self.setup.service, self.setup.dev, prompt)["accuracy"]
            self.dev_calls += 1
            if acc > self.best_dev:
                self.best_dev, self.best_prompt, self.best_calls = acc, prompt, self.calls
        return self.best_dev

    def progress(self, total: int, show: bool):
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=self.calls, unit="call", desc=self.method, disable=not show,
                    mininterval=5.0, leave=True)

    # -------------------------------------------------------------- checkpoints

    def save(self, path: str | Path, optimizer_state: dict) -> None:
        """Write everything needed to continue, atomically (a cut-off run never leaves half a file)."""
        state = {"method": self.method, "config": dataclasses.asdict(self.config), "seed": self.seed,
                 "task": self.setup.task.name, "calls": self.calls, "curve": self.curve, "best_dev": self.best_dev,
                 "best_prompt": self.best_prompt, "best_calls": self.best_calls, "incumbent": self.incumbent,
                 "dev_calls": self.dev_calls,
                 "checked": self._checked, "next_eval": self._next_eval, "optimizer": optimizer_state,
                 "meter": self.meter_used(), "wall_s": self.wall_s()}
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        with open(tmp, "wb") as f:
            pickle.dump(state, f)
        os.replace(tmp, path)

    def load(self, path: str | Path) -> dict:
        """Restore from a checkpoint written by :meth:`save`; returns the optimiser state."""
        with open(path, "rb") as f:
            state = pickle.load(f)
        mine = (self.method, dataclasses.asdict(self.config), self.seed, self.setup.task.name)
        theirs = (state["method"], state["config"], state["seed"], state["task"])
        if mine != theirs:
            raise ValueError(f"checkpoint {path} belongs to another run: {theirs} is not {mine}")
        self.calls, self.curve, self.best_dev = state["calls"], state["curve"], state["best_dev"]
        self.best_prompt, self.best_calls, self.incumbent = state["best_prompt"], state["best_calls"], state["incumbent"]
        self._checked, self._next_eval, self.dev_calls = state["checked"], state["next_eval"], state["dev_calls"]
        self.meter0 = {k: v - state["meter"][k] for k, v in self.setup.service.meter.snapshot().items()}
        self.wall_before = state["wall_s"]
        return state["optimizer"]

    def wall_s(self) -> float:
        return self.wall_before + time.perf_counter() - self.t0

    def meter_used(self) -> dict:
        now = self.setup.service.meter.snapshot()
        return {k: now[k] - self.meter0[k] for k in now}

    # -------------------------------------------------------------- the result

    def result(self, test: bool = True, **extra) -> dict:
        """The run as JSON-ready data (the command line writes exactly this)."""
        prompt = self.best_prompt if self.best_prompt is not None else self.incumbent[1]
        out = {"task": self.setup.task.name, "method": self.method, "model": self.setup.service.model_name,
               "seed": self.seed, "profile": self.setup.profile.name, "placement": self.setup.placement,
               "config": dataclasses.asdict(self.config), "calls": self.calls, "dev_calls": self.dev_calls,
               "best_dev_acc": self.best_dev, "best_dev_calls": self.best_calls, "curve": self.curve, **extra}
        if test:
            scores = evaluate(self.setup.service, self.setup.test, prompt)
            out["test_accuracy"] = scores["accuracy"]
            if self.setup.task.metric == "f1":
                out["test_f1"] = scores["f1"]
        used = self.meter_used()
        out.update(tokens=used["tokens"], wall_s=self.wall_s(), meter=used, versions=versions())
        out["_prompt"] = prompt  # the tuned prompt itself (dropped when written as JSON)
        return out


def versions() -> dict:
    import cma
    import torch
    import transformers

    from . import __version__

    return {"bbt_mini": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "cma": cma.__version__, "numpy": np.__version__}


def run_bbt(setup: Setup, config: BBTConfig, seed: int | None = None, checkpoint: str | Path | None = None,
            resume: bool = False, progress: bool = True, test: bool = True) -> dict:
    """Tune a soft prompt with BBT on ``setup``'s training set; test the best-dev prompt.

    ``checkpoint``: a file written every ``checkpoint_every`` calls (default: at every dev
    check); with ``resume=True`` a run continues from it and ends exactly as an
    uninterrupted run with the same seed would.
    """
    config.check()
    seed = setup.seed if seed is None else seed
    service = setup.service
    projection = projection_for(service, config, seed)
    optimizer = make_optimizer(config.optimizer, config.intrinsic_dim, config.sigma0, config.popsize, seed,
                               config.bound)
    run = Run(setup, config, seed, method="bbt" if config.optimizer == "cma" else f"bbt-{config.optimizer}")
    if resume and checkpoint and Path(checkpoint).exists():
        optimizer = restore(run.load(checkpoint))
    every = config.checkpoint_every or config.eval_every
    next_save = (run.calls // every + 1) * every
    with run.progress(config.budget, progress) as bar:
        while run.calls < config.budget:
            n = min(config.popsize, config.budget - run.calls)
            Z = optimizer.ask()[:n]
            prompts = projection(Z)
            r = service(prompts, setup.train, loss=config.loss)
            if n == config.popsize:
                optimizer.tell(Z, r.loss)
            entry = run.record(r.loss, r.logits, prompts)
            bar.update(n)
            bar.set_postfix(loss=f"{entry['train_loss']:.3f}", dev=f"{run.best_dev:.3f}", refresh=False)
            if checkpoint and run.calls >= next_save:
                run.save(checkpoint, optimizer.state())
                next_save += every
    return run.result(test=test)


def to_json(result: dict, path: str | Path | None = None) -> str:
    """The result as JSON (the tuned prompt itself is left out); written to ``path`` if given."""
    text = json.dumps({k: v for k, v in result.items() if not k.startswith("_")}, indent=2, default=float)
    if path:
        Path(path).write_text(text)
    return text
