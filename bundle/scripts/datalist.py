"""The datalist shared by training, evaluation, inference and the MONAI Label app.

One JSON file, ``datalist.json``, in the Medical Segmentation Decathlon form that
:func:`monai.data.load_decathlon_datalist` reads, with three splits::

    {"labels": {"0": "background", "1": "RV", "2": "MYO", "3": "LV"},
     "training": [{"image": ..., "label": ..., "case": "<subject>_ED", "subject": ..., "phase": "ED",
                   "domain": "in_domain"}, ...],
     "validation": [...],
     "test": [...]}

Paths inside the datalist's folder are stored relative to it (the folder can be moved), others absolute.
Splits are made by subject, so the ED and ES frames of one heart never sit on both sides of a split.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
from monai.data import load_decathlon_datalist

SPLITS = ("training", "validation", "test")
PHASES = ("ED", "ES")
LABEL_NAMES = {0: "background", 1: "RV", 2: "MYO", 3: "LV"}
PATH_KEYS = ("image", "label")


def datalist_entry(image: str | Path, label: str | Path, subject: str, phase: str, domain: str) -> dict[str, str]:
    """One datalist item: an image frame, its reference label and where it comes from.

    ``case`` (``<subject>_<phase>``) names the frame in reports; ``domain`` lets evaluation group
    results by acquisition style (in-domain versus each shifted vendor).
    """
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}, got {phase!r}.")
    return {
        "image": str(image),
        "label": str(label),
        "case": f"{subject}_{phase}",
        "subject": subject,
        "phase": phase,
        "domain": domain,
    }


def split_subjects(
    subjects: Iterable[str], fractions: Sequence[float] = (0.7, 0.1, 0.2), seed: int = 0
) -> dict[str, list[str]]:
    """Assign subjects to ``training``/``validation``/``test`` deterministically.

    The subjects are sorted first, so the split depends only on the set of names and ``seed``, not
    on the order a file system lists them in. Each split with a positive fraction gets at least one
    subject when there are enough subjects.
    """
    names = sorted(set(subjects))
    if len(fractions) != len(SPLITS) or any(f < 0 for f in fractions) or sum(fractions) <= 0:
        raise ValueError(f"fractions must be three non-negative numbers (training, validation, test), got {fractions}.")
    order = np.random.default_rng(seed).permutation(len(names))
    shares = np.asarray(fractions, dtype=float) / sum(fractions)
    counts = np.floor(shares * len(names)).astype(int)
    for i in np.argsort(-(shares * len(names) - counts))[: len(names) - counts.sum()]:
        counts[i] += 1  # largest remainders first
    for i in np.flatnonzero((counts == 0) & (shares > 0)):
        donor = int(np.argmax(counts))
        if counts[donor] > 1:
            counts[donor] -= 1
            counts[i] += 1
    bounds = np.concatenate([[0], np.cumsum(counts)])
    return {s: [names[k] for k in sorted(order[bounds[i] : bounds[i + 1]])] for i, s in enumerate(SPLITS)}


def write_datalist(
    path: str | Path, splits: Mapping[str, Sequence[Mapping[str, str]]], description: str = ""
) -> Path:
    """Write ``splits`` (split name -> entries) as a datalist JSON file and return its path.

    Image and label paths under the datalist's folder are written relative to it; the rest absolute.
    Every split of :data:`SPLITS` is written, empty when absent, so readers find all keys.
    """
    path = Path(path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    unknown = set(splits) - set(SPLITS)
    if unknown:
        raise ValueError(f"Unknown split(s) {sorted(unknown)} for {path}; use {SPLITS}.")

    def portable(p: str) -> str:
        p = os.path.abspath(p)
        return os.path.relpath(p, path.parent) if Path(p).is_relative_to(path.parent) else p

    content: dict[str, object] = {"description": description, "labels": {str(k): v for k, v in LABEL_NAMES.items()}}
    for split in SPLITS:
        entries = splits.get(split, [])
        content[split] = [{k: portable(v) if k in PATH_KEYS else v for k, v in e.items()} for e in entries]
    path.write_text(json.dumps(content, indent=1) + "\n")
    return path


def load_datalist(
    path: str | Path, split: str, check_files: bool = True, allow_empty: bool = False
) -> list[dict[str, str]]:
    """Read one split of a datalist with absolute image and label paths.

    A thin layer over :func:`monai.data.load_decathlon_datalist` that fails early, naming the file,
    the problem and the fix, when the datalist is missing, the split is empty or (``check_files``)
    an image or label it lists is gone; and that keeps the non-path fields (``subject``, ``domain``,
    ...) as written, where MONAI's loader would turn a value that happens to name a folder into a path.
    ``allow_empty`` returns ``[]`` for an empty split instead of failing (for reports over all splits).
    """
    path = Path(path)
    fix = "create it with `python -m scripts.prepare_data synthetic --output DIR` (or `acdc`, `mnms`, `real`)"
    if path.is_dir():
        path = path / "datalist.json"
    if not path.is_file():
        raise FileNotFoundError(f"Datalist {path} does not exist; {fix}.")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"Datalist {path} is not valid JSON ({e}); {fix}.") from e
    if split not in raw:
        raise KeyError(f"Datalist {path} has no {split!r} split (it has {sorted(raw)}); {fix}.")
    if not raw[split]:
        if allow_empty:
            return []
        raise ValueError(f"Split {split!r} of datalist {path} is empty; {fix} with subjects in that split.")
    entries = load_decathlon_datalist(path, is_segmentation=True, data_list_key=split, base_dir=path.parent)
    for entry, original in zip(entries, raw[split], strict=True):
        entry.update({k: v for k, v in original.items() if k not in PATH_KEYS})
    if check_files:
        missing = [e[k] for e in entries for k in PATH_KEYS if k in e and not os.path.exists(e[k])]
        if missing:
            raise FileNotFoundError(
                f"Datalist {path} lists {len(missing)} missing file(s), first {missing[0]}; the dataset folder was "
                f"moved or deleted: regenerate it ({fix}) or restore the files."
            )
    return entries
