"""SWA: the equal-weight average of the last cycle's posterior checkpoints."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from scripts.posterior_bank import PosteriorBank
from scripts.swa import load_swa_model, swa_state_dict


def _linear_state(value: float) -> dict[str, torch.Tensor]:
    return {"weight": torch.full((2, 3), value), "bias": torch.full((2,), -value)}


def test_swa_is_the_mean_of_the_weights():
    averaged = swa_state_dict(nn.Linear(3, 2), [_linear_state(v) for v in (1.0, 2.0, 6.0)])
    torch.testing.assert_close(averaged["weight"], torch.full((2, 3), 3.0))
    torch.testing.assert_close(averaged["bias"], torch.full((2,), -3.0))
    with pytest.raises(ValueError, match="batch-norm"):
        swa_state_dict(nn.BatchNorm1d(3), [nn.BatchNorm1d(3).state_dict()])


def test_swa_averages_the_last_cycle_of_a_bank(tmp_path):
    bank = PosteriorBank(tmp_path / "posterior")
    for epoch, cycle, value in ((2, 0, 100.0), (3, 0, 100.0), (6, 1, 1.0), (7, 1, 3.0)):
        bank.add(_linear_state(value), epoch=epoch, cycle=cycle, lr=0.01, num_cycles=2)
    model = load_swa_model(nn.Linear(3, 2), bank.directory)
    assert [c.epoch for c in model.checkpoints] == [6, 7]
    torch.testing.assert_close(model.member_weights(0)["weight"], torch.full((2, 3), 2.0))
