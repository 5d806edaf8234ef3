"""Checks that stop bad input early with a message naming the file, the problem and the fix."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

__all__ = ["ACDC_LABELS", "InputError", "ValidateLabelsd", "ValidateStackd"]

ACDC_LABELS = {0: "background", 1: "RV", 2: "MYO", 3: "LV"}


class InputError(ValueError):
    """An input image or label that the model cannot use as it is."""


def _source(data: Mapping[Hashable, Any], key: Hashable) -> str:
    value = data[key]
    meta = getattr(value, "meta", {})
    return str(meta.get("filename_or_obj") or key)


class ValidateStackd(MapTransform):
    """Require a single-channel 3D short-axis stack (channel-first: ``(1, H, W, S)``).

    A 4D cine (``H, W, S, T``) loads as several channels or four spatial dimensions and a 2D slice as too few;
    both would otherwise fail deep inside the network or, worse, run on the wrong axis.
    """

    def __init__(self, keys: KeysCollection, min_slices: int = 1, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.min_slices = min_slices

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            shape = tuple(img.shape)
            name = _source(d, key)
            if img.ndim == 5 or (img.ndim == 4 and shape[0] > 1):
                raise InputError(
                    f"{name}: image of shape {shape[1:] if img.ndim == 5 else shape} looks 4D (a cine series), but the "
                    "model expects one 3D short-axis stack (H, W, slices). Extract one frame first, e.g. the ED or ES "
                    "frame: nibabel.load(path).slicer[..., t], or prepare the data with scripts.prepare_data."
                )
            if img.ndim != 4:
                raise InputError(
                    f"{name}: image of shape {shape[1:]} is {img.ndim - 1}D, but the model expects a 3D short-axis "
                    "stack (H, W, slices). Save a single slice as a stack of one (shape H x W x 1)."
                )
            if shape[-1] < self.min_slices or min(shape[1:3]) < 8:
                raise InputError(
                    f"{name}: stack of shape {shape[1:]} is too small (need at least {self.min_slices} slice(s) of "
                    "8 x 8 pixels or more). Check that the slice axis is the last one."
                )
            if not torch.isfinite(img).all():
                raise InputError(f"{name}: image contains NaN or infinite values. Repair or re-export the file.")
        return d


class ValidateLabelsd(MapTransform):
    """Require label values in ``allowed`` (ACDC: 0 background, 1 RV, 2 MYO, 3 LV) and the image's shape.

    Training on a label file with other values (an M&Ms file that was not remapped, a float mask) would teach the
    network the wrong classes without any error.
    """

    def __init__(
        self,
        keys: KeysCollection,
        image_key: str | None = "image",
        allowed: Sequence[int] = tuple(ACDC_LABELS),
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.image_key = image_key
        self.allowed = set(allowed)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            label = d[key]
            name = _source(d, key)
            values = {int(v) if float(v).is_integer() else v for v in torch.unique(label).tolist()}
            if not values <= self.allowed:
                bad = sorted(values - self.allowed)[:8]
                raise InputError(
                    f"{name}: label values {bad} are outside {sorted(self.allowed)} "
                    f"({', '.join(f'{k} {v}' for k, v in ACDC_LABELS.items())}). Remap the labels to the ACDC "
                    "convention (M&Ms uses 1 LV, 2 MYO, 3 RV: scripts.prepare_data mnms remaps it)."
                )
            if self.image_key is not None and self.image_key in d and d[self.image_key].shape[1:] != label.shape[1:]:
                raise InputError(
                    f"{name}: label shape {tuple(label.shape[1:])} differs from its image's "
                    f"{tuple(d[self.image_key].shape[1:])} ({_source(d, self.image_key)}). "
                    "Pair each image with its own label."
                )
        return d
