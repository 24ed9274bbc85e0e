"""BBT's effect, measured: the one test that runs the book's primary comparison at a real size.

CI executes the chapters in the tiny ``ci`` profile, which proves they run but measures
nothing. This test runs chapter 3's primary panel in the ``small`` profile
(:data:`bbt_mini.run.gain.PRIMARY`: BBC News with its weak manual prompt, SmolLM2, BBT with the
uniform ``A``, 5 seeds, 100 calls, with the same ``test_at`` as the chapter, so a built book and
this test share their runs) through the black box alone, beside random search in the same space
at the same budget, and asserts two things:

1. the chapter's primary claim: BBT's tuned prompts beat the manual prompt on the test set by
   the book's verdict rule, paired by test sentence and seed. Random search passes this too (a
   weak template's bias is repaired by the best of a few random prompts, chapter 3), so it
   cannot show that the search *learned*;
2. that the search learned: at the same budget, BBT's lowest training loss (the objective it
   minimises) is below random search's, seed by seed (each seed shares its training split),
   by the same rule. An optimiser that learns nothing is random search, whose difference from
   random search is zero in expectation: this check fails for it (in all but 2.5% of draws).
"""
import numpy as np
import pytest

from bbt_mini.book.notebook import compare
from bbt_mini.run import gain
from bbt_mini.run.runs import cached_run, cached_runs


def lowest_loss(run: dict) -> float:
    return min(e["train_loss"] for e in run["curve"])


@pytest.mark.effect
def test_bbt_beats_the_weak_manual_prompt_and_optimises_better_than_random_search():
    task, strength = gain.PRIMARY
    manual = cached_run("manual", task, seed=1, profile="small", **gain.reference(task, strength, "small"))
    bbt, rand = (cached_runs(gain.jobs(task, strength, s, "small"), desc=s, progress=False) for s in gain.SEARCHES)
    budget = gain.budgets(task, "small", strength)[-1]
    assert len(bbt) == len(rand) == 5 and all(r["calls"] == budget for r in bbt + rand)
    assert [r["seed"] for r in bbt] == [r["seed"] for r in rand]

    claim = compare(bbt, manual, "BBT", "the manual prompt")  # paired by test sentence and seed
    print(claim.sentence)
    assert claim.rule == "paired" and claim.verdict == "higher", claim.sentence

    diffs = np.array([lowest_loss(b) - lowest_loss(r) for b, r in zip(bbt, rand)])  # per seed
    learned = compare(list(diffs), 0.0, "BBT's lowest training loss minus random search's", "zero",
                      what="training loss")
    print(learned.sentence)
    assert learned.verdict == "lower", learned.sentence
