"""What the benchmarks share: the bundle on the path, the benchmark volume, interleaved timing and peak memory.

Timings on a shared machine drift with the load of other jobs, so every benchmark measures its variants in
rounds (one of each per round, in turn) and reports medians and ratios to a unit measured in the same rounds.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "bundle"
if str(BUNDLE) not in sys.path:
    sys.path.insert(0, str(BUNDLE))

from monai.bundle import ConfigParser  # noqa: E402

from scripts.synthetic import synthesize_subject  # noqa: E402

__all__ = [
    "BUNDLE",
    "ROOT",
    "benchmark_volume",
    "bundle_parser",
    "interleaved",
    "peak_rss_mb",
    "summarise",
    "write_json",
]


def benchmark_volume(folder: Path, matrix: int = 224, slices: int = 10, spacing: float = 1.5, seed: int = 0
                     ) -> tuple[Path, Path]:
    """The issue's benchmark volume: a synthetic in-domain short-axis stack of ``slices`` slices of
    ``matrix`` x ``matrix`` voxels at ``spacing`` mm (the bundle's target spacing, so the network sees exactly
    ``matrix`` x ``matrix``), and its label. Written once into ``folder``; returns (image, label)."""
    image_path, label_path = folder / "volume" / "benchmark.nii.gz", folder / "benchmark_label.nii.gz"
    if image_path.is_file() and label_path.is_file():
        return image_path, label_path
    rng = np.random.default_rng(seed)
    while True:  # a subject with enough slices; the stack is cut to its central `slices`
        subject = synthesize_subject(rng, "in_domain", matrix)
        if subject.images["ED"].shape[2] >= slices:
            break
    start = (subject.images["ED"].shape[2] - slices) // 2
    affine = subject.affine.copy()
    affine[:3, :2] *= spacing / np.linalg.norm(affine[:3, :2], axis=0)
    image_path.parent.mkdir(parents=True, exist_ok=True)
    for array, path in ((subject.images["ED"], image_path), (subject.labels["ED"], label_path)):
        nib.save(nib.Nifti1Image(np.ascontiguousarray(array[..., start:start + slices]), affine), str(path))
    return image_path, label_path


def bundle_parser(configs: Sequence[str | Path], **overrides: Any) -> ConfigParser:
    """The bundle's configs (names under ``bundle/configs`` or paths), merged in order, with ``overrides``."""
    files = [str(c) if Path(c).is_file() else str(BUNDLE / "configs" / c) for c in configs]
    parser = ConfigParser(ConfigParser.load_config_files(files))
    parser.update({"bundle_root": str(BUNDLE), **overrides})
    return parser


def interleaved(variants: Mapping[str, Callable[[], Any]], rounds: int, log: Callable[[str], None] = print
                ) -> dict[str, list[float]]:
    """Seconds of each variant, measured ``rounds`` times in turn (variant A, B, C, A, B, C, ...)."""
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(rounds):
        for name, run in variants.items():
            start = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - start)
            log(f"round {r + 1}/{rounds} {name}: {seconds[name][-1]:.2f} s")
    return seconds


def summarise(seconds: Mapping[str, Sequence[float]], unit: str) -> dict[str, dict[str, float]]:
    """Median seconds of each variant and its ratio to the median of ``unit``; also the ratio's spread, the
    median of the per-round ratios (each round's variant over the same round's unit)."""
    base = statistics.median(seconds[unit])
    out = {}
    for name, values in seconds.items():
        per_round = [v / u for v, u in zip(values, seconds[unit], strict=False)]
        out[name] = {"median_s": statistics.median(values), "ratio": statistics.median(values) / base,
                     "ratio_per_round_median": statistics.median(per_round), "rounds": len(values)}
    return out


def peak_rss_mb() -> float:
    """The process's peak resident set size so far (MB).

    Linux's ``VmHWM`` starts afresh when a process executes a new program; ``ru_maxrss`` does not (a child started
    by a 6 GB benchmark process would report 6 GB before it has done anything), so it is only the fallback."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def write_json(path: Path, payload: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1, default=str))
    print(f"results written to {path}")


def threads_from_env(default: int = 2) -> int:
    return int(os.environ.get("OMP_NUM_THREADS", default))
