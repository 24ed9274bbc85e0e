"""The tuning loop that BBT and BBTv2 share, and its bookkeeping.

Each generation: a *search* proposes candidates ``z`` and the prompts they stand for
(``ask``), the black box scores all of them on the training set in one request (one API
call each), the search learns from the losses (``tell``), and :class:`Run` records the
generation. Every ``eval_every`` calls the incumbent (the lowest training loss so far) is
scored on the dev set; the prompt with the best dev accuracy is the one tested at the end.
Dev and test queries are metered by the service but not charged to the tuning budget, as
in the papers.

``test_at``: budgets (API calls) at which the prompt that a run of that budget would return
(the best-dev prompt so far, after the dev check such a run makes at its end) is scored on
the test set, so that one run gives the test accuracy against the budget. That dev check is
made on the side: the run itself goes on exactly as without ``test_at``. A budget is scored
at the end of the generation that reaches it (the same as a run of that budget when it is a
multiple of the population); the numbers at the run's own budget are its final ones.

BBT and BBTv2 differ only in their search (which ``z`` is proposed and how it becomes a
prompt): :class:`bbt_mini.methods.bbt.Subspace` and :class:`bbt_mini.methods.bbtv2.LayerByLayer`. A
search is anything with

* ``ask(n) -> (Z, prompts)``: ``n`` candidates and their prompts;
* ``tell(Z, prompts, losses) -> dict``: learn from a generation's losses; the dict joins
  the generation's curve entry (BBTv2: which layer moved);
* ``state() -> dict`` and ``load(state)``: everything needed to continue exactly.
"""
from __future__ import annotations

import os
import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..core.metrics import accuracy
from ..core.projection import p0_token_ids
from ..core.results import differences, identity, result, test_fields, used_since
from .experiment import Setup, evaluate


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
    _checked: int = -1  # calls at which the incumbent last checked on dev was found
    _next_eval: int = 0
    meter0: dict = field(default_factory=dict)
    wall_before: float = 0.0  # seconds spent before a resume
    t0: float = field(default_factory=time.perf_counter)
    test_at: tuple = ()  # budgets at which the would-be result is tested (see the module doc)
    tested: list = field(default_factory=list)  # one entry per budget of test_at reached so far
    _last_test: tuple = ()  # (prompt, scores) of the latest side test: the final test reuses it for that prompt

    def __post_init__(self):
        self.meter0 = self.setup.service.meter.snapshot()
        # the token ids of p0, if made of tokens: a masked LM adds A z after its embedding module over them
        self.base = p0_token_ids(self.config.p0, self.setup.service, self.config.prompt_length, self.seed)
        self._next_eval = self.config.eval_every
        self.test_at = check_test_at(self.test_at, self.config.budget)

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
        for budget in self.test_at[len(self.tested):]:
            if self.calls >= budget:
                self.tested.append(self.test_now(budget))
        return entry

    def test_now(self, budget: int) -> dict:
        """Test the prompt a run of ``budget`` calls would return, leaving this run's state as it is.

        That run would check the incumbent on dev at its end; if this run has not checked it,
        it is checked here on the side (metered, not recorded as one of this run's dev checks).
        """
        t0 = time.perf_counter()
        best_dev, prompt, best_calls = self.best_dev, self.best_prompt, self.best_calls
        _, incumbent, found = self.incumbent
        if incumbent is not None and found != self._checked:
            acc = evaluate(self.setup.service, self.setup.dev, incumbent, self.base)["accuracy"]
            if acc > best_dev:
                best_dev, prompt, best_calls = acc, incumbent, self.calls
        prompt = incumbent if prompt is None else prompt
        if self._last_test and self._last_test[0] is prompt:  # the prompt an earlier budget returned: scored
            scores = self._last_test[1]
        else:
            scores = evaluate(self.setup.service, self.setup.test, prompt, self.base)
        self._last_test = (prompt, scores)
        return {"budget": budget, "calls": self.calls, "best_dev_acc": best_dev, "best_dev_calls": best_calls,
                **test_fields(self.setup, scores, labels=False), "test_loss": scores["loss"],
                "seconds": time.perf_counter() - t0}  # spent on this side test (inside the run's wall_s)

    def check_dev(self) -> float:
        """Score the incumbent on dev (once per new incumbent); keep it if it is the best so far."""
        _, prompt, found = self.incumbent
        if prompt is not None and found != self._checked:
            self._checked = found
            acc = evaluate(self.setup.service, self.setup.dev, prompt, self.base)["accuracy"]
            self.dev_calls += 1
            if acc > self.best_dev:
                self.best_dev, self.best_prompt, self.best_calls = acc, prompt, self.calls
        return self.best_dev

    def progress(self, total: int, show: bool):
        return tqdm(total=total, initial=self.calls, unit="call", desc=self.method, disable=not show,
                    mininterval=5.0, leave=True)

    # -------------------------------------------------------------- checkpoints

    def identity(self) -> dict:
        return identity(self.setup, self.method, self.seed, self.config)

    def save(self, path: str | Path, search_state: dict) -> None:
        """Write everything needed to continue, atomically (a cut-off run never leaves half a file)."""
        state = {"identity": self.identity(), "calls": self.calls, "curve": self.curve, "best_dev": self.best_dev,
                 "best_prompt": self.best_prompt, "best_calls": self.best_calls, "incumbent": self.incumbent,
                 "dev_calls": self.dev_calls, "checked": self._checked, "next_eval": self._next_eval,
                 "search": search_state, "meter": self.meter_used(), "wall_s": self.wall_s(),
                 "test_at": list(self.test_at), "tested": self.tested}
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        with open(tmp, "wb") as f:
            pickle.dump(state, f)
        os.replace(tmp, path)

    def load(self, path: str | Path) -> dict:
        """Restore from a checkpoint written by :meth:`save` if it is this run's; returns the search's state."""
        with open(path, "rb") as f:
            state = pickle.load(f)
        if "identity" not in state:
            raise ValueError(f"checkpoint {path} was written by an older bbt_mini and cannot be checked; "
                             "delete it or run without --resume")
        differ = differences(self.identity(), state["identity"])
        if differ:
            raise ValueError(f"checkpoint {path} belongs to another run: " + "; ".join(differ))
        if tuple(state.get("test_at", ())) != self.test_at:
            raise ValueError(f"checkpoint {path} belongs to another run: test_at: {list(self.test_at)} here, "
                             f"{list(state.get('test_at', ()))} in the checkpoint")
        self.tested = list(state.get("tested", []))
        self.calls, self.curve, self.best_dev = state["calls"], state["curve"], state["best_dev"]
        self.best_prompt, self.best_calls = state["best_prompt"], state["best_calls"]
        self.incumbent = state["incumbent"]
        self._checked, self._next_eval, self.dev_calls = state["checked"], state["next_eval"], state["dev_calls"]
        self.meter0 = {k: v - state["meter"][k] for k, v in self.setup.service.meter.snapshot().items()}
        self.wall_before = state["wall_s"]
        return state["search"]

    def wall_s(self) -> float:
        return self.wall_before + time.perf_counter() - self.t0

    def meter_used(self) -> dict:
        return used_since(self.setup.service.meter, self.meter0)

    # -------------------------------------------------------------- the result

    def result(self, test: bool = True, **extra) -> dict:
        """The run as JSON-ready data (the command line writes exactly this)."""
        prompt = self.best_prompt if self.best_prompt is not None else self.incumbent[1]
        scores = None
        if test:  # the test at the run's own budget (test_at) scored this very prompt already: not twice
            scores = (self._last_test[1] if self._last_test and self._last_test[0] is prompt
                      else evaluate(self.setup.service, self.setup.test, prompt, self.base))
        if self.test_at:
            extra["test_at"] = self.tested
        out = result(self.setup, self.method, scores, self.meter_used(), seed=self.seed, config=self.config,
                     wall_s=self.wall_s(), calls=self.calls, dev_calls=self.dev_calls, best_dev_acc=self.best_dev,
                     best_dev_calls=self.best_calls, curve=self.curve, **extra)
        out["_prompt"] = prompt  # the tuned prompt itself (dropped when written as JSON)
        return out


