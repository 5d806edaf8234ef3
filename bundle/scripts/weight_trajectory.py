"""The weights of one layer after every training epoch, for a picture of the trajectory in weight space (Fig. 2).

The posterior bank keeps only the posterior epochs and the training state only the newest two, but a plot of how
the cyclic schedule moves the weights from mode to mode needs every epoch. One layer is enough (the paper plots
the last decoder layer) and small: a few thousand numbers per epoch. The recorder is off by default
(``record_trajectory`` in ``train.json``); the evaluation turns it on for its cyclic run.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.distributed as dist
from monai.utils import min_version, optional_import, str2bool

from scripts.posterior_bank import atomic_save

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", "0.4.11", min_version, "Engine", as_type="decorator")

__all__ = ["WeightTrajectoryRecorder", "load_trajectory"]

_EPOCH_FILE = re.compile(r"^epoch_(\d+)\.pt$")


class WeightTrajectoryRecorder:
    """After every epoch, save the flattened ``parameter`` of ``network`` to ``save_dir/epoch_<t>.pt`` (``t``
    0-based, as the schedule counts), atomically; a resumed run rewrites the epochs it trains again.

    Args:
        save_dir: output folder.
        network: the trained network (a DDP wrapper is unwrapped).
        parameter: name of the parameter in ``network.named_parameters()``.
        enabled: attach nothing when ``False``.
    """

    def __init__(self, save_dir: str | Path, network: torch.nn.Module, parameter: str, enabled: bool = False) -> None:
        self.save_dir = Path(save_dir)
        self.network = getattr(network, "module", network)
        self.parameter = parameter
        self.enabled = str2bool(enabled)  # the CLI passes `--record_trajectory false` as a string
        names = dict(self.network.named_parameters())
        if self.enabled and parameter not in names:
            raise ValueError(f"the network has no parameter {parameter!r}; it has e.g. {list(names)[-6:]}.")

    def attach(self, engine: Engine) -> None:
        if self.enabled:
            engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
            return
        weights = dict(self.network.named_parameters())[self.parameter].detach().to("cpu", torch.float32).flatten()
        record = {"parameter": self.parameter, "epoch": engine.state.epoch - 1, "weights": weights}
        atomic_save(record, self.save_dir / f"epoch_{engine.state.epoch - 1:05d}.pt")


def load_trajectory(save_dir: str | Path) -> tuple[np.ndarray, np.ndarray, str]:
    """``(epochs, weights (epochs x values), parameter name)`` of a recorded trajectory, sorted by epoch."""
    files = sorted((int(m.group(1)), p) for p in Path(save_dir).glob("epoch_*.pt") if (m := _EPOCH_FILE.match(p.name)))
    if not files:
        raise FileNotFoundError(
            f"{save_dir} holds no recorded weights (epoch_<t>.pt): train with --record_trajectory true to record them."
        )
    records = [torch.load(p, map_location="cpu", weights_only=True) for _, p in files]
    weights = np.stack([r["weights"].numpy() for r in records])
    return np.array([e for e, _ in files]), weights, records[0]["parameter"]
