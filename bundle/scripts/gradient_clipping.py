"""Gradient-norm clipping between backward and the optimiser step, as nnU-Net does (max norm 12).

The restart epoch of every cycle runs at ten times the base rate with momentum 0.99; clipping keeps that kick
from turning into a divergence, which is what lets the schedule leave a mode without losing the network.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from monai.engines.utils import IterationEvents
from monai.utils import min_version, optional_import

if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", "0.4.11", min_version, "Engine", as_type="decorator")

__all__ = ["GradientNormClipping"]


class GradientNormClipping:
    """Clip the global gradient norm of ``network`` to ``max_norm`` after every backward pass of a
    ``SupervisedTrainer`` (its ``IterationEvents.BACKWARD_COMPLETED`` comes right before ``optimizer.step()``)."""

    def __init__(self, network: torch.nn.Module, max_norm: float = 12.0) -> None:
        self.network = network
        self.max_norm = max_norm

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        torch.nn.utils.clip_grad_norm_(self.network.parameters(), self.max_norm)
