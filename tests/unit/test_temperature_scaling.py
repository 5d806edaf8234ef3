"""Temperature scaling: the fitted temperature is the one that generated the labels."""

from __future__ import annotations

import pytest
import torch

from scripts.temperature_scaling import fit_temperature


@pytest.mark.parametrize("true_temperature", [0.7, 1.0, 2.0])
def test_temperature_fitting_recovers_a_known_temperature(true_temperature):
    g = torch.Generator().manual_seed(0)
    logits = 4 * torch.randn(20000, 4, generator=g)
    target = torch.multinomial(torch.softmax(logits / true_temperature, dim=1), 1, generator=g)[:, 0]
    assert fit_temperature(logits, target) == pytest.approx(true_temperature, rel=0.05)


def test_temperature_fitting_rejects_bad_shapes():
    with pytest.raises(ValueError, match="need logits"):
        fit_temperature(torch.zeros(5, 4), torch.zeros(4, dtype=torch.long))
