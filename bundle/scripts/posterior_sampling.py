"""The training hook that collects posterior samples: every checkpoint taken while the learning rate is constant."""

from __future__ import annotations

import inspect
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from monai.utils import min_version, optional_import, str2bool
from torch import nn

from scripts.posterior_bank import BankError, PosteriorBank, atomic_save
from scripts.schedule import CyclicPosteriorLR, cyclic_posterior_lr, posterior_epochs

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", "0.4.11", min_version, "Engine", as_type="decorator")

__all__ = ["PosteriorCheckpointSaver", "cpu_state_dict", "describe_network"]


def describe_network(network: torch.nn.Module) -> dict[str, Any]:
    """The constructor arguments that the network keeps as attributes (``DynUNet`` keeps all that matter), as a
    ``network_def``-like record for the manifest, so a bank can be matched to its architecture later."""
    record: dict[str, Any] = {"_target_": type(network).__name__}
    for name in inspect.signature(type(network).__init__).parameters:
        value = getattr(network, name, None)
        if name != "self" and value is not None:
            try:
                record[name] = json.loads(json.dumps(value))
            except TypeError:
                continue  # not a plain value (a module, a callable): not needed to identify the architecture
    return record


def _is_main_process() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def cpu_state_dict(network: nn.Module, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """The network's ``state_dict`` on the CPU with floating tensors in ``dtype``, keeping names that share a tensor
    sharing its copy.

    Why: DynUNet reaches its decoder blocks through two attributes, so its ``state_dict`` names half of its weights
    twice. ``torch.save`` writes a shared tensor once, but a per-name conversion (``.half()``, or ``.cpu()`` of a GPU
    tensor) makes two copies and doubles the file: a half-precision bank would take as much disk as a float32 one.
    """
    converted: dict[tuple[int, int, tuple[int, ...], tuple[int, ...]], torch.Tensor] = {}
    out = {}
    for name, tensor in network.state_dict().items():
        identity = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape), tensor.stride())
        if identity not in converted:
            converted[identity] = tensor.detach().to("cpu", dtype if tensor.is_floating_point() else tensor.dtype)
        out[name] = converted[identity]
    return out


class PosteriorCheckpointSaver:
    """Save the network after every posterior epoch into a :class:`PosteriorBank`, and the last epoch as
    ``model.pt`` (the vanilla model every single-model tool expects).

    The posterior epochs come from the schedule itself (``gamma * Tc <= tc <= Tc - 1`` in every cycle), so the
    bank always agrees with the learning rate the optimiser saw. Under distributed training only rank 0 writes.

    Args:
        bank_dir: folder of the bank (``manifest.json`` and one file per sample).
        final_model_path: where the last checkpoint is written as a plain ``state_dict``.
        network: the trained network (a DDP wrapper is unwrapped).
        lr_scheduler: the :class:`CyclicPosteriorLR` that drives the optimiser.
        overwrite: a fresh (not resumed) run refuses to replace an existing bank unless this is ``True``.
        dtype: ``"float32"`` or ``"float16"``; half precision halves the bank on disk.
    """

    def __init__(
        self,
        bank_dir: str | Path,
        final_model_path: str | Path,
        network: torch.nn.Module,
        lr_scheduler: CyclicPosteriorLR,
        overwrite: bool = False,
        dtype: str = "float32",
        name: str | None = None,
    ) -> None:
        self.bank = PosteriorBank(bank_dir)
        self.final_model_path = Path(final_model_path)
        self.network = network
        self.schedule = lr_scheduler
        self.overwrite = str2bool(overwrite)  # the CLI passes `--overwrite false` as the string 'false'
        if dtype not in ("float32", "float16"):
            raise ValueError(f"bank dtype must be 'float32' or 'float16', got {dtype!r}.")
        self.dtype = getattr(torch, dtype)
        self.logger = logging.getLogger(name)
        epochs = posterior_epochs(lr_scheduler.total_epochs, lr_scheduler.num_cycles, lr_scheduler.gamma)
        if not any(epochs):
            # gamma = 1 with restart_lr = base_lr and one cycle is nnU-Net's plain polynomial schedule: a single
            # model (the baselines' training), so only model.pt is written.
            self.logger.warning(f"gamma={lr_scheduler.gamma} leaves no posterior epoch: only model.pt will be written.")
        elif not all(epochs):
            raise ValueError(
                f"gamma={lr_scheduler.gamma} leaves no posterior epoch in a cycle of "
                f"{lr_scheduler.total_epochs // lr_scheduler.num_cycles} epochs; lower gamma or lengthen the cycles."
            )
        self.cycle_of_epoch = {t: c for c, cycle in enumerate(epochs) for t in cycle}

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.started)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_completed)

    def _state_dict(self, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        network = getattr(self.network, "module", self.network)  # unwrap DistributedDataParallel
        return cpu_state_dict(network, dtype)

    def started(self, engine: Engine) -> None:
        if not _is_main_process():
            return
        done = engine.state.epoch  # > 0 only when a training state was resumed
        if done == 0 and self.bank.exists() and self.bank.checkpoints:
            if not self.overwrite:
                raise BankError(
                    f"{self.bank.directory} already holds a checkpoint bank ({len(self.bank.checkpoints)} samples). "
                    "A new training run would mix two runs' samples: resume the run with --resume true, move the "
                    "bank away, or pass --overwrite true to replace it."
                )
            self.bank.clear()
        self.bank.truncate(first_dropped_epoch=done)

    def epoch_completed(self, engine: Engine) -> None:
        if not _is_main_process():
            return
        epoch = engine.state.epoch - 1  # ignite counts from 1; the schedule from 0
        s = self.schedule
        if epoch in self.cycle_of_epoch:
            lr = cyclic_posterior_lr(
                epoch, s.total_epochs, s.num_cycles, s.base_lr, s.restart_lr, s.exponent, s.gamma, s.denominator
            )
            info = {
                "total_epochs": s.total_epochs,
                "num_cycles": s.num_cycles,
                "gamma": s.gamma,
                "denominator": s.denominator,
                "network_def": describe_network(getattr(self.network, "module", self.network)),
            }
            self.bank.add(self._state_dict(self.dtype), epoch=epoch, cycle=self.cycle_of_epoch[epoch], lr=lr, **info)
            engine.state.posterior_samples = len(self.bank.checkpoints)
        if engine.state.epoch == engine.state.max_epochs:
            atomic_save(self._state_dict(), self.final_model_path)
            self.logger.info(f"vanilla model (epoch {epoch}) written to {self.final_model_path}")
