"""Failure detection: AURC and AUROC of a per-volume score, and the uncertainty-error overlap, by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from scripts.failure_detection import aurc, failure_auroc, risk_coverage, uncertainty_error_overlap


def test_aurc_hand_computed():
    uncertainty = [0.1, 0.4, 0.2, 0.3]
    risk = [0.0, 0.5, 0.1, 0.3]
    # most certain first: risks 0.0, 0.1, 0.3, 0.5 -> running means 0, 0.05, 0.1333, 0.225
    coverage, curve = risk_coverage(uncertainty, risk)
    np.testing.assert_allclose(coverage, [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(curve, [0.0, 0.05, 0.4 / 3, 0.225])
    assert aurc(uncertainty, risk) == pytest.approx((0.0 + 0.05 + 0.4 / 3 + 0.225) / 4)
    # the oracle ranking is the lowest possible, the reversed ranking the highest
    assert aurc(risk, risk) == pytest.approx(aurc(uncertainty, risk))
    assert aurc([-r for r in risk], risk) == pytest.approx((0.5 + 0.4 + 0.3 + 0.225) / 4)


def test_tied_scores_count_with_the_mean_risk_of_their_group():
    assert aurc([0.1, 0.1], [0.0, 1.0]) == pytest.approx(0.5)
    assert aurc([0.2, 0.1, 0.1], [0.3, 1.0, 0.0]) == pytest.approx((0.5 + 0.5 + 1.3 / 3) / 3)


def test_failure_auroc():
    dice = [0.9, 0.7, 0.85, 0.5]
    assert failure_auroc([0.1, 0.3, 0.2, 0.4], dice, threshold=0.8) == pytest.approx(1.0)
    assert failure_auroc([0.4, 0.1, 0.3, 0.2], dice, threshold=0.8) == pytest.approx(0.0)
    assert failure_auroc([0.1, 0.3, 0.35, 0.2], dice, threshold=0.8) == pytest.approx(0.5)
    assert math.isnan(failure_auroc([0.1, 0.2], [0.9, 0.95]))  # no failure to detect


def test_uncertainty_error_overlap():
    label = torch.tensor([[0, 1, 1, 2]])
    segmentation = torch.tensor([[0, 1, 2, 1]])  # errors at positions 2 and 3
    entropy = torch.tensor([[0.1, 0.9, 0.8, 0.2]])  # uncertain at 1 and 2
    assert uncertainty_error_overlap(entropy, segmentation, label, threshold=0.5) == pytest.approx(2 * 1 / (2 + 2))
    assert uncertainty_error_overlap(torch.zeros(1, 4), label, label, threshold=0.5) == 1.0
    assert uncertainty_error_overlap(entropy[None], segmentation, label[None], 0.5) == pytest.approx(0.5)
