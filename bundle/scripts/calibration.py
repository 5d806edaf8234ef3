"""Top-label expected calibration error (ECE) as the paper defines it, and the bins of a reliability diagram.

Zhao et al. (MICCAI 2022) measure calibration on the voxels inside the bounding box of all foreground classes of
a volume: the voxels are split into 100 equal-width bins by their confidence (the probability of the predicted
class), ``B_s`` holding the confidences in ``((s - 1)%, s%]``, and

    ECE = sum_s |B_s| / N |conf(B_s) - acc(B_s)|

per volume, then averaged over the volumes. MONAI's ``CalibrationErrorMetric`` bins every class channel on its
own (a classwise ECE), so this top-label form is written here; on continuous confidences it equals
``torchmetrics``' ``multiclass_calibration_error(..., norm="l1")`` (the test suite checks it). The two differ only
for a confidence lying exactly on a bin edge: ``torchmetrics`` closes its bins on the left and keeps a bin of its
own for a confidence of exactly 1, where the paper's bins are closed on the right, so 1.0 falls into (99%, 100%].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from scripts.uncertainty import foreground_box

__all__ = ["CalibrationBins", "calibration_bins", "expected_calibration_error", "volume_calibration"]


@dataclass
class CalibrationBins:
    """Per-bin voxel count, sum of confidences and number of correct voxels; sums, so that the bins of many
    volumes add up into one reliability diagram (the ECE of the pooled voxels) with ``+=``."""

    count: torch.Tensor
    confidence_sum: torch.Tensor
    correct_sum: torch.Tensor

    @classmethod
    def empty(cls, n_bins: int = 100) -> CalibrationBins:
        zeros = torch.zeros(n_bins, dtype=torch.float64)
        return cls(zeros.clone(), zeros.clone(), zeros.clone())

    @property
    def n_bins(self) -> int:
        return self.count.numel()

    def __iadd__(self, other: CalibrationBins) -> CalibrationBins:
        self.count += other.count
        self.confidence_sum += other.confidence_sum
        self.correct_sum += other.correct_sum
        return self

    def ece(self) -> float:
        """``sum_s |B_s| / N |conf(B_s) - acc(B_s)|``, written as ``sum_s |sum conf - sum correct| / N``."""
        total = self.count.sum()
        if total == 0:
            return float("nan")
        return float((self.confidence_sum - self.correct_sum).abs().sum() / total)

    def accuracy(self) -> torch.Tensor:
        """Accuracy of each bin (NaN where a bin is empty)."""
        return self.correct_sum / self.count

    def mean_confidence(self) -> torch.Tensor:
        """Mean confidence of each bin (NaN where a bin is empty)."""
        return self.confidence_sum / self.count

    def coarsen(self, factor: int) -> CalibrationBins:
        """Merge every ``factor`` neighbouring bins (e.g. 100 -> 20 for a readable diagram); sums stay exact."""
        if self.n_bins % factor:
            raise ValueError(f"cannot merge {self.n_bins} bins by {factor}.")
        return CalibrationBins(
            *(t.reshape(-1, factor).sum(1) for t in (self.count, self.confidence_sum, self.correct_sum))
        )


def calibration_bins(confidence: torch.Tensor, correct: torch.Tensor, n_bins: int = 100) -> CalibrationBins:
    """Bin ``confidence`` (any shape, values in [0, 1]) into ``n_bins`` equal-width bins closed on the right,
    ``((s - 1) / n_bins, s / n_bins]``, together with ``correct`` (same shape, bool or 0/1)."""
    confidence = confidence.detach().reshape(-1).double().cpu()
    correct = correct.detach().reshape(-1).double().cpu()
    edges = torch.linspace(0.0, 1.0, n_bins + 1, dtype=torch.float64)
    index = (torch.bucketize(confidence, edges, right=False) - 1).clamp(0, n_bins - 1)
    bins = CalibrationBins.empty(n_bins)
    bins.count.index_add_(0, index, torch.ones_like(confidence))
    bins.confidence_sum.index_add_(0, index, confidence)
    bins.correct_sum.index_add_(0, index, correct)
    return bins


def expected_calibration_error(probabilities: torch.Tensor, target: torch.Tensor, n_bins: int = 100) -> float:
    """Top-label ECE (a fraction, not percent) of ``probabilities`` (N, C) against integer ``target`` (N,)."""
    confidence, prediction = probabilities.max(dim=1)
    return calibration_bins(confidence, prediction == target, n_bins).ece()


def volume_calibration(probabilities: torch.Tensor, label: torch.Tensor, n_bins: int = 100) -> CalibrationBins:
    """The calibration bins of one volume, over the voxels in the bounding box of every foreground voxel of the
    reference ``label`` and of the prediction (the argmax of ``probabilities``), as in the paper.

    Args:
        probabilities: (C, *spatial) class probabilities.
        label: (*spatial) or (1, *spatial) reference labels.
        n_bins: number of equal-width confidence bins (100 in the paper).

    The ECE of the volume is ``volume_calibration(...).ece()``. A volume with no foreground in either map is
    measured over all its voxels.
    """
    label = label.reshape(probabilities.shape[1:])
    confidence, prediction = probabilities.max(dim=0)
    box = foreground_box(label, prediction)
    if box is not None:
        confidence, prediction, label = confidence[box], prediction[box], label[box]
    return calibration_bins(confidence, prediction == label.long(), n_bins)
