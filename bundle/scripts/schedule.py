"""The cyclical learning-rate schedule that turns SGD into a multi-modal posterior sampler (Eq. 4)."""

from __future__ import annotations

from typing import Literal

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

__all__ = ["CyclicPosteriorLR", "cyclic_posterior_lr", "posterior_epochs", "cycle_of"]

Denominator = Literal["T", "Tc"]


def _cycle_length(total_epochs: int, num_cycles: int) -> int:
    if total_epochs < 1 or num_cycles < 1:
        raise ValueError(f"need total_epochs >= 1 and num_cycles >= 1, got T={total_epochs}, M={num_cycles}.")
    if total_epochs % num_cycles:
        raise ValueError(
            f"total_epochs T={total_epochs} is not a multiple of num_cycles M={num_cycles}; "
            "every cycle must have the same length Tc = T / M. Choose T divisible by M."
        )
    return total_epochs // num_cycles


def cyclic_posterior_lr(
    epoch: int,
    total_epochs: int,
    num_cycles: int,
    base_lr: float = 0.01,
    restart_lr: float = 0.1,
    exponent: float = 0.9,
    gamma: float = 0.8,
    denominator: Denominator = "T",
) -> float:
    """Learning rate of epoch ``epoch`` (0-based) under Eq. 4 of Zhao et al. (MICCAI 2022).

    The first epoch of every cycle runs at ``restart_lr`` to kick the weights out of the current mode; the
    rate then decays polynomially as in nnU-Net and is held constant from ``gamma * Tc`` on, so that the
    remaining epochs of the cycle sample the neighbourhood of the mode instead of converging to a point.

    ``denominator`` selects the decay horizon: ``"T"`` is Eq. 4 as printed (the rate falls only to about
    0.0076 before it is held, with the paper's values); ``"Tc"`` decays over the cycle (to about 0.0024),
    which may be what the authors meant. The evaluation reports which calibrates better.
    """
    cycle_length = _cycle_length(total_epochs, num_cycles)
    if denominator not in ("T", "Tc"):
        raise ValueError(f"denominator must be 'T' (Eq. 4 as printed) or 'Tc' (per cycle), got {denominator!r}.")
    in_cycle = epoch % cycle_length
    if in_cycle == 0:
        return restart_lr
    horizon = total_epochs if denominator == "T" else cycle_length
    return base_lr * (1.0 - min(in_cycle, gamma * cycle_length) / horizon) ** exponent


def posterior_epochs(total_epochs: int, num_cycles: int, gamma: float = 0.8) -> list[list[int]]:
    """Epochs (0-based) whose checkpoints are posterior samples, one list per cycle.

    In cycle ``c`` these are the epochs with ``gamma * Tc <= tc <= Tc - 1``: the learning rate is constant
    there, so SGD wanders around the mode rather than descending into it.
    """
    cycle_length = _cycle_length(total_epochs, num_cycles)
    return [
        [c * cycle_length + tc for tc in range(cycle_length) if gamma * cycle_length <= tc]
        for c in range(num_cycles)
    ]


def cycle_of(epoch: int, total_epochs: int, num_cycles: int) -> int:
    """0-based index of the cycle that epoch ``epoch`` belongs to."""
    return epoch // _cycle_length(total_epochs, num_cycles)


class CyclicPosteriorLR(LRScheduler):
    """Eq. 4 as a PyTorch scheduler, stepped once per epoch (``monai.handlers.LrScheduleHandler``).

    After ``k`` calls of ``step()`` the optimiser holds the rate of epoch ``k``, so the rate at construction is
    the restart rate of epoch 0. Its state (``last_epoch``) is saved with the training state for resuming.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        total_epochs: int,
        num_cycles: int,
        base_lr: float = 0.01,
        restart_lr: float = 0.1,
        exponent: float = 0.9,
        gamma: float = 0.8,
        denominator: Denominator = "T",
        last_epoch: int = -1,
    ) -> None:
        self.total_epochs = total_epochs
        self.num_cycles = num_cycles
        self.base_lr = base_lr
        self.restart_lr = restart_lr
        self.exponent = exponent
        self.gamma = gamma
        self.denominator = denominator
        cyclic_posterior_lr(0, total_epochs, num_cycles, denominator=denominator)  # validate arguments early
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        lr = cyclic_posterior_lr(
            self.last_epoch,
            self.total_epochs,
            self.num_cycles,
            self.base_lr,
            self.restart_lr,
            self.exponent,
            self.gamma,
            self.denominator,
        )
        return [lr for _ in self.optimizer.param_groups]
