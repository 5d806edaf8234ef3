"""Readers that turn the public ACDC and M&Ms downloads into the project's datalist.

Why: the paper trains on ACDC and tests under a vendor shift on M&Ms; both are licensed downloads the
project cannot ship, so these readers take them as the user unpacked them and produce the same
datalist entries as the synthetic data (see :mod:`scripts.datalist`), with labels in the project's
convention 0 background, 1 RV, 2 MYO, 3 LV.

* ACDC: ``<root>/training/patientNNN/patientNNN_frameXX.nii.gz`` (+ ``_gt``), ED/ES frame numbers in
  ``Info.cfg``; a ``testing/`` folder of the same layout is read too. Labels are already the project's.
  Entries point to the original files.
* M&Ms (2020): ``<code>/<code>_sa.nii.gz`` (4D cine) and ``<code>_sa_gt.nii.gz`` (labelled at ED and ES
  only) anywhere under the root (Training/Labeled, Validation, Testing), and the information CSV with
  ``External code``, ``Vendor``, ``Centre``, ``ED``, ``ES`` (0-based frame indices). The ED and ES frames
  are extracted to NIfTI files, and labels are remapped from M&Ms's 1 LV, 2 MYO, 3 RV.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from scripts.datalist import PHASES, datalist_entry, split_subjects

logger = logging.getLogger(__name__)

MNMS_COLUMNS = ("External code", "Vendor", "Centre", "ED", "ES")
MNMS_TO_PROJECT = np.array([0, 3, 2, 1], dtype=np.uint8)  # M&Ms 1 LV, 2 MYO, 3 RV -> 1 RV, 2 MYO, 3 LV


def _require_dir(path: str | Path, what: str, fix: str) -> Path:
    path = Path(path).expanduser().resolve()
    if not path.is_dir():
        raise FileNotFoundError(f"{what} folder {path} does not exist; {fix}.")
    return path


def read_acdc_info(path: str | Path) -> dict[str, str]:
    """Parse an ACDC ``Info.cfg`` (``ED: 1``, ``ES: 12``, ``Group: DCM``, ...) into a dict of strings."""
    info = {}
    for line in Path(path).read_text().splitlines():
        key, sep, value = line.partition(":")
        if sep:
            info[key.strip()] = value.strip()
    return info


def acdc_cases(acdc_dir: str | Path) -> dict[str, dict[str, tuple[Path, Path]]]:
    """Find every ACDC subject under ``acdc_dir``: subject -> phase -> (image, label) paths.

    Subjects are the folders holding an ``Info.cfg`` (``training/`` and ``testing/``, at any depth),
    so both the original and the re-packaged ACDC archives are read as unpacked.
    """
    fix = "pass the folder that contains ACDC's training/ (and testing/) folders"
    root = _require_dir(acdc_dir, "ACDC", fix)
    cases: dict[str, dict[str, tuple[Path, Path]]] = {}
    for info_file in sorted(root.rglob("Info.cfg")):
        folder, subject = info_file.parent, info_file.parent.name
        if subject in cases:
            raise ValueError(f"ACDC subject {subject} appears twice under {root} ({folder}); keep one copy.")
        info = read_acdc_info(info_file)
        frames = {}
        for phase in PHASES:
            if not info.get(phase, "").isdigit():
                raise ValueError(f"{info_file} has no valid '{phase}: <frame number>' line; restore the original file.")
            stem = folder / f"{subject}_frame{int(info[phase]):02d}"
            image, label = stem.with_name(stem.name + ".nii.gz"), stem.with_name(stem.name + "_gt.nii.gz")
            for path in (image, label):
                if not path.is_file():
                    raise FileNotFoundError(
                        f"{info_file} names {phase} frame {info[phase]} but {path} is missing; "
                        "restore the subject folder from the ACDC archive or delete it."
                    )
            _check_same_shape(image, label, nib.load(image).shape, nib.load(label).shape)
            frames[phase] = (image, label)
        cases[subject] = frames
    if not cases:
        raise FileNotFoundError(f"No ACDC subject (a folder with Info.cfg) found under {root}; {fix}.")
    return cases


def acdc_datalist(
    acdc_dir: str | Path, fractions: Sequence[float] = (0.7, 0.1, 0.2), seed: int = 0, domain: str = "acdc"
) -> dict[str, list[dict[str, str]]]:
    """ACDC split by subject into training/validation/test (deterministic in ``seed``), pointing to the originals."""
    cases = acdc_cases(acdc_dir)
    splits = split_subjects(cases, fractions, seed)
    return {
        split: [datalist_entry(*cases[s][p], s, p, domain) for s in subjects for p in PHASES]
        for split, subjects in splits.items()
    }


def find_mnms_csv(mnms_dir: str | Path) -> Path:
    """The M&Ms information CSV under ``mnms_dir``: the one CSV (at any depth) with the needed columns."""
    root = _require_dir(mnms_dir, "M&Ms", "pass the folder of the unpacked M&Ms OpenDataset")
    candidates = sorted(root.rglob("*.csv"))
    with_code = [p for p in candidates if "External code" in _csv_header(p)]
    if not with_code:
        raise FileNotFoundError(
            f"No M&Ms information CSV (a .csv with an 'External code' column, e.g. "
            f"211230_M&Ms_Dataset_information_diagnosis_opendataset.csv) under {root}; put it in that folder."
        )
    return with_code[-1]  # the newest of dated names such as 201014_... and 211230_...


def _csv_header(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        return [c.strip() for c in next(csv.reader(f), [])]


def read_mnms_info(csv_path: str | Path) -> dict[str, dict[str, str | int]]:
    """Read the M&Ms CSV: code -> {"vendor", "centre", "ED", "ES"} with 0-based frame indices."""
    csv_path = Path(csv_path)
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        reader.fieldnames = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in MNMS_COLUMNS if c not in reader.fieldnames]
        if missing:
            raise ValueError(
                f"M&Ms CSV {csv_path} lacks column(s) {missing} (it has {reader.fieldnames}); "
                "use the information CSV shipped with the M&Ms OpenDataset."
            )
        info = {}
        for line, row in enumerate(reader, start=2):
            code = row["External code"].strip()
            if not code:
                continue
            try:
                ed, es = int(row["ED"]), int(row["ES"])
            except ValueError as e:
                raise ValueError(f"M&Ms CSV {csv_path} line {line}: ED/ES of {code} are not integers ({e}).") from e
            info[code] = {"vendor": row["Vendor"].strip(), "centre": row["Centre"].strip(), "ED": ed, "ES": es}
    return info


def remap_mnms_labels(label: np.ndarray) -> np.ndarray:
    """M&Ms labels (1 LV, 2 MYO, 3 RV) to the project's (1 RV, 2 MYO, 3 LV), as uint8."""
    values = np.asarray(label)
    rounded = np.rint(values).astype(np.int64)
    if rounded.min(initial=0) < 0 or rounded.max(initial=0) > 3 or not np.allclose(values, rounded):
        raise ValueError(f"M&Ms labels must be 0..3, found values {np.unique(values)[:10]}.")
    return MNMS_TO_PROJECT[rounded]


