"""Confusion matrix and Cohen's kappa against a 3 x 3 case worked by hand."""
import pytest
import torch

from labkit import metrics


def test_confusion_matrix_by_hand():
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 1])
    preds = torch.tensor([0, 0, 1, 1, 1, 2, 2, 0, 2, 2])
    #               predicted 0  1  2
    expected = torch.tensor([[2, 1, 0],   # true 0: two right, one taken for 1
                             [0, 2, 1],   # true 1
                             [1, 0, 3]])  # true 2
    assert torch.equal(metrics.confusion_matrix(labels, preds, classes=3), expected)


def test_cohens_kappa_by_hand():
    c = torch.tensor([[2, 1, 0], [0, 2, 1], [1, 0, 3]])
    # n = 10; p_o = (2 + 2 + 3) / 10 = 0.7
    # rows (first rater) 3, 3, 4; columns (second rater) 3, 3, 4
    # p_e = (3*3 + 3*3 + 4*4) / 100 = 0.34; kappa = (0.7 - 0.34) / (1 - 0.34) = 0.36 / 0.66
    assert metrics.cohens_kappa(c) == pytest.approx(0.36 / 0.66)
    # the report's formula (1 - p_o) / (1 - p_e) = 0.3 / 0.66 is not what labkit computes
    assert metrics.cohens_kappa(c) != pytest.approx(0.3 / 0.66)


def test_kappa_extremes():
    assert metrics.cohens_kappa(torch.diag(torch.tensor([5, 5, 5]))) == pytest.approx(1.0)
    # raters that agree exactly as often as chance: every cell equal
    assert metrics.cohens_kappa(torch.ones(3, 3)) == pytest.approx(0.0)


def test_per_class_accuracy_by_hand():
    c = torch.tensor([[2, 1, 0], [0, 2, 1], [1, 0, 3]])
    assert metrics.per_class_accuracy(c) == pytest.approx([2 / 3, 2 / 3, 3 / 4])


def test_training_flops_by_hand():
    # widths [4, 3, 2]: MACs 12 and 6; forward 2*18, weight gradients 2*18, input gradients of layer 2 only 2*6
    assert metrics.training_flops([4, 3, 2]) == 36 + 36 + 12
