"""A user's own data gets a user's defaults, and a tuned prompt is judged against the manual one.

The book's profiles size its experiments for its chapters (``small``: 8 shots per class on a CPU).
A user's run without ``--profile``, on a CSV or a registered task, is tuned with the papers' shots
instead, 16 per class (Sun et al., 2022a, Sec. 4.1), or as many as the data affords (each class's
training rows give ``k`` for train and ``k`` for dev), said in a warning (:func:`user_k`); the budget
is the profile's, stated before the run with the time it will take on this machine, from the
chapters' timing probe (:func:`plan_lines`, :class:`bbt_mini.run.timing.Plan`). ``--profile``
chooses a book size, shots included.

After a tuning run, :func:`against_manual` compares the tuned prompt with the manual prompt (the
template alone) on dev and on test by the book's rule, paired by row
(:func:`bbt_mini.core.stats.fixed_pair`), and says plainly when the tuned prompt is not better.
"""
from __future__ import annotations

from ..core.results import test_set_id
from ..core.stats import fixed_pair, say
from ..data.schema import Task
from ..data.splits import load_data
from ..methods.experiment import Setup, evaluate
from .spec import RunSpec
from .timing import Plan

PAPER_SHOTS = 16  # examples per class for train, as many for dev (Sun et al., 2022a, Sec. 4.1)


def affordable_k(task: Task) -> int:
    """The most shots per class the task's training rows give: half of its smallest class (k train, k dev)."""
    labels = [ex["label"] for ex in load_data(task)["train"]]
    return min(labels.count(c) for c in range(len(task.classes))) // 2


def user_k(task: Task, wanted: int = PAPER_SHOTS) -> tuple[int, str | None]:
    """``(k, warning)``: the papers' shots per class, or as many as ``task`` affords with a warning saying so."""
    k = min(wanted, affordable_k(task))
    if k < 1:
        raise ValueError(f"{task.name}: a class has fewer than 2 training rows (one for train, one for dev) once "
                         "the test rows are held out; add rows")
    if k == wanted:
        return k, None
    return k, (f"{task.name} affords {k} shots per class (k for train and k for dev from its smallest class's "
               f"training rows), not the papers' {wanted}: a prompt tuned on fewer examples is noisier")


def plan_lines(spec: RunSpec, classes: int, probe: bool = True) -> list[str]:
    """What the run will spend, stated before it starts, and (``probe``) about how long it takes here."""
    config = spec.config
    rows = classes * spec.k
    lines = [f"{spec.method} will spend {config.budget} API calls ({-(-config.budget // config.popsize)} generations "
             f"of {config.popsize}) on {rows} training rows ({spec.k} per class; as many for dev, checked every "
             f"{config.eval_every} calls), L = {config.prompt_length}, d = {config.intrinsic_dim} "
             f"({spec.profile.name} profile's sizes; --budget and the other flags change them)"]
    if probe:
        sizes = spec.profile.replace(k_shot=spec.k, prompt_length=config.prompt_length, popsize=config.popsize)
        plan = Plan(sizes, task=spec.task, model=spec.model)  # the probe at this run's sizes
        plan.add("this run", method=spec.method, budget=config.budget, k=spec.k, classes=classes,
                 prompt_length=config.prompt_length, test_size=spec.test_size, eval_every=config.eval_every)
        seconds = sum(plan.seconds(plan.probe()))
        when = f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"
        lines.append(f"about {when} on this machine (a probe of two requests; model loading not counted)")
    return lines


def _side(name: str, scores: dict, labels, examples: list) -> dict:
    """One prompt's scores on some rows as a result the verdict rule pairs by row."""
    return {"method": name, "test_accuracy": scores["accuracy"], "test_answers": [int(a) for a in scores["answers"]],
            "test_labels": [int(y) for y in labels], "test_set": test_set_id(examples)}


def against_manual(result: dict, setup: Setup) -> list[str]:
    """Lines comparing the run's tuned prompt (``result["_prompt"]``) with the manual prompt on dev and on
    test, by the book's rule, paired by row; the last says plainly whether the tuned prompt is better on test."""
    service, prompt = setup.service, result["_prompt"]
    lines = ["tuned against manual prompt (the book's rule, paired by row: these two prompts on these rows):"]
    verdicts = {}
    for split, batch, examples in (("dev", setup.dev, setup.split.dev), ("test", setup.test, setup.split.test)):
        tuned = _side("tuned", evaluate(service, batch, prompt), batch.labels, examples)
        manual = _side("manual", evaluate(service, batch), batch.labels, examples)
        c = say(fixed_pair(tuned, manual), tuned, manual, "the tuned prompt", "the manual prompt", f"{split} accuracy")
        note = " (dev chose the tuned prompt: optimistic)" if split == "dev" else ""
        lines.append(f"  {split}, {len(examples)} rows{note}: {c.sentence}")
        verdicts[split] = c.verdict
    if verdicts["test"] == "higher":
        lines.append("The tuned prompt is better than the manual prompt on test.")
    else:
        why = {"lower": "it is worse", "no detectable difference": "no difference was detected",
               "cannot judge": "the rows cannot tell them apart"}[verdicts["test"]]
        lines.append(f"The tuned prompt is NOT better than the manual prompt on test ({why}): keep the manual "
                     "prompt, or tune with more calls (--budget) or more shots per class.")
    return lines

