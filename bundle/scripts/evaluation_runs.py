"""The training runs the evaluation compares, each in its own folder: trained when missing, resumed when a run
was killed, reused when complete.

Every run is ``python -m monai.bundle run`` on ``configs/train.json`` (the same CLI a user runs), with the
evaluation's overrides written to ``<run>/train_overrides.json`` and layered last. ``<run>/run.json`` records
what the run was asked to be (the overrides, and fingerprints of the training config and of the dataset); a
folder whose record differs from the request was trained for another setting and is trained again from scratch,
so results never mix two settings.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from monai.bundle import ConfigParser

from scripts.datalist import load_datalist
from scripts.posterior_bank import PosteriorBank
from scripts.training_state import latest_training_state

__all__ = ["RunOutcome", "TrainingRun", "ensure_trained", "plan_runs", "run_status"]

RECORD = "run.json"
Status = Literal["complete", "resumable", "missing", "stale"]


@dataclass(frozen=True)
class TrainingRun:
    """One training of ``train.json``: its folder name, its overrides, and whether it keeps a posterior bank."""

    name: str
    overrides: Mapping[str, Any]
    keeps_bank: bool = False


@dataclass
class RunOutcome:
    """What happened to a run in this evaluation: reused, trained or resumed (with the seconds it took), or failed."""

    directory: Path
    action: str
    seconds: float = 0.0
    error: str | None = None
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None


def plan_runs(
    seed: int, poly_schedule: Mapping[str, Any], mc_dropout_p: float, deep_ensemble_seeds: Sequence[int]
) -> list[TrainingRun]:
    """The runs behind the compared methods.

    * ``cyclic``: the paper's schedule (Eq. 4 as printed, denominator ``T``); its last checkpoint is Vanilla (also
      with temperature scaling), its last cycle's bank gives SWA, its bank the checkpoint ensembles. It records
      one layer's weights every epoch for the weight-trajectory figure.
    * ``cyclic_Tc``: the same with the per-cycle denominator ``Tc``, to tell which form calibrates better.
    * ``mc_dropout``: nnU-Net's polynomial schedule (``poly_schedule``) with dropout ``mc_dropout_p``.
    * ``deep_ensemble_seed<s>``: the polynomial schedule from seed ``s``, one run per member.
    """
    runs = [
        TrainingRun("cyclic", {"seed": seed, "lr_denominator": "T", "record_trajectory": True}, keeps_bank=True),
        TrainingRun("cyclic_Tc", {"seed": seed, "lr_denominator": "Tc"}, keeps_bank=True),
        TrainingRun("mc_dropout", {**poly_schedule, "seed": seed, "dropout": mc_dropout_p}),
    ]
    runs += [TrainingRun(f"deep_ensemble_seed{s}", {**poly_schedule, "seed": s}) for s in deep_ensemble_seeds]
    return runs


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fingerprints(config_files: Sequence[str | Path], dataset_dir: Path) -> dict[str, str]:
    """What a run depends on, by content rather than by path (a moved project keeps its runs): the merged training
    config, and the training and validation data (each entry of the datalist with the size of its files; the
    test split does not touch training, so editing it keeps the runs)."""
    merged = ConfigParser.load_config_files([str(f) for f in config_files])
    entries = []
    for split in ("training", "validation"):
        for entry in load_datalist(dataset_dir / "datalist.json", split, check_files=False, allow_empty=True):
            record = dict(entry)
            for key in ("image", "label"):
                path = Path(entry.get(key) or "")
                if path.is_file():
                    record[key] = [os.path.relpath(path, dataset_dir), path.stat().st_size]
            entries.append([split, record])
    return {
        "config_sha256": _sha256(json.dumps(merged, sort_keys=True, default=str).encode()),
        "data_sha256": _sha256(json.dumps(entries, sort_keys=True, default=str).encode()),
    }


def _request(
    run: TrainingRun, config_files: Sequence[str | Path], budget: Mapping[str, Any], dataset_dir: Path
) -> dict[str, Any]:
    return {"overrides": {**budget, **run.overrides}, **_fingerprints(config_files, dataset_dir)}


def _read_record(directory: Path) -> dict[str, Any]:
    try:
        return json.loads((directory / RECORD).read_text())
    except (OSError, ValueError):
        return {}


def _differences(record: Mapping[str, Any], request: Mapping[str, Any]) -> list[str]:
    names = {"overrides": "the overrides", "config_sha256": "the training config", "data_sha256": "the dataset"}
    return [names[k] for k in request if record.get(k) != request[k]]


def run_status(directory: Path, request: Mapping[str, Any]) -> Status:
    """``complete`` (finished with the requested settings), ``resumable`` (started with them, a training state on
    disk), ``stale`` (the folder holds a run of another config, overrides or dataset) or ``missing``."""
    record = _read_record(directory)
    if not record:
        return "stale" if directory.exists() and any(directory.iterdir()) else "missing"
    if _differences(record, request):
        return "stale"
    if record.get("complete"):
        return "complete"
    if latest_training_state(directory / "train_state") is not None:
        return "resumable"
    return "missing"


def _train(
    directory: Path,
    config_files: Sequence[str],
    overrides: Mapping[str, Any],
    dataset_dir: str,
    bundle_root: Path,
    resume: bool,
) -> None:
    run_config = {
        **overrides,
        "dataset_dir": dataset_dir,
        "ckpt_dir": str(directory),
        "output_dir": str(directory / "output"),
        "resume": resume,
        "overwrite": not resume,
    }
    (directory / "train_overrides.json").write_text(json.dumps(run_config, indent=1) + "\n")
    files = [*config_files, str(directory / "train_overrides.json")]
    cmd = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        str(files),
        "--bundle_root",
        str(bundle_root),
        "--logging_file",
        str(bundle_root / "configs" / "logging.conf"),
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(directory / "train.log", "a") as log:
        log.write(f"\n$ {' '.join(cmd)}\n")
        log.flush()
        code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=bundle_root).returncode
    if code:
        tail = (directory / "train.log").read_text().splitlines()[-15:]
        raise RuntimeError(
            f"training exited with code {code}; the end of {directory / 'train.log'}:\n" + "\n".join(tail)
        )


def ensure_trained(
    run: TrainingRun,
    work_dir: str | Path,
    config_files: Sequence[str | Path],
    budget: Mapping[str, Any],
    dataset_dir: str | Path,
    bundle_root: str | Path,
    train: bool = True,
) -> RunOutcome:
    """Bring ``work_dir/<run.name>`` to a complete run of ``run`` on ``dataset_dir``: reuse it when complete,
    resume it when it was interrupted, train it when missing (or when it holds another setting, which is removed
    first). ``train=False`` only reports what is there. A failed training is returned, not raised, so that the
    other runs and the methods that do not need this one still go ahead."""
    directory = Path(work_dir).resolve() / run.name
    dataset_dir = Path(dataset_dir).resolve()
    request = _request(run, config_files, budget, dataset_dir)
    status = run_status(directory, request)
    if status == "complete":
        return RunOutcome(directory, "reused", record=_read_record(directory))
    if not train:
        return RunOutcome(
            directory, "not trained", error=f"{directory} holds no complete run ({status}) and training is off."
        )
    if status == "stale":
        changed = _differences(_read_record(directory), request) or ["no record of what it is"]
        print(f"  {directory} holds a run with other {', '.join(changed)}: removing it and training anew", flush=True)
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    resume = status == "resumable"
    record = {
        **request,
        "config_files": [str(Path(f).resolve()) for f in config_files],
        "dataset_dir": str(dataset_dir),
        "complete": False,
    }
    (directory / RECORD).write_text(json.dumps(record, indent=1) + "\n")
    print(
        f"  {'resuming' if resume else 'training'} {run.name} -> {directory} (log: {directory / 'train.log'})",
        flush=True,
    )
    start = time.perf_counter()
    try:
        _train(directory, record["config_files"], request["overrides"], str(dataset_dir), Path(bundle_root), resume)
        if not (directory / "model.pt").is_file() or (
            run.keeps_bank and not PosteriorBank(directory / "posterior").exists()
        ):
            raise RuntimeError(f"training finished but {directory} lacks model.pt or posterior/manifest.json.")
    except (RuntimeError, OSError) as e:
        return RunOutcome(directory, "failed", time.perf_counter() - start, error=str(e), record=record)
    seconds = time.perf_counter() - start
    record.update(complete=True, train_seconds=round(seconds, 1), resumed=resume)
    (directory / RECORD).write_text(json.dumps(record, indent=1) + "\n")
    return RunOutcome(directory, "resumed" if resume else "trained", seconds, record=record)
