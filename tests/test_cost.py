"""The cost model and the curve helpers."""
import math

import numpy as np
import pytest

from bbt_mini.core.cost import (best_so_far, calls_to_loss, calls_to_target, dollars, loss_at,
                                loss_every_run_reaches, tokens_per_call)

CURVE = [{"calls": 10, "train_loss": 0.7, "dev_acc": 0.5}, {"calls": 20, "train_loss": 0.6},
         {"calls": 30, "train_loss": 0.65, "dev_acc": 0.7}, {"calls": 40, "train_loss": 0.5, "dev_acc": 0.6}]


def test_dollars_and_tokens_per_call():
    assert dollars(2_000_000, 1.0) == 2.0
    assert math.isclose(dollars(123_456, 0.1), 0.0123456)
    with pytest.raises(ValueError):
        dollars(-1, 1.0)
    r = {"meter": {"tokens": 1_000_000, "calls": 250}}
    assert tokens_per_call(r) == 4000
    with pytest.raises(ValueError, match="no metered calls"):
        tokens_per_call({"meter": {"tokens": 0, "calls": 0}})


def test_curve_helpers():
    calls, best = best_so_far(CURVE)
    assert calls.tolist() == [10, 30, 40] and best.tolist() == [0.5, 0.7, 0.7]
    assert calls_to_target(CURVE, 0.7) == 30 and calls_to_target(CURVE, 0.8) == math.inf
    np.testing.assert_allclose(loss_at(CURVE, np.array([5, 10, 25, 40])), [np.nan, 0.7, 0.6, 0.5])
    with pytest.raises(ValueError, match="no 'test_acc'"):
        best_so_far(CURVE, "test_acc")


def test_calls_to_loss_counts_to_the_first_best_loss_at_or_below_the_target():
    assert calls_to_loss(CURVE, 0.7) == 10 and calls_to_loss(CURVE, 0.62) == 20
    assert calls_to_loss(CURVE, 0.55) == 40  # the 0.65 at 30 calls is no new best
    assert calls_to_loss(CURVE, 0.4) == math.inf


def test_the_loss_every_run_reaches_is_reached_by_each_and_beaten_by_none_of_the_slowest():
    slow = {"curve": [{"calls": 10, "train_loss": 0.9}, {"calls": 20, "train_loss": 0.8}]}
    runs = [{"curve": CURVE}, slow]
    target = loss_every_run_reaches(runs)
    assert target == 0.8
    assert [calls_to_loss(r["curve"], target) for r in runs] == [10, 20]
    with pytest.raises(ValueError, match="no runs"):
        loss_every_run_reaches([])


def test_paper_table():
    from bbt_mini.core.paper import PAPER_TABLE, paper_table

    text = paper_table()
    assert "| BBTv2 | 90.33 |" in text and text.count("\n") == len(PAPER_TABLE) + 1
    assert abs(np.mean(PAPER_TABLE["BBTv2"]) - 79.01) < 0.01 and abs(np.mean(PAPER_TABLE["BBT"]) - 71.90) < 0.01
