"""Checkpoint-ensemble prediction: the mean of the members' softmax (Eq. 2), and its entropy (Eq. 3)."""

import math

import pytest
import torch
from monai.networks.nets import DynUNet

from scripts.ensemble import PosteriorEnsemble, load_posterior_ensemble
from scripts.posterior_bank import BankError, PosteriorBank
from scripts.uncertainty import foreground_box, mutual_information, predictive_entropy, volume_uncertainty


class FixedLogits(torch.nn.Module):
    """A 'network' that outputs its bias as logits at every pixel: members differ only by the bias."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(3))

    def forward(self, x):
        return self.bias.view(1, 3, 1, 1).expand(x.shape[0], 3, *x.shape[2:])


def test_averages_probabilities_not_logits():
    # Two members with opposite confident logits: their mean logits are uniform-ish, their mean softmax is not.
    members = [{"bias": torch.tensor([4.0, 0.0, 0.0])}, {"bias": torch.tensor([0.0, 0.0, 8.0])}]
    ensemble = PosteriorEnsemble(FixedLogits(), members)
    out = ensemble(torch.zeros(1, 1, 2, 2))[0, :, 0, 0]
    mean_softmax = (torch.softmax(members[0]["bias"], 0) + torch.softmax(members[1]["bias"], 0)) / 2
    softmax_of_mean_logits = torch.softmax((members[0]["bias"] + members[1]["bias"]) / 2, 0)
    assert torch.allclose(out, mean_softmax, atol=1e-6)
    assert not torch.allclose(out, softmax_of_mean_logits, atol=1e-2)
    assert torch.allclose(out.sum(), torch.tensor(1.0))


def test_temperature_divides_logits_before_softmax():
    member = {"bias": torch.tensor([3.0, 0.0, -1.0])}
    out = PosteriorEnsemble(FixedLogits(), [member], temperature=1.5)(torch.zeros(1, 1, 1, 1))[0, :, 0, 0]
    assert torch.allclose(out, torch.softmax(member["bias"] / 1.5, 0), atol=1e-6)


def test_entropy_in_bits_by_hand():
    p = torch.tensor([0.5, 0.25, 0.25, 0.0]).view(4, 1)
    # H = -(0.5 log2 0.5 + 2 * 0.25 log2 0.25) = 0.5 + 1 = 1.5 bits; the zero class contributes nothing
    assert predictive_entropy(p).item() == pytest.approx(1.5)
    assert predictive_entropy(torch.full((4, 1), 0.25)).item() == pytest.approx(2.0)  # log2(4): the maximum
    assert predictive_entropy(torch.tensor([1.0, 0, 0, 0]).view(4, 1)).item() == pytest.approx(0.0, abs=1e-9)


def test_mutual_information_is_entropy_minus_expected_entropy():
    members = [{"bias": torch.tensor([5.0, 0.0, 0.0])}, {"bias": torch.tensor([0.0, 5.0, 0.0])}]
    mean, expected = PosteriorEnsemble(FixedLogits(), members, return_expected_entropy=True)(torch.zeros(1, 1, 1, 1))
    p = [torch.softmax(m["bias"], 0) for m in members]
    by_hand = sum(-(q * torch.log2(q)).sum() for q in p) / 2
    assert expected.item() == pytest.approx(by_hand.item(), rel=1e-5)
    mi = mutual_information(mean[0], expected[0]).item()
    assert mi == pytest.approx(predictive_entropy(mean[0]).item() - by_hand.item(), rel=1e-5)
    assert 0.0 < mi <= math.log2(3)


def small_dynunet():
    return DynUNet(2, 1, 4, [[3, 3]] * 3, [[1, 1], [2, 2], [2, 2]], [[2, 2], [2, 2]], filters=[4, 8, 16],
                   norm_name="instance", deep_supervision=True, deep_supr_num=1)


def test_members_of_a_dynunet_with_shared_decoder_blocks():
    nets = [small_dynunet() for _ in range(3)]
    ensemble = PosteriorEnsemble(small_dynunet(), [n.state_dict() for n in nets])
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        expected = sum(torch.softmax(n.eval()(x), 1) for n in nets) / 3
        assert torch.allclose(ensemble.eval()(x), expected, atol=1e-5)
    ensemble.train()
    assert not ensemble.network.training  # posterior samples are always evaluated as trained


def test_checkpoint_of_another_architecture_is_named(tmp_path):
    other = DynUNet(2, 1, 4, [[3, 3]] * 3, [[1, 1], [2, 2], [2, 2]], [[2, 2], [2, 2]], filters=[8, 16, 32])
    bank = PosteriorBank(tmp_path)
    bank.add(other.state_dict(), epoch=3, cycle=0, lr=0.01, num_cycles=1)
    with pytest.raises(BankError, match="epoch_00003.pt does not fit the configured network_def.*shape differs"):
        load_posterior_ensemble(small_dynunet(), tmp_path, mode="all")


def test_foreground_box_and_volume_score():
    seg = torch.zeros(8, 8, 2, dtype=torch.uint8)
    seg[2:4, 3:6, 1] = 3
    ref = torch.zeros_like(seg)
    ref[5, 1, 0] = 1
    assert foreground_box(seg) == (slice(2, 4), slice(3, 6), slice(1, 2))
    assert foreground_box(seg, ref) == (slice(2, 6), slice(1, 6), slice(0, 2))
    assert foreground_box(torch.zeros_like(seg)) is None
    entropy = torch.zeros(8, 8, 2)
    entropy[2:4, 3:6, 1] = 1.0
    assert volume_uncertainty(entropy, seg) == pytest.approx(1.0)
