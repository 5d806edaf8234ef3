"""Resumable training: the full training state saved atomically every epoch, and reloaded on ``--resume``."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch.distributed as dist
from monai.handlers import CheckpointLoader
from monai.utils import min_version, optional_import, str2bool

from scripts.posterior_bank import atomic_save

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", "0.4.11", min_version, "Engine", as_type="decorator")

__all__ = ["InitialWeights", "ResumeTraining", "TrainingStateSaver", "latest_training_state"]

_STATE_FILE = re.compile(r"^train_state_epoch=(\d+)\.pt$")


def latest_training_state(state_dir: str | Path) -> Path | None:
    """The newest complete training state in ``state_dir`` (files are written atomically, so all are complete)."""
    states = [
        (int(m.group(1)), p) for p in Path(state_dir).glob("train_state_epoch=*.pt") if (m := _STATE_FILE.match(p.name))
    ]
    return max(states)[1] if states else None


class TrainingStateSaver:
    """Write ``save_dict`` (network, optimiser, scheduler) and the trainer's own state (epoch, iteration) after
    every epoch, keeping the newest ``keep`` files. The trainer is taken from ``attach`` so that the config needs
    no reference from a handler back to the engine that holds it.

    MONAI's ``CheckpointSaver`` writes in place (a kill mid-write leaves a truncated newest file); this saver
    writes to a temporary file and renames it, so the newest file on disk is always loadable.
    """

    def __init__(self, save_dir: str | Path, save_dict: Mapping[str, Any], keep: int = 2) -> None:
        self.save_dir = Path(save_dir)
        self.save_dict = save_dict
        self.keep = max(1, keep)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
            return
        state = {"trainer": engine.state_dict()}
        for key, obj in self.save_dict.items():
            obj = getattr(obj, "module", obj)  # unwrap DistributedDataParallel
            state[key] = obj.state_dict()
        atomic_save(state, self.save_dir / f"train_state_epoch={engine.state.epoch}.pt")
        old = sorted(
            self.save_dir.glob("train_state_epoch=*.pt"), key=lambda p: int(_STATE_FILE.match(p.name).group(1))
        )
        for p in old[: -self.keep]:
            p.unlink(missing_ok=True)


class ResumeTraining:
    """On ``Events.STARTED``, restore the newest training state (model, optimiser, schedule, epoch) when enabled.

    ``load_dict`` names what :class:`TrainingStateSaver` saved besides the trainer, which is the engine itself.

    Resuming is explicit (``--resume true``) so that a stale state never silently hijacks a new run.
    """

    def __init__(
        self, state_dir: str | Path, load_dict: Mapping[str, Any], enabled: bool = False, name: str | None = None
    ) -> None:
        self.state_dir = Path(state_dir)
        self.load_dict = load_dict
        self.enabled = str2bool(enabled)  # the CLI passes `--resume false` as the string 'false'
        self.logger = logging.getLogger(name)

    def attach(self, engine: Engine) -> None:
        if self.enabled:
            engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        path = latest_training_state(self.state_dir)
        if path is None:
            raise FileNotFoundError(
                f"--resume was requested but {self.state_dir} holds no training state (train_state_epoch=N.pt). "
                "Start the run without --resume, or point --ckpt_dir at the run to continue."
            )
        load_dict = {"trainer": engine, **{k: getattr(v, "module", v) for k, v in self.load_dict.items()}}
        CheckpointLoader(load_path=str(path), load_dict=load_dict, map_location="cpu")(engine)
        self.logger.info(f"resumed from {path} at epoch {engine.state.epoch}")


class InitialWeights:
    """Start a new run from given network weights (fine-tuning, e.g. on corrected labels), when a path is given.

    Only the network is loaded (a plain ``state_dict`` such as ``models/model.pt``, or a training state); the
    optimiser and the schedule start afresh. A resumed run keeps its own weights.
    """

    def __init__(self, path: str | Path | None, network: Any, name: str | None = None) -> None:
        self.path = None if path in (None, "") else Path(path)
        self.network = network
        self.logger = logging.getLogger(name)

    def attach(self, engine: Engine) -> None:
        if self.path is not None:
            engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        if engine.state.epoch > 0:
            return
        if not self.path.is_file():
            raise FileNotFoundError(f"--pretrained_weights {self.path} does not exist; point it at a model.pt.")
        CheckpointLoader(
            load_path=str(self.path),
            load_dict={"network": getattr(self.network, "module", self.network)},
            map_location="cpu",
        )(engine)
        self.logger.info(f"network initialised from {self.path}")
