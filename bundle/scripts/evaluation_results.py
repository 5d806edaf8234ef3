"""The evaluation's results folder read back: per-volume rows (``cases.csv``) and the run's ``summary.json``, with
the lookups the report's tables and figures share."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DOMAIN_NAMES", "STRUCTURES", "Results", "domain_name"]

STRUCTURES = ("RV", "MYO", "LV")
DOMAIN_NAMES = {
    "in_domain": "In-domain (ID)",
    "vendor_b": "Vendor B (OOD)",
    "vendor_c": "Vendor C (OOD)",
    "acdc": "ACDC (ID)",
    "mnms_vendor_A": "M&Ms vendor A (OOD)",
    "mnms_vendor_B": "M&Ms vendor B (OOD)",
    "mnms_vendor_C": "M&Ms vendor C (OOD)",
    "mnms_vendor_D": "M&Ms vendor D (OOD)",
}


class Results:
    """The evaluation's results folder, read once, with the lookups the tables need."""

    def __init__(self, results_dir: str | Path) -> None:
        self.dir = Path(results_dir)
        self.summary = json.loads((self.dir / "summary.json").read_text())
        with open(self.dir / "cases.csv") as f:
            self.rows = [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(f)]
        self.domains: list[str] = self.summary["domains"]
        self.methods = [m for m in self.summary["methods"] if any(r["method"] == m for r in self.rows)]
        self.settings = self.summary["settings"]

    def label(self, method: str) -> str:
        info = self.summary["methods"][method]
        label = info["label"]
        if method == "ts_fixed":
            label = f"Temp. scaling (τ = {self.settings['fixed_temperature']:g})"
        elif method == "ts_fitted" and self.summary.get("temperature"):
            label = f"Temp. scaling (τ fitted = {self.summary['temperature']:.2f})"
        elif method.startswith(("ckpt", "deep")) and info.get("members"):
            label = (
                f"{label[:-1]}, n = {info['members']})" if label.endswith(")") else f"{label} (n = {info['members']})"
            )
        return label

    def values(self, method: str, metric: str, domain: str | None = None) -> np.ndarray:
        return np.array(
            [r[metric] for r in self.rows if r["method"] == method and (domain is None or r["domain"] == domain)],
            dtype=float,
        )

    def mean(self, method: str, metric: str, domain: str | None = None) -> float:
        v = self.values(method, metric, domain)
        v = v[np.isfinite(v)]
        return float(v.mean()) if v.size else math.nan


def _number(value: str) -> Any:
    """CSV cells back to numbers; an empty cell (a metric a method does not have) is NaN."""
    if value == "":
        return math.nan
    try:
        return float(value)
    except ValueError:
        return value


def domain_name(name: str) -> str:
    """The name a table or figure gives a domain."""
    return DOMAIN_NAMES.get(name, name)
