"""Fast checkpoint-ensemble inference: the heart region after a first pass, and as many members as the mean needs.

Why: the checkpoint ensemble costs one forward pass per member, 30 passes per volume in the paper, and on a CPU that
is half a minute per study with the full-size network. Two facts make most of that work redundant:

* the heart fills a small part of a short-axis field of view (about a tenth of its area at 1.5 mm), and far from it
  every posterior sample says "background" with near certainty; so the first member runs on the whole image and the
  others only on the heart's bounding box (with a margin), found from the first member's prediction;
* posterior samples taken at a constant learning rate are strongly correlated, so the running mean of the members'
  softmax settles long before the 30th member; visiting the members in an order spread over cycles and epochs and
  stopping once adding a member no longer moves the mean keeps the prediction of the full ensemble.

Outside the box the output is the first member's prediction (confident background); inside it is the running mean
over the members used. With ``crop_margin=None`` and ``tolerance=0`` the inferer computes the exact ensemble, member
after member.
"""

from __future__ import annotations

import copy
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from monai.inferers import Inferer, SliceInferer
from scipy import ndimage

from scripts.ensemble import PosteriorEnsemble

__all__ = ["EnsembleRun", "FastEnsembleInferer", "heart_box", "settle_change", "spread_order"]


def _van_der_corput(count: int) -> list[int]:
    """The indices ``0 .. count-1`` in the order of the base-2 van der Corput sequence 1/2, 1/4, 3/4, 1/8, ...
    scaled to the range, so that every prefix is spread evenly over it (``count=8``: 4, 2, 6, 1, 5, 3, 7, 0)."""
    order: list[int] = []
    k = 1
    while len(order) < count:
        bits, fraction, scale = k, 0.0, 0.5
        while bits:
            fraction += scale * (bits & 1)
            bits, scale = bits >> 1, scale / 2
        i = math.floor(fraction * count)
        if i not in order:
            order.append(i)
        k += 1
    return order


def spread_order(cycles: Sequence[int]) -> list[int]:
    """An order of the members (given the cycle of each, in epoch order) in which every prefix is a spread-out
    sub-ensemble: cycles take turns (the last cycle first) and, within a cycle, epochs follow a van der Corput
    sequence. The running mean then approaches the full ensemble's mean as fast as the bank allows."""
    by_cycle: dict[int, list[int]] = {}
    for i, cycle in enumerate(cycles):
        by_cycle.setdefault(cycle, []).append(i)
    queues = [[members[j] for j in _van_der_corput(len(members))] for _, members in sorted(by_cycle.items())][::-1]
    order: list[int] = []
    while any(queues):
        for queue in queues:
            if queue:
                order.append(queue.pop(0))
    return order


