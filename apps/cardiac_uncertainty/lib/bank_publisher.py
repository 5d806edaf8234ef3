"""Which checkpoint bank the server serves, and how a newly trained bank replaces it atomically.

Why: training from corrections writes a bank one posterior checkpoint at a time over many minutes. Requests must be
answered by the old, complete bank all that time and switch to the new one only once it is complete and verified,
in one step, across every process of the app (the server, and the training and scoring sub-processes).

Layout under the app's model folder (``--conf model_dir``, default ``<app>/model``)::

    staging/<run>/        a training run writes here (models/posterior, models/model.pt, logs); never served
    banks/<run>/          a finished run, moved here from staging/ by one rename once its bank is verified
    published.json        {"bank_dir": "banks/<run>/models/posterior", "run": ..., ...}: the bank that is served

Publishing renames the finished run into ``banks/`` and then replaces ``published.json`` with ``os.replace`` (atomic
on POSIX): a reader sees either the old pointer or the new one, never a partial file, and a bank folder never
changes once a pointer names it. Until the first publication the bundle's own bank (``bank_dir`` of
``configs/inference.json``) is served. To roll back, point ``published.json`` at a previous entry of ``banks/``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from scripts.posterior_bank import BankError

__all__ = ["BankPublisher"]

POINTER = "published.json"


class BankPublisher:
    """The served bank (:meth:`current`), staging folders for training runs, and atomic publication.

    Args:
        root: the app's model folder.
        default_bank_dir: the bank served before any run was published (the bundle's ``models/posterior``).
        keep: how many published runs stay on disk (the served one and the ones before it, for roll-back).
    """

    def __init__(self, root: str | Path, default_bank_dir: str | Path, keep: int = 2) -> None:
        self.root = Path(root).resolve()
        self.default_bank_dir = Path(default_bank_dir).resolve()
        self.keep = max(1, keep)

    @property
    def pointer(self) -> Path:
        return self.root / POINTER

    def published(self) -> dict[str, Any] | None:
        """The content of ``published.json`` (``bank_dir`` made absolute), or ``None`` before the first run."""
        try:
            record = json.loads(self.pointer.read_text())
        except FileNotFoundError:
            return None
        except ValueError as e:
            raise BankError(
                f"{self.pointer} is not valid JSON ({e}); restore it, or delete it to serve the bundle's own bank."
            ) from e
        record["bank_dir"] = str((self.root / record["bank_dir"]).resolve())
        return record

    def current(self) -> Path:
        """The folder of the bank to serve now."""
        record = self.published()
        return Path(record["bank_dir"]) if record else self.default_bank_dir

    def new_run(self) -> Path:
        """A new, empty staging folder for one training run."""
        staging = self.root / "staging"
        staging.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(dir=staging, prefix=time.strftime("%Y%m%d-%H%M%S-", time.gmtime())))

    def publish(self, run_dir: str | Path, bank_subdir: str = "models/posterior", **info: Any) -> Path:
        """Move the finished ``run_dir`` into ``banks/`` and point ``published.json`` at its bank; returns the bank
        folder. The caller verifies the bank first: whatever is published here is served from the next request."""
        run_dir = Path(run_dir).resolve()
        banks = self.root / "banks"
        banks.mkdir(parents=True, exist_ok=True)
        target = banks / run_dir.name
        os.replace(run_dir, target)  # same file system: one rename, the folder appears complete or not at all
        os.utime(target)  # its publication time, by which old runs are pruned
        bank_dir = target / bank_subdir
        record = {"bank_dir": str(bank_dir.relative_to(self.root)), "run": target.name, "published": time.time()}
        record.update(info)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f".{POINTER}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(record, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.pointer)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._prune(banks, target)
        return bank_dir

    def _prune(self, banks: Path, served: Path) -> None:
        """Remove published runs beyond the ``keep`` most recently published ones; never the served run."""
        runs = sorted((p for p in banks.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime_ns)
        for old in runs[: -self.keep]:
            if old != served:
                shutil.rmtree(old, ignore_errors=True)
