"""Infer task: where the ensemble is unsure, as a labelmap of named entropy levels (e.g. low / medium / high).

Why: neither the stock 3D Slicer plugin nor the stock OHIF panel shows a float volume returned by an infer task, but
both show a labelmap as coloured, named segments. Quantising the entropy (bits) into a few levels therefore puts the
uncertainty in front of the reader with no plugin change; certain voxels (below the first level) stay background.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import torch

from lib.bundle import CardiacBundle
from lib.infers.segmentation_uncertainty import UNCERTAINTY, SegmentationUncertainty
from lib.served_ensemble import EnsembleRegistry

__all__ = ["DEFAULT_LEVELS", "QuantiseEntropyd", "UncertaintyOverlay", "parse_levels"]

LEVEL = "uncertainty_level"
DEFAULT_LEVELS = {"low": 0.1, "medium": 0.5, "high": 1.0}  # level name -> lowest entropy (bits) of that level


def parse_levels(text: str) -> dict[str, float]:
    """``"low:0.1,medium:0.5,high:1.0"`` -> ``{"low": 0.1, ...}``: level names with increasing lower bounds in
    bits, within (0, 2] (the entropy of 4 classes is at most 2 bits)."""
    try:
        levels = {name.strip(): float(bound) for name, bound in (item.split(":") for item in text.split(","))}
    except ValueError as e:
        raise ValueError(f"uncertainty levels {text!r} are not 'name:bits,name:bits,...' ({e}).") from e
    bounds = list(levels.values())
    if not bounds or any(b <= 0 or b > 2 for b in bounds) or bounds != sorted(set(bounds)):
        raise ValueError(f"uncertainty levels {text!r} need increasing lower bounds within (0, 2] bits.")
    return levels


class QuantiseEntropyd:
    """Map the entropy (channel-first, bits) to level indices: 0 below the first bound, ``k`` from the ``k``-th
    bound on. The output keeps the entropy's geometry (it is written in the image's space)."""

    def __init__(self, bounds: Sequence[float], entropy_key: str = UNCERTAINTY, output_key: str = LEVEL) -> None:
        self.bounds = torch.tensor(list(bounds), dtype=torch.float32)
        self.entropy_key = entropy_key
        self.output_key = output_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        entropy = d[self.entropy_key][0]
        d[self.output_key] = torch.bucketize(entropy.float(), self.bounds, right=True).to(torch.uint8)
        return d


class UncertaintyOverlay(SegmentationUncertainty):
    """The entropy of the checkpoint ensemble as named levels (labels ``"<level> uncertainty"`` = 1, 2, ...).

    It runs the same ensemble as :class:`SegmentationUncertainty` and returns the same ``params`` (and entropy map),
    so either task alone gives the reader the scores.
    """

    def __init__(self, bundle: CardiacBundle, registry: EnsembleRegistry, levels: Mapping[str, float] = DEFAULT_LEVELS):
        super().__init__(
            bundle,
            registry,
            description="Where the checkpoint ensemble is unsure: entropy quantised into "
            + ", ".join(f"{name} (>= {bound} bits)" for name, bound in levels.items()),
            labels={f"{name} uncertainty": i + 1 for i, name in enumerate(levels)},
            output_label_key=LEVEL,
        )
        self.bounds = list(levels.values())

    def post_transforms(self, data: Mapping[str, Any] | None = None) -> Sequence[Callable]:
        return [*super().post_transforms(data), QuantiseEntropyd(self.bounds)]