def check_test_at(test_at, budget: int) -> tuple:
    """``test_at`` as a sorted tuple of distinct budgets; refused if one is not in 1..``budget``."""
    test_at = list(test_at or ())
    budgets = tuple(sorted({int(b) for b in test_at}))
    if len(budgets) != len(test_at):
        raise ValueError(f"test_at lists a budget twice: {list(test_at)}")
    if budgets and budgets[0] < 1:
        raise ValueError(f"test_at budgets must be at least 1 API call; got {list(test_at)}")
    if budgets and budgets[-1] > budget:
        raise ValueError(f"test_at asks for the test accuracy at {budgets[-1]} calls, beyond this run's "
                         f"budget of {budget}: raise the budget or drop that point")
    return budgets


def tune(setup: Setup, config, seed: int, method: str, search, checkpoint: str | Path | None = None,
         resume: bool = False, progress: bool = True, test: bool = True, test_at=(), **extra) -> dict:
    """Spend ``config.budget`` API calls on the training set with ``search``; test the best-dev prompt.

    ``checkpoint``: a file written every ``config.checkpoint_every`` calls (default: at every
    dev check); with ``resume=True`` a run continues from it and ends exactly as an
    uninterrupted run would. ``test_at``: budgets at which the would-be result is also tested
    (see the module doc); the result's ``test_at`` lists them.
    ``extra`` joins the result.
    """
    service = setup.service
    run = Run(setup, config, seed, method, test_at=test_at)
    if resume and checkpoint and Path(checkpoint).exists():
        search.load(run.load(checkpoint))
    every = config.checkpoint_every or config.eval_every
    next_save = (run.calls // every + 1) * every
    with run.progress(config.budget, progress) as bar:
        while run.calls < config.budget:
            n = min(config.popsize, config.budget - run.calls)
            Z, prompts = search.ask(n)
            r = service(prompts, setup.train, loss=config.loss, base=run.base)
            moved = search.tell(Z, prompts, r.loss)
            entry = run.record(r.loss, r.logits, prompts)
            entry.update(moved)
            bar.update(n)
            bar.set_postfix(loss=f"{entry['train_loss']:.3f}", dev=f"{run.best_dev:.3f}", **moved, refresh=False)
            if checkpoint and run.calls >= next_save:
                run.save(checkpoint, search.state())
                next_save += every
    return run.result(test=test, **extra)
