"""Stochastic weight averaging (Izmailov et al., 2018) of the last cycle's posterior checkpoints.

SWA averages in weight space where the checkpoint ensemble averages in prediction space (Eq. 2): one network, one
forward pass, but one softmax, which the paper finds calibrated like a single model. After averaging, a network
with batch normalisation must recompute its running statistics (``torch.optim.swa_utils.update_bn``); the
nnU-Net-style ``DynUNet`` uses instance normalisation, which keeps no running statistics, so there is nothing to
recompute (``swa_state_dict`` checks it).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.optim.swa_utils import AveragedModel

from scripts.ensemble import PosteriorEnsemble
from scripts.posterior_bank import BankError, PosteriorBank

__all__ = ["load_swa_model", "swa_state_dict"]


def swa_state_dict(network: nn.Module, state_dicts: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The equally weighted average of ``state_dicts`` (weights of ``network``), by
    ``torch.optim.swa_utils.AveragedModel``."""
    if not state_dicts:
        raise BankError("SWA needs at least one checkpoint to average.")
    if any(isinstance(m, _BatchNorm) and m.track_running_stats for m in network.modules()):
        raise ValueError(
            "the network has batch-norm running statistics: after averaging they must be recomputed on training "
            "data (torch.optim.swa_utils.update_bn), which this function does not do."
        )
    member = copy.deepcopy(network).cpu()
    averaged = AveragedModel(member)
    needed = member.state_dict().keys()  # a network built without deep-supervision heads ignores theirs
    for state_dict in state_dicts:
        member.load_state_dict({k: v for k, v in state_dict.items() if k in needed})
        averaged.update_parameters(member)
    return {k: v.detach().clone() for k, v in averaged.module.state_dict().items()}


def load_swa_model(network: nn.Module, bank_dir: str | Path, verify: bool = True) -> PosteriorEnsemble:
    """SWA of all posterior checkpoints of the last cycle of a bank, as a one-member ensemble (probabilities out),
    with the averaged checkpoints kept in ``checkpoints`` for the record."""
    bank = PosteriorBank(bank_dir)
    checkpoints = bank.checkpoints
    if not checkpoints:
        raise BankError(f"the bank {bank_dir} holds no posterior checkpoint to average.")
    last_cycle = [c for c in checkpoints if c.cycle == max(c.cycle for c in checkpoints)]
    averaged = swa_state_dict(network, [bank.load(c, verify=verify) for c in last_cycle])
    return PosteriorEnsemble(network, [averaged], checkpoints=last_cycle)
