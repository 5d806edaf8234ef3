"""Which cases an inference run reads: image files, DICOM series folders, or a datalist split."""

from __future__ import annotations

from pathlib import Path

from scripts.datalist import load_datalist
from scripts.input_checks import InputError

__all__ = ["IMAGE_SUFFIXES", "is_dicom_file", "list_inputs"]

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")


def is_dicom_file(path: Path) -> bool:
    """A DICOM Part 10 file: 128 bytes of preamble, then ``DICM``."""
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:] == b"DICM"
    except OSError:
        return False


def _is_dicom_series(folder: Path) -> bool:
    return folder.is_dir() and any(is_dicom_file(p) for p in sorted(folder.iterdir())[:8] if p.is_file())


def _is_image(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(IMAGE_SUFFIXES) and not path.name.startswith(".")


def list_inputs(input_path: str | Path, split: str = "test") -> list[dict[str, str]]:
    """``[{"image": path}, ...]`` for ``input_path``: one image file, a folder of image files, one DICOM series
    folder, a folder whose sub-folders are DICOM series, or a ``datalist.json`` (then the entries of ``split``,
    labels included, so that the run also reports Dice). Outputs produced by this bundle (``*_seg``,
    ``*_entropy``) in the same folder are skipped, so a folder can be processed in place and re-run."""
    path = Path(input_path)
    if path.is_file() and path.suffix == ".json":
        return load_datalist(path, split)
    if not path.exists():
        raise InputError(
            f"input {path} does not exist. Pass --input_dir with a NIfTI file, a folder of them, "
            "or a DICOM series folder."
        )
    if path.is_file():
        if not (_is_image(path) or is_dicom_file(path)):
            raise InputError(f"input {path} is neither a {'/'.join(IMAGE_SUFFIXES)} image nor a DICOM file.")
        return [{"image": str(path.parent if is_dicom_file(path) else path)}]
    if _is_dicom_series(path):
        return [{"image": str(path)}]
    produced = ("_seg", "_entropy", "_uncertainty")
    images = [
        p
        for p in sorted(path.iterdir())
        if _is_image(p) and not any(p.name.split(".")[0].endswith(s) for s in produced)
    ]
    series = [p for p in sorted(path.iterdir()) if _is_dicom_series(p)]
    if not images and not series:
        raise InputError(
            f"input folder {path} holds no image ({', '.join(IMAGE_SUFFIXES)}) and no DICOM series. "
            "Point --input_dir at the folder that contains the short-axis stacks."
        )
    return [{"image": str(p)} for p in images + series]