def heart_box(
    probabilities: torch.Tensor,
    plane_dims: Sequence[int],
    margin: int,
    multiple: int,
    threshold: float = 0.5,
) -> tuple[slice, ...] | None:
    """The in-plane box around the heart: the largest connected region of the plane in which some slice has a
    voxel whose foreground probability (1 - p(background)) reaches ``threshold``, widened by ``margin`` voxels on
    each side and then to a multiple of ``multiple`` (so the network needs no padding), within the image. ``None``
    when no voxel is foreground.

    Only the largest region counts: a member's scattered false positives far from the heart (a briefly trained
    full-size network has dozens) would otherwise stretch the box over the whole image; the heart's three
    structures touch one another, so they form one region.

    Args:
        probabilities: (B, C, *spatial) class probabilities, channel 0 the background.
        plane_dims: the two spatial dims (0-based, after B and C) of the slices' plane.
        margin: voxels added on each side (context for the network and room for the other members' borders).
        multiple: the box size is rounded up to this (the product of the network's strides).
        threshold: foreground probability that marks a voxel as heart.
    """
    foreground = (1.0 - probabilities[:, 0]) >= threshold  # (B, *spatial)
    if not foreground.any():
        return None
    spatial = foreground.shape[1:]
    plane = sorted(plane_dims)
    projected = foreground.any(dim=0)
    for dim in sorted(set(range(len(spatial))) - set(plane), reverse=True):
        projected = projected.any(dim=dim)
    regions, _ = ndimage.label(projected.cpu().numpy())  # 4-connected, in the plane
    heart = regions == 1 + int(np.argmax(np.bincount(regions.ravel())[1:]))  # label 0 is the background
    box = [slice(None)] * len(spatial)
    for axis, dim in enumerate(plane):
        hit = np.flatnonzero(heart.any(axis=1 - axis))
        lo, hi, size = int(hit[0]) - margin, int(hit[-1]) + 1 + margin, spatial[dim]
        want = min(size, math.ceil((hi - lo) / multiple) * multiple)
        lo = min(max(0, lo - (want - (hi - lo)) // 2), size - want)
        box[dim] = slice(lo, lo + want)
    return tuple(box)


def settle_change(previous: torch.Tensor, current: torch.Tensor) -> float:
    """How much the running mean moved when the last member was added: the largest change of a class
    probability over the voxels, averaged over the slices (B, C, *spatial; the last dim is the slice dim)."""
    change = (current - previous).abs().amax(dim=1)  # (B, *spatial)
    per_slice = change.flatten(1, -2).amax(dim=1)  # (B, slices)
    return float(per_slice.mean())


@dataclass(frozen=True)
class EnsembleRun:
    """What one call of :class:`FastEnsembleInferer` did: the members used (indices into the ensemble, in the
    order they were added) and the in-plane box the later members ran on (``None``: the whole image)."""

    members: tuple[int, ...]
    box: tuple[slice, ...] | None


def _windowed(inferer: SliceInferer, roi_size: Sequence[int]) -> SliceInferer:
    """A copy of ``inferer`` (same batch size, overlap, blending) with another window size."""
    windowed = copy.copy(inferer)
    windowed.roi_size = windowed.orig_roi_size = tuple(roi_size)
    windowed.roi_weight_map = None  # a cached blending map belongs to the old window size
    return windowed


class FastEnsembleInferer(Inferer):
    """Slice-wise inference of a :class:`~scripts.ensemble.PosteriorEnsemble` that spends the member passes where
    they change the result (see the module docstring).

    Any other network (a single model, a one-member ensemble, MC-dropout) goes through ``inferer`` unchanged, so the
    inferer can stand wherever the plain slice inferer stood.

    Args:
        inferer: the slice-wise inferer of the pipeline; it runs the first member on the whole image, and the
            other members on the box with a window of the box's size (or its own, if the box is larger).
        crop_margin: voxels of context around the heart for the members after the first; ``None`` runs every
            member on the whole image.
        foreground_threshold: foreground probability of the first member that marks the heart.
        tolerance: stop adding members once :func:`settle_change` of the running mean is at most this (after
            ``min_members``); 0 uses every member.
        min_members: members always used before the stopping rule applies.
        size_divisible: the box is a multiple of this; default the product of the network's strides (DynUNet's
            ``strides``), else 1.
    """

    def __init__(
        self,
        inferer: SliceInferer,
        crop_margin: int | None = 16,
        foreground_threshold: float = 0.5,
        tolerance: float = 0.0,
        min_members: int = 2,
        size_divisible: int | None = None,
    ) -> None:
        if not isinstance(inferer, SliceInferer):
            raise TypeError(f"FastEnsembleInferer wraps a SliceInferer, got {type(inferer).__name__}.")
        if crop_margin is not None and crop_margin < 0:
            raise ValueError(f"crop_margin must be >= 0 or None, got {crop_margin}.")
        if tolerance < 0 or min_members < 1:
            raise ValueError(f"need tolerance >= 0 and min_members >= 1, got {tolerance} and {min_members}.")
        self.inferer = inferer
        self.crop_margin = crop_margin
        self.foreground_threshold = foreground_threshold
        self.tolerance = tolerance
        self.min_members = min_members
        self.size_divisible = size_divisible
        self._last = threading.local()

    def last_run(self) -> EnsembleRun | None:
        """The members and box of this thread's last ensemble call (``None`` before any)."""
        return getattr(self._last, "run", None)

    def _multiple(self, ensemble: PosteriorEnsemble) -> int:
        if self.size_divisible is not None:
            return self.size_divisible
        strides = getattr(ensemble.network, "strides", None)
        if not strides:
            return 1
        return math.prod(s if isinstance(s, int) else max(s) for s in strides)

    @staticmethod
    def _member(ensemble: PosteriorEnsemble, i: int) -> Callable[[torch.Tensor], Any]:
        """Member ``i`` as a network for the slice inferer: its probabilities, and their entropy (bits) when the
        ensemble reports the expected entropy (blended window by window, as the ensemble's own forward is)."""

        def run(x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
            p = ensemble.member_probabilities(x, i)
            if not ensemble.return_expected_entropy:
                return p
            return p, -(p * torch.log2(p.clamp_min(1e-12))).sum(1, keepdim=True)

        return run

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not isinstance(network, PosteriorEnsemble) or network.num_members == 1:
            return self.inferer(inputs, network, *args, **kwargs)
        cycles = [c.cycle for c in network.checkpoints] if len(network.checkpoints) == network.num_members else []
        order = spread_order(cycles or [0] * network.num_members)
        with torch.no_grad():
            outputs = self.inferer(inputs, self._member(network, order[0]))
            outputs = list(outputs) if isinstance(outputs, tuple | list) else [outputs]
            plane = [d for d in range(inputs.ndim - 2) if d != self.inferer.spatial_dim]
            box, multiple = None, self._multiple(network)
            if self.crop_margin is not None:
                box = heart_box(outputs[0], plane, self.crop_margin, multiple, self.foreground_threshold)
            if box is not None and all(box[d].stop - box[d].start == inputs.shape[2 + d] for d in plane):
                box = None  # the box is the whole image: nothing to save
            region = (slice(None), slice(None), *box) if box is not None else (Ellipsis,)
            crop_inferer = self.inferer
            if box is not None:
                # a window that fits the box, a multiple of the strides (a box cut at the image's border may not
                # be: the sliding window pads it up to the window)
                size = [box[d].stop - box[d].start for d in plane]
                roi = self.inferer.orig_roi_size
                window = [min(r, math.ceil(s / multiple) * multiple) for s, r in zip(size, roi, strict=True)]
                crop_inferer = _windowed(self.inferer, window)
            means = [o[region].clone() for o in outputs]
            used = [order[0]]
            for k, i in enumerate(order[1:], start=2):
                member = crop_inferer(inputs[region], self._member(network, i))
                member = list(member) if isinstance(member, tuple | list) else [member]
                previous = means[0]
                means = [m + (new - m) / k for m, new in zip(means, member, strict=True)]
                used.append(i)
                if self.tolerance > 0 and k >= self.min_members and settle_change(previous, means[0]) <= self.tolerance:
                    break
            for output, mean in zip(outputs, means, strict=True):
                output[region] = mean
        self._last.run = EnsembleRun(tuple(used), box)
        return tuple(outputs) if len(outputs) > 1 else outputs[0]
