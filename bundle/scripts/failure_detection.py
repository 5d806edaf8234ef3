"""How well an uncertainty estimate tells good segmentations from bad ones.

* Per volume: the area under the risk-coverage curve (AURC) of the volume uncertainty score against the risk
  ``1 - Dice``, and the AUROC of the score for flagging volumes whose mean Dice is below a threshold. A useful
  score lets a pipeline send the uncertain volumes to a human and keep the rest.
* Per voxel: the uncertainty-error overlap, the Dice between the voxels whose entropy exceeds a threshold and the
  voxels the segmentation gets wrong (Jungo and Reyes, 2019): whether the map points at the errors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

__all__ = ["aurc", "failure_auroc", "risk_coverage", "uncertainty_error_overlap"]


def risk_coverage(uncertainty: Sequence[float], risk: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """The risk-coverage curve: keeping the ``k`` most certain of ``N`` volumes (coverage ``k / N``), the mean
    risk of the kept volumes, for ``k = 1..N``.

    Volumes with the same uncertainty cannot be told apart, so each of them counts with the mean risk of its tie
    group: this is the curve's expected value over the orders in which the ties could be broken.
    """
    u, r = np.asarray(uncertainty, dtype=float), np.asarray(risk, dtype=float)
    if u.shape != r.shape or u.ndim != 1 or u.size == 0:
        raise ValueError(f"need two equally long, non-empty 1D sequences, got shapes {u.shape} and {r.shape}.")
    order = np.argsort(u, kind="stable")
    u, r = u[order], r[order]
    _, group, counts = np.unique(u, return_inverse=True, return_counts=True)
    tied = np.bincount(group, weights=r) / counts
    r = tied[group]
    k = np.arange(1, u.size + 1)
    return k / u.size, np.cumsum(r) / k


def aurc(uncertainty: Sequence[float], risk: Sequence[float]) -> float:
    """Area under the risk-coverage curve, the mean of the curve over the ``N`` coverages (lower is better; a
    score that ranks the volumes exactly by their risk reaches the lowest value the risks allow)."""
    return float(risk_coverage(uncertainty, risk)[1].mean())


def failure_auroc(uncertainty: Sequence[float], dice: Sequence[float], threshold: float = 0.8) -> float:
    """AUROC of ``uncertainty`` for detecting the volumes whose (mean) Dice is below ``threshold``; NaN when all
    volumes fall on one side of the threshold (there is nothing to detect, or nothing to tell it from)."""
    failed = np.asarray(dice, dtype=float) < threshold
    if failed.all() or not failed.any():
        return math.nan
    return float(roc_auc_score(failed, np.asarray(uncertainty, dtype=float)))


def uncertainty_error_overlap(
    entropy: torch.Tensor, segmentation: torch.Tensor, label: torch.Tensor, threshold: float
) -> float:
    """Dice between ``entropy > threshold`` and the error mask ``segmentation != label`` (same spatial shape; a
    leading channel of one is ignored); 1 when the volume has neither errors nor uncertain voxels."""
    uncertain = entropy.squeeze() > threshold
    error = segmentation.squeeze() != label.squeeze()
    if uncertain.shape != error.shape:
        raise ValueError(f"entropy {tuple(uncertain.shape)} and error mask {tuple(error.shape)} differ in shape.")
    total = uncertain.sum() + error.sum()
    return 1.0 if total == 0 else float(2 * (uncertain & error).sum() / total)
