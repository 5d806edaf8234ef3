"""The bundle's image loader, with a file that no reader understands reported as bad input that names the fix.

Why: MONAI's ``LoadImaged`` fails on a PDF or a truncated file with a reader-specific error (from ITK, nibabel,
pydicom...); the user needs one clear message, and the app needs one exception type to answer with 415.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

from monai.transforms import LoadImaged

from scripts.input_checks import InputError

__all__ = ["LoadOrExplain", "UnreadableImageError"]


class UnreadableImageError(InputError):
    """A file that no image reader understands (not NIfTI, NRRD, DICOM...)."""


class LoadOrExplain:
    """Wraps a ``LoadImaged``: any failure to read one of its keys' files becomes an :class:`UnreadableImageError`."""

    def __init__(self, load: LoadImaged) -> None:
        self.load = load

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        try:
            return self.load(data)
        except Exception as e:  # every reader failure means the same to the user: not an image we can read
            files = ", ".join(Path(str(data[k])).name for k in self.load.keys if k in data)
            raise UnreadableImageError(
                f"{files} could not be read as an image ({type(e).__name__}: {e}). "
                "Send a 3D short-axis stack as NIfTI (.nii, .nii.gz), NRRD or a DICOM MR series."
            ) from e
