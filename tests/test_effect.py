"""BBT's effect, measured: the one test that runs the book's primary comparison at a real size.

CI executes the chapters in the tiny ``ci`` profile, which proves they run but measures
nothing. This test runs chapter 3's primary comparison in the ``small`` profile
(:data:`bbt_mini.run.gain.PRIMARY`: BBC News with its weak manual prompt, SmolLM2, BBT with
the uniform ``A``, 5 seeds, the run's own budget; without the side tests at smaller budgets,
which leave a run unchanged) through the black box alone, and asserts the chapter's primary
claim: BBT's tuned prompts beat the manual prompt on the test set by the book's verdict rule,
paired by test sentence and seed.

What it does not show: that the search *learned*. At this budget (5 generations) random
search in the same space passes the same check too (measured on this project's CPU with
bf16, fresh clone: BBT 0.578 and random search 0.533 over 5 seeds against the manual
prompt's 0.355), and neither's population mean training loss falls on every seed (BBT's rose
on seed 1), so an earlier check that asserted both was dropped rather than tuned to pass.
Chapter 3 reports BBT against random search at each budget with the same rule; a test that a
random search fails needs more generations than this test's time allows (issue 17, open).
"""
import pytest

from bbt_mini.book.notebook import compare
from bbt_mini.run import gain
from bbt_mini.run.runs import cached_run, cached_runs


@pytest.mark.effect
def test_bbt_beats_the_weak_manual_prompt_on_the_primary_panel():
    task, strength = gain.PRIMARY
    manual = cached_run("manual", task, seed=1, profile="small", **gain.reference(task, strength, "small"))
    jobs = [{k: v for k, v in j.items() if k != "test_at"} for j in gain.jobs(task, strength, "BBT", "small")]
    bbt = cached_runs(jobs, desc="BBT", progress=False)
    assert len(bbt) == 5 and all(r["calls"] == gain.sizes(task, "small")["budget"] for r in bbt)
    c = compare(bbt, manual, "BBT", "the manual prompt")  # paired by test sentence and seed
    print(c.sentence)
    assert c.rule == "paired" and c.verdict == "higher", c.sentence
