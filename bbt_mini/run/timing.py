"""How long will this chapter take here? A plan of its runs, priced by a timed probe.

Each chapter lists, at its top, the runs it will make (:class:`Plan`); :meth:`Plan.report`
times two requests to the black box on this device with the active profile's sizes (a
whole population, and one candidate) and prices every run from them:

* tuning: ``budget / popsize`` population requests;
* dev checks and the test set: one-candidate requests over ``2k`` examples each;
* gradient steps (prompt tuning): about three one-candidate forwards each (forward and
  backward).

A run with more examples or a longer prompt than the probe is scaled by its examples and
tokens. It is an estimate, printed as one: it leaves out model loading (seconds once the
converted model is cached) and what the chapter does beside the runs, and runs already in
the run cache (:mod:`bbt_mini.run.runs`) cost nothing.
"""
from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..core.profiles import Profile, get_profile
from ..core.settings import default_device, default_dtype
from ..methods import registry
from ..methods.registry import METHODS, config
from .prepare import prepare

GRADIENT_FORWARDS = 3  # a backward pass costs about two forwards


@dataclass
class PlannedRuns:
    label: str
    n: int  # how many runs (seeds x settings)
    method: str
    budget: int  # tuning calls (BBT/BBTv2) or optimisation steps (gradient baselines)
    k: int  # training examples per class (dev has as many)
    classes: int
    prompt_length: int
    test_size: int
    eval_every: int
    text_scale: float  # text tokens per example, relative to the probe's task


class Plan:
    """The runs a chapter will make in ``profile``; :meth:`report` says how long they take here."""

    def __init__(self, profile: Profile | str | None = None, task: str = "rotten_tomatoes", model: str = "smollm2",
                 chapter: str | None = None):
        self.profile = profile if isinstance(profile, Profile) else get_profile(profile)
        self.task, self.model, self.chapter = task, model, chapter
        self.items: list[PlannedRuns] = []

    def add(self, label: str, n: int = 1, method: str = "bbt", budget: int | None = None, k: int | None = None,
            classes: int = 2, prompt_length: int | None = None, test_size: int | None = None,
            eval_every: int | None = None, text_scale: float = 1.0) -> "Plan":
        """``n`` runs of ``method``; unset sizes are the profile's. Returns the plan (chainable)."""
        p = self.profile
        row = registry.method(method)  # an unknown method: refused here
        if n < 0:
            raise ValueError(f"n must be 0 or more, got {n}")
        for name, value in (("k", k), ("eval_every", eval_every)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1 (or None for the profile's), got {value}")
        if budget is None:
            budget = config(method, p).budget if row.tunes else 0
        self.items.append(PlannedRuns(
            label, n, method, budget, p.k_shot if k is None else k, classes,
            p.prompt_length if prompt_length is None else prompt_length,
            (p.test_size or 1000) if test_size is None else test_size,
            p.eval_every if eval_every is None else eval_every, text_scale))
        return self

    def calls(self) -> int:
        """API calls the plan's tuning runs spend (dev checks and tests not counted)."""
        return sum(it.n * it.budget for it in self.items if METHODS[it.method].tunes)

    def probe(self) -> dict:
        """Seconds for one population request and one single-candidate request, on this device."""
        p = self.profile
        setup = prepare(self.task, self.model, seed=1, profile=p, test_size=2)  # no test set needed
        service, batch = setup.service, setup.train
        rng = np.random.default_rng(0)
        scale = float(service.embedding_stats()[1])
        pop = (scale * rng.standard_normal((p.popsize, p.prompt_length, service.hidden_size))).astype(np.float32)
        service(pop[:1], batch)  # warm-up
        times = {}
        for name, prompts in (("one", pop[:1]), ("population", pop)):
            t = time.perf_counter()
            service(prompts, batch)
            times[name] = time.perf_counter() - t
        service.meter = type(service.meter)()  # the probe is not part of any run
        text_tokens = float(np.mean([len(piece) for piece in batch.pieces]))
        return {"population_s": times["population"], "one_s": times["one"], "examples": len(batch),
                "text_tokens": text_tokens, "prompt_length": p.prompt_length, "popsize": p.popsize}

    def seconds(self, probe: dict) -> list[float]:
        """The estimated seconds of each planned item, from a :meth:`probe`."""
        out = []
        for it in self.items:
            examples = it.classes * it.k
            tokens = probe["text_tokens"] * it.text_scale
            size = (examples / probe["examples"]) * (it.prompt_length + tokens) / (probe["prompt_length"] + tokens)
            one = probe["one_s"] * size  # one candidate on 2k examples
            if METHODS[it.method].tunes:
                tuning = it.budget / probe["popsize"] * probe["population_s"] * size
                dev = it.budget / it.eval_every * one
            elif METHODS[it.method].steps:
                tuning, dev = it.budget * GRADIENT_FORWARDS * one, it.budget / it.eval_every * one
            else:  # manual prompt, in-context learning, features: the test set only
                tuning = dev = 0.0
            test = it.test_size / examples * one
            out.append(it.n * (tuning + dev + test))
        return out

    def report(self) -> str:
        """A short table of this chapter's runs and their expected time on this device."""
        device = default_device()
        probe = self.probe()
        secs = self.seconds(probe)
        lines = [f"Expected time of this chapter: about {_minutes(sum(secs))} on {_device_name(device)} "
                 f"({default_dtype(device)}, {self.profile.name} profile), if no run is cached yet.",
                 f"  probe: {probe['population_s'] / probe['popsize']:.4f} s per call in a population of "
                 f"{probe['popsize']}, {probe['one_s']:.3f} s for one candidate ({probe['examples']} examples, "
                 f"L = {probe['prompt_length']})"]
        for it, s in zip(self.items, secs):
            row = METHODS[it.method]
            what = f"{it.budget} calls" if row.tunes else f"{it.budget} steps" if row.steps else "test set"
            lines.append(f"  {it.n:3d} x {it.method:13s} {what:>11s}  {_minutes(s):>8s}  {it.label}")
        lines.append(f"  total {self.calls():,} tuning calls; an estimate: loading, plotting and "
                     "cached runs are not counted")
        if self.chapter:
            lines.append(recorded_gpu_time(self.chapter))
        return "\n".join(lines)


# What tools/gpu/check.py recorded of each chapter on a GPU: package data (pyproject.toml), so an
# installed package has it too.
RECORD = Path(__file__).with_name("gpu_chapters.json")


def recorded_gpu_time(chapter: str, path: Path = RECORD) -> str:
    """What tools/gpu/check.py recorded for ``chapter`` on a GPU (a line), if ``path`` has it."""
    if not path.exists():
        return f"  recorded on a GPU: nothing for {chapter} (no {path})"
    record = json.loads(path.read_text())
    c = record["chapters"].get(chapter)
    if c is None:
        return f"  recorded on a GPU: not yet for {chapter} (tools/gpu/check.py chapters {chapter})"
    outcome = "finished" if c["passed"] else f"FAILED (see {path.name})"
    return (f"  recorded on a GPU: {outcome} in {c['wall_s'] / 60:.1f} min on {record['machine']['device']}, "
            f"{c['profile']} profile, {record['date']} (`{c['command']}`)")


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def _device_name(device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.machine()} CPU, {torch.get_num_threads()} threads"
