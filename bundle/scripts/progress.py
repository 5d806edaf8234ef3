"""One log line per epoch with what a user of a cyclic schedule wants to see: cycle, learning rate, loss, Dice."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import torch
from monai.utils import min_version, optional_import

from scripts.schedule import cycle_of

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", "0.4.11", min_version, "Engine", as_type="decorator")

__all__ = ["EpochProgress"]

STRUCTURES = ("RV", "MYO", "LV")


def _format_metric(value: object) -> str:
    if isinstance(value, torch.Tensor) and value.numel() == len(STRUCTURES):
        return " ".join(f"{s} {v:.3f}" for s, v in zip(STRUCTURES, value.tolist(), strict=True))
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    return f"{value:.4f}" if isinstance(value, float) else str(value)


class EpochProgress:
    """Log ``epoch t/T | cycle c/M | lr | mean loss | validation metrics | posterior samples | time`` per epoch.

    It also puts ``learning_rate`` and ``cycle`` on ``engine.state`` so that ``TensorBoardStatsHandler``
    (``state_attributes``) can plot the schedule next to the loss.

    Args:
        optimizer: the optimiser whose first parameter group's rate is reported.
        num_cycles: M, to report the cycle of each epoch.
        evaluator: the validation engine whose ``state.metrics`` are reported (optional).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        num_cycles: int,
        evaluator: Engine | None = None,
        name: str | None = None,
    ) -> None:
        self.optimizer = optimizer
        self.num_cycles = num_cycles
        self.evaluator = evaluator
        self.logger = logging.getLogger(name)
        self._losses: list[float] = []
        self._start = 0.0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self.epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_completed)

    def epoch_started(self, engine: Engine) -> None:
        self._losses.clear()
        self._start = time.perf_counter()
        engine.state.learning_rate = float(self.optimizer.param_groups[0]["lr"])
        # ignite has already advanced state.epoch (1-based) when EPOCH_STARTED fires
        engine.state.cycle = cycle_of(engine.state.epoch - 1, engine.state.max_epochs, self.num_cycles) + 1

    def iteration_completed(self, engine: Engine) -> None:
        output = engine.state.output
        loss = output[0]["loss"] if isinstance(output, list) else output["loss"]
        self._losses.append(float(loss))

    def epoch_completed(self, engine: Engine) -> None:
        state = engine.state
        parts = [
            f"epoch {state.epoch}/{state.max_epochs}",
            f"cycle {state.cycle}/{self.num_cycles}",
            f"lr {state.learning_rate:.5f}",
            f"loss {sum(self._losses) / max(len(self._losses), 1):.4f}",
        ]
        if self.evaluator is not None and self.evaluator.state.metrics:
            parts += [f"{k} {_format_metric(v)}" for k, v in self.evaluator.state.metrics.items()]
        if getattr(state, "posterior_samples", 0):
            parts.append(f"posterior samples {state.posterior_samples}")
        parts.append(f"{time.perf_counter() - self._start:.1f}s")
        self.logger.info(" | ".join(parts))
