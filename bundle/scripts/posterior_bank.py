"""The bank of posterior checkpoints on disk: atomic writes, a sha256 manifest, and the paper's selections.

One folder holds one ``.pt`` file per posterior sample (a CPU ``state_dict``) and ``manifest.json``, which lists
each file with its epoch, cycle, learning rate and sha256. A file is always written before the manifest names it
and both are replaced atomically, so a run killed at any moment leaves a manifest that matches the files on disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch

__all__ = [
    "BankError",
    "PosteriorBank",
    "PosteriorCheckpoint",
    "SelectionMode",
    "atomic_save",
    "load_state_dict",
    "select_checkpoints",
    "sha256_of",
]

SelectionMode = Literal["single", "multi", "all"]
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1


class BankError(RuntimeError):
    """A checkpoint bank that cannot serve the request: missing, corrupted, or too small."""


@dataclass(frozen=True)
class PosteriorCheckpoint:
    """One posterior sample: the file (relative to the bank) and when it was taken."""

    file: str
    epoch: int
    cycle: int
    lr: float
    sha256: str
    dtype: str = "float32"


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _atomic_write(path: Path, write: Any) -> None:
    """Write through ``write(file_object)`` into a temporary file beside ``path``, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_save(obj: Any, path: str | Path) -> str:
    """``torch.save`` that never leaves a half-written file at ``path``; returns the sha256 of what it wrote."""
    path = Path(path)
    _atomic_write(path, lambda f: torch.save(obj, f))
    return sha256_of(path)


