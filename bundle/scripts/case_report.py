"""Per-case uncertainty (and Dice, where a reference exists) of an inference run, logged and written as CSV."""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from monai.metrics import compute_dice
from monai.networks.utils import one_hot
from monai.utils import min_version, optional_import

from scripts.input_checks import ACDC_LABELS
from scripts.uncertainty import structure_entropy, volume_uncertainty

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", "0.4.11", min_version, "Engine", as_type="decorator")

__all__ = ["CaseReport", "case_row"]

STRUCTURES = {k: v for k, v in ACDC_LABELS.items() if k}


def _case_name(meta_source: Any) -> str:
    name = Path(str(meta_source)).name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def case_row(
    segmentation: torch.Tensor, entropy: torch.Tensor, label: torch.Tensor | None = None, review_threshold: float = 0.25
) -> dict[str, Any]:
    """What a reader of the results wants per case: the volume uncertainty score, whether to review the case,
    mean entropy per structure and, when a reference label is given, Dice per structure."""
    score = volume_uncertainty(entropy, segmentation)
    row: dict[str, Any] = {"uncertainty": round(score, 5), "review": score > review_threshold}
    for name, value in structure_entropy(entropy, segmentation, STRUCTURES).items():
        row[f"entropy_{name}"] = round(value, 5) if not math.isnan(value) else ""
    if label is not None:
        pred = one_hot(segmentation.reshape(1, 1, *segmentation.shape[-3:]).long(), len(ACDC_LABELS))
        ref = one_hot(label.reshape(1, 1, *label.shape[-3:]).long(), len(ACDC_LABELS))
        dice = compute_dice(pred, ref, include_background=False, ignore_empty=True)[0]
        for (_, name), value in zip(STRUCTURES.items(), dice.tolist(), strict=True):
            row[f"dice_{name}"] = round(value, 4) if not math.isnan(value) else ""
    return row


class CaseReport:
    """Engine handler: one row per case (``pred`` = segmentation, ``uncertainty`` = entropy, optional ``label``),
    logged as it is made and written to ``csv_path`` at the end of the run."""

    def __init__(self, csv_path: str | Path, review_threshold: float = 0.25, name: str | None = None) -> None:
        self.csv_path = Path(csv_path)
        self.review_threshold = review_threshold
        self.logger = logging.getLogger(name)
        self.rows: list[dict[str, Any]] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, lambda _: self.rows.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        engine.add_event_handler(Events.COMPLETED, self.completed)

    def iteration_completed(self, engine: Engine) -> None:
        # the datalist's extra keys (the domain) stay in the batch; the output holds the engine's keys only
        for case, item in zip(engine.state.batch, engine.state.output, strict=True):
            pred = item["pred"]
            row = {"case": _case_name(pred.meta.get("filename_or_obj", "")), "domain": case.get("domain", "")}
            label = item.get("label")
            row.update(
                case_row(
                    pred.cpu(), item["uncertainty"].cpu(), None if label is None else label.cpu(), self.review_threshold
                )
            )
            self.rows.append(row)
            dice = " ".join(f"{s} {row[f'dice_{s}']}" for s in STRUCTURES.values() if f"dice_{s}" in row)
            self.logger.info(
                f"{row['case']}: uncertainty {row['uncertainty']:.4f} bits"
                + (" (review suggested)" if row["review"] else "")
                + (f" | Dice {dice}" if dice else "")
            )

    def completed(self, engine: Engine) -> None:
        if not self.rows:
            return
        self.csv_path.parent.mkdir(parents=True, exist_ok=True)
        fields = list(dict.fromkeys(k for row in self.rows for k in row))
        with open(self.csv_path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(self.rows)
        self.logger.info(f"per-case summary written to {self.csv_path}")
