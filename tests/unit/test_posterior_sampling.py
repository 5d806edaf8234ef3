"""The weights the posterior sampler writes: a half-precision bank really takes half the disk of a float32 one."""

from __future__ import annotations

import torch
from monai.networks.nets import DynUNet

from scripts.posterior_sampling import cpu_state_dict


def _network() -> DynUNet:
    # deep supervision makes DynUNet name its decoder blocks twice in its state_dict
    return DynUNet(2, 1, 4, kernel_size=[3, 3, 3], strides=[1, 2, 2], upsample_kernel_size=[2, 2],
                   filters=[8, 16, 32], deep_supervision=True, deep_supr_num=1)


def test_half_precision_checkpoint_is_half_the_size_and_keeps_every_name(tmp_path):
    network = _network()
    assert len(network.state_dict()) > len(dict(network.named_parameters()) | dict(network.named_buffers()))
    full, half = cpu_state_dict(network), cpu_state_dict(network, torch.float16)
    torch.save(full, tmp_path / "full.pt")
    torch.save(half, tmp_path / "half.pt")
    ratio = (tmp_path / "half.pt").stat().st_size / (tmp_path / "full.pt").stat().st_size
    assert ratio < 0.55, f"a float16 checkpoint takes {ratio:.2f} of the float32 one"
    loaded = torch.load(tmp_path / "half.pt", weights_only=True)
    assert loaded.keys() == network.state_dict().keys()
    for name, tensor in network.state_dict().items():
        assert loaded[name].dtype == torch.float16
        torch.testing.assert_close(loaded[name].float(), tensor, atol=1e-3, rtol=1e-3)
    _network().load_state_dict({k: v.float() for k, v in loaded.items()})  # it loads back into the network


def test_float32_checkpoint_shares_like_the_network(tmp_path):
    network = _network()
    torch.save(cpu_state_dict(network), tmp_path / "ours.pt")
    torch.save(network.state_dict(), tmp_path / "plain.pt")
    torch.save({k: v.clone() for k, v in network.state_dict().items()}, tmp_path / "unshared.pt")
    ours, plain, unshared = ((tmp_path / f"{n}.pt").stat().st_size for n in ("ours", "plain", "unshared"))
    assert ours <= 1.1 * plain and unshared > 1.5 * ours  # shared tensors written once, as torch.save does
