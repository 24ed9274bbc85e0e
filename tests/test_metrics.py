"""Losses and scores of label-word logits, against numbers worked out by hand."""
import numpy as np
import pytest

from bbt_mini.core.metrics import (LOSSES, accuracy, check_loss, cross_entropy, f1, hinge, log_softmax, neg_acc,
                                   softmax)

# Two candidates, five examples, two classes: candidate 0 predicts 1, 1, 0, 1, 0; candidate 1 predicts all 1.
LOGITS = np.array([[[0.0, 1.0], [0.0, 2.0], [3.0, 0.0], [0.0, 1.0], [1.0, 0.0]],
                   [[0.0, 1.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]]])
LABELS = np.array([1, 1, 1, 0, 0])


def test_accuracy_counts_argmax_hits_per_candidate():
    np.testing.assert_allclose(accuracy(LOGITS, LABELS), [3 / 5, 3 / 5])


def test_f1_of_class_one_matches_precision_and_recall_by_hand():
    # candidate 0: tp 2, fp 1, fn 1 -> P = R = 2/3, F1 = 2/3; candidate 1: tp 3, fp 2, fn 0 -> 2*3/(6+2) = 0.75
    np.testing.assert_allclose(f1(LOGITS, LABELS), [2 / 3, 0.75])


def test_f1_is_zero_when_class_one_is_never_predicted_right():
    never = np.tile([1.0, 0.0], (1, 5, 1))  # predicts class 0 everywhere
    assert f1(never, LABELS).tolist() == [0.0]
    assert f1(LOGITS[:1], np.zeros(5, np.int64)).tolist() == [0.0]  # no positives at all


def test_neg_acc_is_minus_the_accuracy_and_is_the_registered_loss():
    np.testing.assert_allclose(neg_acc(LOGITS, LABELS), [-0.6, -0.6])
    assert LOSSES["neg_acc"] is neg_acc and LOSSES["ce"] is cross_entropy and LOSSES["hinge"] is hinge


def test_cross_entropy_and_hinge_by_hand():
    logits = np.array([[[2.0, 0.0], [0.0, 3.0]]])
    labels = np.array([0, 0])
    ce = -(np.log(np.exp(2) / (np.exp(2) + 1)) + np.log(1 / (1 + np.exp(3)))) / 2
    np.testing.assert_allclose(cross_entropy(logits, labels), [ce])
    np.testing.assert_allclose(hinge(logits, labels), [(0 + 5) / 2])  # margin 2: max(0, 2-2), max(0, 2+3)


def test_unknown_loss_is_named_with_the_choices():
    assert check_loss("hinge") == "hinge"
    with pytest.raises(ValueError, match=r"unknown loss 'mse'; choose one of \['ce', 'hinge', 'neg_acc'\]"):
        check_loss("mse")


def test_softmax_and_log_softmax_by_hand_and_without_overflow():
    logits = np.array([[0.0, np.log(3.0)], [1000.0, 1000.0 + np.log(3.0)]])  # the second would overflow exp
    np.testing.assert_allclose(softmax(logits), [[0.25, 0.75], [0.25, 0.75]])
    np.testing.assert_allclose(log_softmax(logits), np.log([[0.25, 0.75], [0.25, 0.75]]))
    np.testing.assert_allclose(np.exp(log_softmax(LOGITS)), softmax(LOGITS))


def test_hinge_is_the_authors_sum_over_every_wrong_class():
    """Three classes: the authors' hinge adds the violation of every wrong class within the margin
    (1 + 3 = 4 on the first example), where the largest-violation form would give 3; on two classes
    the two forms agree."""
    logits = np.array([[[1.0, 0.0, 2.0], [0.0, 5.0, -4.0]]])
    labels = np.array([0, 1])
    by_hand = (max(0, 0 - 1 + 2) + max(0, 2 - 1 + 2) + max(0, 0 - 5 + 2) + max(0, -4 - 5 + 2)) / 2
    np.testing.assert_allclose(hinge(logits, labels), [by_hand])  # (1 + 3 + 0 + 0) / 2
    largest = np.mean([max(0, 2 - (1 - 2)), max(0, 2 - (5 - 0))])
    assert hinge(logits, labels)[0] > largest
    rng = np.random.default_rng(0)
    two, y = rng.normal(0, 2, (4, 16, 2)), rng.integers(0, 2, 16)
    own, other = (np.take_along_axis(two, c[None, :, None], -1)[..., 0] for c in (y, 1 - y))
    margin = own - other
    np.testing.assert_allclose(hinge(two, y), np.maximum(0, 2 - margin).mean(-1))