def load_state_dict(path: str | Path, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Load a CPU ``state_dict`` safely (``weights_only``), checking its hash when one is given."""
    path = Path(path)
    if not path.is_file():
        raise BankError(f"checkpoint {path} is missing. Retrain (or restore the file from a backup) before using it.")
    if sha256 is not None and sha256_of(path) != sha256:
        raise BankError(
            f"checkpoint {path} does not match the sha256 in its manifest: the file is corrupted or was replaced. "
            "Restore it, or retrain the bank; do not use it as it is."
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated or foreign files
        raise BankError(f"checkpoint {path} cannot be read ({type(e).__name__}: {e}). Retrain or restore it.") from e
    if isinstance(state, Mapping) and "network" in state and isinstance(state["network"], Mapping):
        state = state["network"]  # a training state: take its network
    if not isinstance(state, Mapping):
        raise BankError(f"checkpoint {path} holds a {type(state).__name__}, not a state_dict of a network.")
    return dict(state)


def select_checkpoints(
    checkpoints: list[PosteriorCheckpoint], mode: SelectionMode, n: int | None, num_cycles: int
) -> list[PosteriorCheckpoint]:
    """The paper's ensembles: ``single`` = the last ``n`` of the last cycle, ``multi`` = the last ``n / M`` of
    every cycle, ``all`` = every posterior checkpoint (``n`` ignored). Raises ``BankError`` when the bank is
    too small for the request rather than silently returning fewer members."""
    by_epoch = sorted(checkpoints, key=lambda c: c.epoch)
    if not by_epoch:
        raise BankError("the bank has no posterior checkpoints; train the bundle first (configs/train.json).")
    if mode == "all":
        return by_epoch
    if n is None or n < 1:
        raise BankError(f"mode {mode!r} needs the number of members n >= 1, got {n}.")
    cycles = [[c for c in by_epoch if c.cycle == k] for k in range(num_cycles)]
    if mode == "single":
        last = cycles[-1]
        if len(last) < n:
            raise BankError(
                f"mode 'single' asks for the last n={n} checkpoints of the last cycle, but the bank holds only "
                f"{len(last)} there (epochs {[c.epoch for c in last]}). Ask for n <= {len(last)}, or train with "
                "more epochs per cycle or a smaller gamma."
            )
        return last[-n:]
    if mode == "multi":
        if n % num_cycles:
            raise BankError(
                f"mode 'multi' takes n / M checkpoints from each of the M={num_cycles} cycles, so n must be a "
                f"multiple of {num_cycles}; got n={n}."
            )
        per_cycle = n // num_cycles
        short = {k: len(c) for k, c in enumerate(cycles) if len(c) < per_cycle}
        if short:
            raise BankError(
                f"mode 'multi' asks for {per_cycle} checkpoints from every cycle, but cycles {sorted(short)} hold only "
                f"{sorted(set(short.values()))}. Ask for n <= {num_cycles * min(len(c) for c in cycles)}, or train "
                "longer. (A bank from an unfinished training run lacks its last cycles: resume it first.)"
            )
        return [c for cycle in cycles for c in cycle[-per_cycle:]]
    raise BankError(f"unknown selection mode {mode!r}; use 'single', 'multi' or 'all'.")


class PosteriorBank:
    """A folder of posterior checkpoints and the manifest that describes them."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    @property
    def manifest_path(self) -> Path:
        return self.directory / MANIFEST

    def exists(self) -> bool:
        return self.manifest_path.is_file()

    def read_manifest(self) -> dict[str, Any]:
        if not self.exists():
            raise BankError(
                f"no checkpoint bank at {self.directory} ({MANIFEST} is missing). Train the bundle "
                "(python -m monai.bundle run --config_file configs/train.json ...) "
                "or point --bank_dir at a trained bank."
            )
        try:
            manifest = json.loads(self.manifest_path.read_text())
            manifest["checkpoints"] = [PosteriorCheckpoint(**c) for c in manifest["checkpoints"]]
        except (ValueError, KeyError, TypeError) as e:
            raise BankError(f"{self.manifest_path} is not a valid bank manifest ({e}); retrain the bank.") from e
        return manifest

    @property
    def checkpoints(self) -> list[PosteriorCheckpoint]:
        return self.read_manifest()["checkpoints"]

    def write_manifest(self, checkpoints: list[PosteriorCheckpoint], **info: Any) -> None:
        manifest = {
            "format": MANIFEST_FORMAT,
            **info,
            "checkpoints": [asdict(c) for c in sorted(checkpoints, key=lambda c: c.epoch)],
        }
        _atomic_write(self.manifest_path, lambda f: f.write(json.dumps(manifest, indent=1).encode()))

    def add(
        self, state_dict: Mapping[str, torch.Tensor], epoch: int, cycle: int, lr: float, **info: Any
    ) -> PosteriorCheckpoint:
        """Store one posterior sample; the file is complete on disk before the manifest names it."""
        name = f"epoch_{epoch:05d}.pt"
        tensors = {k: v.detach().cpu() for k, v in state_dict.items()}
        dtype = str(next(iter(tensors.values())).dtype).replace("torch.", "") if tensors else "float32"
        digest = atomic_save(tensors, self.directory / name)
        entry = PosteriorCheckpoint(file=name, epoch=epoch, cycle=cycle, lr=float(lr), sha256=digest, dtype=dtype)
        previous = self.read_manifest() if self.exists() else {"checkpoints": []}
        kept = [c for c in previous.pop("checkpoints") if c.epoch != epoch]
        previous.pop("format", None)
        self.write_manifest([*kept, entry], **{**previous, **info})
        return entry

    def truncate(self, first_dropped_epoch: int) -> None:
        """Forget samples from ``first_dropped_epoch`` on (a resumed run retrains those epochs)."""
        if not self.exists():
            return
        manifest = self.read_manifest()
        checkpoints = manifest.pop("checkpoints")
        manifest.pop("format", None)
        kept = [c for c in checkpoints if c.epoch < first_dropped_epoch]
        self.write_manifest(kept, **manifest)
        for c in checkpoints:
            if c.epoch >= first_dropped_epoch:
                (self.directory / c.file).unlink(missing_ok=True)

    def clear(self) -> None:
        """Remove the bank folder entirely (only on an explicit overwrite)."""
        shutil.rmtree(self.directory, ignore_errors=True)

    def select(self, mode: SelectionMode, n: int | None = None) -> list[PosteriorCheckpoint]:
        manifest = self.read_manifest()
        num_cycles = int(manifest.get("num_cycles", 1 + max((c.cycle for c in manifest["checkpoints"]), default=0)))
        return select_checkpoints(manifest["checkpoints"], mode, n, num_cycles)

    def load(self, checkpoint: PosteriorCheckpoint, verify: bool = True) -> dict[str, torch.Tensor]:
        return load_state_dict(self.directory / checkpoint.file, checkpoint.sha256 if verify else None)

    def verify(self) -> None:
        """Check that every file the manifest names exists and has its recorded sha256."""
        for c in self.checkpoints:
            load_state_dict(self.directory / c.file, c.sha256)
