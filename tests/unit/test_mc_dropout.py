"""MC-Dropout: only the dropout modules run in training mode; the passes are averaged."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import DynUNet
from torch import nn

from scripts.mc_dropout import MCDropoutEnsemble, enable_dropout


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.norm = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.drop2d = nn.Dropout2d(0.5)
        self.head = nn.Conv2d(4, 3, 1)

    def forward(self, x):
        return self.head(self.drop2d(self.drop(self.norm(self.conv(x)))))


def test_mc_dropout_switches_on_only_the_dropout_modules():
    net = _Net()
    net.train()
    toggled = enable_dropout(net)
    assert set(toggled) == {net.drop, net.drop2d}
    assert all(m.training for m in toggled)
    assert not any(m.training for m in (net, net.conv, net.norm, net.head))

    modes = {}
    for name, module in net.named_modules():
        module.register_forward_hook(lambda m, i, o, name=name: modes.setdefault(name, set()).add(m.training))
    running_mean = net.norm.running_mean.clone()
    ensemble = MCDropoutEnsemble(net, samples=8, return_expected_entropy=True)
    ensemble.train()  # an engine asking for training mode changes nothing
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        p1, expected_entropy = ensemble(x)
        p2, _ = ensemble(x)
    assert modes["drop"] == {True} and modes["drop2d"] == {True}
    assert modes["norm"] == {False} and modes["conv"] == {False} and modes["head"] == {False}
    assert torch.equal(net.norm.running_mean, running_mean)  # batch norm used, never updated
    torch.testing.assert_close(p1.sum(1), torch.ones(2, 8, 8))
    assert not torch.allclose(p1, p2)  # stochastic passes
    assert expected_entropy.shape == (2, 1, 8, 8) and (expected_entropy >= 0).all()


def test_mc_dropout_of_the_bundle_network_and_without_dropout():
    kwargs = dict(
        spatial_dims=2,
        in_channels=1,
        out_channels=4,
        kernel_size=[3, 3, 3],
        strides=[1, 2, 2],
        upsample_kernel_size=[2, 2],
        filters=[4, 8, 16],
        norm_name=("INSTANCE", {"affine": True}),
    )
    net = DynUNet(**kwargs, dropout=0.1)
    enable_dropout(net)
    dropouts = [m for m in net.modules() if isinstance(m, nn.Dropout)]
    assert dropouts and all(m.training for m in dropouts)
    assert not any(m.training for m in net.modules() if not isinstance(m, nn.Dropout))
    with pytest.raises(ValueError, match="no dropout"):
        MCDropoutEnsemble(DynUNet(**kwargs), samples=4)
