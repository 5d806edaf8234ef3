"""Voxel-wise uncertainty of a predictive distribution: entropy (Eq. 3) and its epistemic part."""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

__all__ = [
    "PredictiveUncertaintyd",
    "foreground_box",
    "max_entropy_bits",
    "mutual_information",
    "predictive_entropy",
    "structure_entropy",
    "volume_uncertainty",
]


def predictive_entropy(probabilities: torch.Tensor, dim: int = 0, eps: float = 1e-12) -> torch.Tensor:
    """Entropy in bits of the class distribution along ``dim``: 0 when certain, ``log2(C)`` when uniform.

    Zero probabilities contribute nothing (``0 log 0 = 0``); ``eps`` only guards the logarithm.
    """
    p = probabilities.float()
    return -(p * torch.log2(p.clamp_min(eps))).sum(dim=dim, keepdim=True)


def mutual_information(probabilities: torch.Tensor, expected_entropy: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Epistemic part of the entropy, ``H[E p] - E H[p]`` (bits), from the mean prediction and the members'
    mean entropy: high where the posterior samples disagree, near zero where they agree but are each unsure."""
    return (predictive_entropy(probabilities, dim=dim) - expected_entropy).clamp_min(0.0)


def max_entropy_bits(num_classes: int) -> float:
    return math.log2(num_classes)


def foreground_box(*label_maps: torch.Tensor) -> tuple[slice, ...] | None:
    """The bounding box (spatial slices) of every foreground voxel of all ``label_maps`` (same shape, no
    channel), or ``None`` when all are empty. Calibration and volume scores are measured inside it, as in the
    paper, so that the background that fills most of the image does not dilute them."""
    mask = torch.zeros_like(label_maps[0], dtype=torch.bool)
    for label_map in label_maps:
        mask |= label_map > 0
    if not mask.any():
        return None
    nonzero = mask.nonzero()
    lo, hi = nonzero.min(0).values.tolist(), nonzero.max(0).values.tolist()
    return tuple(slice(a, b + 1) for a, b in zip(lo, hi, strict=True))


def volume_uncertainty(entropy: torch.Tensor, segmentation: torch.Tensor) -> float:
    """One uncertainty score per volume: the mean entropy (bits) inside the predicted heart's bounding box.

    It needs no reference, so it can rank unlabeled images (active learning) and flag likely failures."""
    entropy, segmentation = entropy.squeeze(), segmentation.squeeze()
    box = foreground_box(segmentation)
    if box is None:  # nothing segmented: no heart found is itself a failure to review
        return float(entropy.mean())
    return float(entropy[box].float().mean())


def structure_entropy(entropy: torch.Tensor, segmentation: torch.Tensor, labels: Mapping[int, str]) -> dict[str, float]:
    """Mean entropy (bits) over the voxels predicted as each structure; NaN for a structure not predicted."""
    entropy, segmentation = entropy.squeeze(), segmentation.squeeze()
    return {
        name: float(entropy[segmentation == value].float().mean()) if (segmentation == value).any() else math.nan
        for value, name in labels.items()
    }


class PredictiveUncertaintyd(MapTransform):
    """Add the predictive entropy of ``keys`` (channel-first probabilities) under ``entropy_key``, and, when the
    members' mean entropy is present under ``expected_entropy_key``, the mutual information under ``mi_key``.

    The outputs keep the probabilities' metadata, so they are written in the same geometry as the prediction.
    """

    def __init__(
        self,
        keys: KeysCollection,
        entropy_key: str = "uncertainty",
        expected_entropy_key: str | None = None,
        mi_key: str = "mutual_information",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.entropy_key = entropy_key
        self.expected_entropy_key = expected_entropy_key
        self.mi_key = mi_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            probabilities = d[key]
            entropy = predictive_entropy(probabilities)
            d[self.entropy_key] = entropy
            if self.expected_entropy_key is not None and self.expected_entropy_key in d:
                d[self.mi_key] = (entropy - d[self.expected_entropy_key]).clamp_min(0.0)
        return d