def _check_same_shape(image: Path, label: Path, image_shape: tuple, label_shape: tuple) -> None:
    if tuple(image_shape) != tuple(label_shape):
        raise ValueError(
            f"Image {image} has shape {tuple(image_shape)} but its label {label} has {tuple(label_shape)}; "
            "the pair must cover the same voxels: restore both files from the original archive."
        )


def _frame_like(source: nib.Nifti1Image, data: np.ndarray) -> nib.Nifti1Image:
    """A 3D image of ``data`` with the geometry (affine, qform/sform codes, units) of the 4D ``source``."""
    if data.dtype.kind == "f":
        data = data.astype(np.float32)
    header = source.header.copy()
    header.set_data_dtype(data.dtype)
    return nib.Nifti1Image(data, source.affine, header)


def extract_mnms(
    mnms_dir: str | Path, output_dir: str | Path, vendors: Sequence[str] | None = ("A", "B")
) -> list[dict[str, str]]:
    """Extract the labelled ED and ES frames of M&Ms subjects and return their (test) datalist entries.

    Subject folders are found at any depth under ``mnms_dir``; folders without ``<code>_sa_gt.nii.gz``
    (the unlabelled training subjects) are skipped. Only subjects of ``vendors`` (None: all) are kept,
    with domain ``mnms_vendor_<V>``. Frames are written to ``<output_dir>/<code>/<code>_<ED|ES>[_gt].nii.gz``
    with the spatial affine of the 4D file; labels are remapped to the project's convention.
    """
    root = _require_dir(mnms_dir, "M&Ms", "pass the folder of the unpacked M&Ms OpenDataset")
    csv_path = find_mnms_csv(root)
    info = read_mnms_info(csv_path)
    output_dir = Path(output_dir).resolve()
    wanted = None if vendors is None else {v.upper() for v in vendors}
    entries: list[dict[str, str]] = []
    found = 0
    for image_path in sorted(root.rglob("*_sa.nii.gz")):
        code = image_path.name[: -len("_sa.nii.gz")]
        label_path = image_path.with_name(f"{code}_sa_gt.nii.gz")
        if not label_path.is_file():
            continue
        found += 1
        if code not in info:
            logger.warning("M&Ms subject %s (%s) is not in %s; skipped.", code, image_path.parent, csv_path)
            continue
        vendor = str(info[code]["vendor"]).upper()
        if wanted is not None and vendor not in wanted:
            continue
        image, label = nib.load(image_path), nib.load(label_path)
        _check_same_shape(image_path, label_path, image.shape, label.shape)
        if len(image.shape) != 4:
            raise ValueError(f"M&Ms image {image_path} has shape {image.shape}, expected 4D (x, y, z, t) cine.")
        folder = output_dir / code
        folder.mkdir(parents=True, exist_ok=True)
        for phase in PHASES:
            frame = int(info[code][phase])
            if not 0 <= frame < image.shape[3]:
                raise ValueError(
                    f"{csv_path} gives {phase} frame {frame} for {code}, but {image_path} has frames "
                    f"0..{image.shape[3] - 1}; M&Ms frame indices are 0-based: check the CSV row."
                )
            seg = np.asarray(label.dataobj[..., frame])
            if not seg.any():
                raise ValueError(
                    f"{label_path} has no label at {phase} frame {frame} given by {csv_path}; "
                    "the CSV row and the files do not match."
                )
            out_image = folder / f"{code}_{phase}.nii.gz"
            out_label = folder / f"{code}_{phase}_gt.nii.gz"
            nib.save(_frame_like(image, np.asarray(image.dataobj[..., frame])), out_image)
            nib.save(_frame_like(label, remap_mnms_labels(seg)), out_label)
            entries.append(datalist_entry(out_image, out_label, code, phase, f"mnms_vendor_{vendor}"))
    if not found:
        raise FileNotFoundError(
            f"No labelled M&Ms subject (<code>/<code>_sa.nii.gz with <code>_sa_gt.nii.gz) under {root}; "
            "pass the folder of the unpacked OpenDataset (with Training/Labeled, Validation, Testing)."
        )
    if not entries:
        raise ValueError(f"No labelled M&Ms subject of vendor(s) {sorted(wanted or [])} in {root} and {csv_path}.")
    return entries
