"""The weight-trajectory recorder: one file per epoch with the chosen layer's weights, off unless enabled."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Engine

from scripts.weight_trajectory import WeightTrajectoryRecorder, load_trajectory


def test_weight_trajectory_records_every_epoch(tmp_path):
    network = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 2))

    def step(engine, batch):
        with torch.no_grad():
            network[1].weight += 1.0

    trainer = Engine(step)
    WeightTrajectoryRecorder(tmp_path / "trajectory", network, "1.weight", enabled=True).attach(trainer)
    WeightTrajectoryRecorder(tmp_path / "off", network, "1.weight", enabled=False).attach(trainer)
    trainer.run([0, 1], max_epochs=3)  # two iterations per epoch
    epochs, weights, parameter = load_trajectory(tmp_path / "trajectory")
    assert epochs.tolist() == [0, 1, 2] and parameter == "1.weight" and weights.shape == (3, 4)
    assert weights[2, 0] - weights[0, 0] == pytest.approx(4.0)
    assert not (tmp_path / "off").exists()
    with pytest.raises(ValueError, match="no parameter"):
        WeightTrajectoryRecorder(tmp_path, network, "2.weight", enabled=True)
    with pytest.raises(FileNotFoundError, match="record_trajectory"):
        load_trajectory(tmp_path / "off")
