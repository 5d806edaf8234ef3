"""The fast ensemble path: member order, heart box, crop and early stop, against the exact ensemble; and the
ensemble's own guarantees it relies on (half-precision members, one member per pass under concurrent callers)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from monai.inferers import SliceInferer

from scripts.ensemble import PosteriorEnsemble, load_posterior_ensemble
from scripts.fast_ensemble import FastEnsembleInferer, heart_box, settle_change, spread_order
from scripts.posterior_bank import PosteriorBank, PosteriorCheckpoint


def pixelwise_members(count: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Members of a 1x1 convolution (1 -> 4 classes): each pixel's output depends on that pixel only, so a crop
    changes nothing and the fast path must reproduce the exact ensemble inside its box. Class 0 (background) wins
    where the image is dark, the others where it is bright; the members differ a little."""
    g = torch.Generator().manual_seed(seed)
    base_w, base_b = torch.tensor([-4.0, 3.0, 4.0, 5.0]), torch.tensor([2.0, -3.0, -3.5, -4.0])
    return [
        {"weight": (base_w + 0.5 * torch.randn(4, generator=g)).view(4, 1, 1, 1),
         "bias": base_b + 0.3 * torch.randn(4, generator=g)}
        for _ in range(count)
    ]


def heart_image() -> torch.Tensor:
    """(1, 1, 48, 40, 3): a bright square (the 'heart') at rows 20-27, columns 10-17, in a dark field."""
    image = torch.zeros(1, 1, 48, 40, 3)
    image[:, :, 20:28, 10:18] = 1.0
    return image


def inferer(roi=(48, 40)) -> SliceInferer:
    return SliceInferer(roi_size=roi, sw_batch_size=4, spatial_dim=2, overlap=0.25, mode="gaussian")


def test_spread_order_alternates_cycles_and_spreads_epochs():
    cycles = [0] * 10 + [1] * 10 + [2] * 10
    order = spread_order(cycles)
    assert sorted(order) == list(range(30))
    assert [cycles[i] for i in order[:6]] == [2, 1, 0, 2, 1, 0]  # the last cycle first, then take turns
    assert order[:3] == [25, 15, 5]  # the middle of each cycle, then its quarters
    assert sorted(order[3:6]) == [2, 12, 22]
    assert spread_order([0]) == [0] and sorted(spread_order([0, 0, 0])) == [0, 1, 2]


def test_heart_box_margin_multiple_and_bounds():
    p = torch.zeros(1, 4, 48, 40, 3)
    p[:, 0] = 1.0
    assert heart_box(p, [0, 1], margin=4, multiple=8) is None  # no heart: no box
    p[:, 0, 20:28, 10:18, 1], p[:, 3, 20:28, 10:18, 1] = 0.0, 1.0
    box = heart_box(p, [0, 1], margin=4, multiple=8)
    assert box[2] == slice(None)  # the slice dim is never cropped
    assert box[0] == slice(16, 32) and box[1] == slice(6, 22)  # 8 + 2 x 4 = 16: a multiple of 8 already
    box = heart_box(p, [0, 1], margin=5, multiple=8)  # 18 -> 24, centred, within the image
    assert (box[0].stop - box[0].start, box[1].stop - box[1].start) == (24, 24)
    assert box[0].start <= 15 and box[0].stop >= 33 and box[1].start >= 0
    box = heart_box(p, [0, 1], margin=30, multiple=8)  # wider than the image: the whole dimension
    assert box[0] == slice(0, 48) and box[1] == slice(0, 40)


def test_heart_box_ignores_scattered_false_positives():
    p = torch.zeros(1, 4, 48, 40, 3)
    p[:, 0] = 1.0
    p[:, 0, 20:28, 10:18], p[:, 3, 20:28, 10:18] = 0.0, 1.0  # the heart, in every slice
    p[:, 0, 2:4, 36:38, 0], p[:, 1, 2:4, 36:38, 0] = 0.0, 1.0  # a speckle in a corner of one slice
    p[:, 0, 45, 1, 2], p[:, 2, 45, 1, 2] = 0.0, 1.0  # and one voxel in the opposite corner of another
    assert heart_box(p, [0, 1], margin=4, multiple=8) == (slice(16, 32), slice(6, 22), slice(None))


def test_without_crop_and_stop_it_is_the_exact_ensemble():
    members = pixelwise_members(5)
    ensemble = PosteriorEnsemble(torch.nn.Conv2d(1, 4, 1), members, return_expected_entropy=True)
    image = heart_image() + 0.1 * torch.randn(1, 1, 48, 40, 3, generator=torch.Generator().manual_seed(1))
    exact_p, exact_h = inferer()(image, ensemble)
    fast = FastEnsembleInferer(inferer(), crop_margin=None, tolerance=0.0)
    p, h = fast(image, ensemble)
    torch.testing.assert_close(p, exact_p, atol=1e-6, rtol=0)
    torch.testing.assert_close(h, exact_h, atol=1e-5, rtol=0)
    assert sorted(fast.last_run().members) == list(range(5)) and fast.last_run().box is None


def test_crop_keeps_the_ensemble_inside_the_box_and_the_first_member_outside():
    members = pixelwise_members(4)
    ensemble = PosteriorEnsemble(torch.nn.Conv2d(1, 4, 1), members)
    image = heart_image()
    exact = inferer()(image, ensemble)
    fast = FastEnsembleInferer(inferer(), crop_margin=3, tolerance=0.0, size_divisible=4)
    out = fast(image, ensemble)
    run = fast.last_run()
    assert run.box[0] == slice(16, 32) and run.box[1] == slice(6, 22)  # 8 + 2 x 3 = 14 -> 16, centred
    inside = (slice(None), slice(None), *run.box)
    torch.testing.assert_close(out[inside], exact[inside], atol=1e-6, rtol=0)
    first = inferer()(image, PosteriorEnsemble(torch.nn.Conv2d(1, 4, 1), [members[run.members[0]]]))
    outside = torch.ones_like(out, dtype=torch.bool)
    outside[inside] = False
    torch.testing.assert_close(out[outside], first[outside], atol=1e-6, rtol=0)
    torch.testing.assert_close(out.sum(1), torch.ones(1, 48, 40, 3))


class StridedConv(torch.nn.Conv2d):
    """A 1x1 convolution that, like a U-Net with strides of product 8, only takes sizes divisible by 8."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[-2] % 8 == 0 and x.shape[-1] % 8 == 0, f"size {tuple(x.shape[-2:])} is not a multiple of 8"
        return super().forward(x)


def test_box_cut_by_the_image_border_is_padded_to_the_strides():
    """A box as tall as an image whose size is no multiple of the strides (here 45 rows): the later members'
    window is rounded up to the strides and the sliding window pads the box to it (the demo's first failure)."""
    members = pixelwise_members(3)
    ensemble = PosteriorEnsemble(StridedConv(1, 4, 1), members)
    image = torch.zeros(1, 1, 45, 40, 2)
    image[:, :, 2:43, 12:20] = 1.0  # taller than the image once the margin is added
    fast = FastEnsembleInferer(inferer(roi=(48, 40)), crop_margin=4, tolerance=0.0, size_divisible=8)
    out = fast(image, ensemble)
    assert fast.last_run().box[0] == slice(0, 45) and fast.last_run().box[1].stop - fast.last_run().box[1].start == 16
    inside = (slice(None), slice(None), *fast.last_run().box)
    torch.testing.assert_close(out[inside], inferer(roi=(48, 40))(image, ensemble)[inside], atol=1e-6, rtol=0)


def test_stops_when_the_mean_has_settled_and_not_before_min_members():
    same = pixelwise_members(1) * 6  # six identical members: the mean never moves
    ensemble = PosteriorEnsemble(torch.nn.Conv2d(1, 4, 1), same)
    fast = FastEnsembleInferer(inferer(), crop_margin=3, tolerance=1e-4, min_members=3)
    fast(heart_image(), ensemble)
    assert len(fast.last_run().members) == 3
    different = PosteriorEnsemble(torch.nn.Conv2d(1, 4, 1), pixelwise_members(6, seed=2))
    fast(heart_image(), different)
    assert len(fast.last_run().members) == 6  # members that disagree: all are needed at this tolerance


def test_settle_change_is_the_largest_probability_change_per_slice():
    a = torch.zeros(1, 2, 4, 4, 2)
    b = a.clone()
    b[0, 1, 0, 0, 0] = 0.2  # one voxel of slice 0 moves by 0.2, slice 1 does not
    assert settle_change(a, b) == pytest.approx(0.1)


def test_other_networks_go_through_the_plain_inferer():
    network = torch.nn.Conv2d(1, 4, 1)
    image = heart_image()
    fast = FastEnsembleInferer(inferer(), crop_margin=3)
    torch.testing.assert_close(fast(image, network), inferer()(image, network))
    single = PosteriorEnsemble(network, [network.state_dict()])
    torch.testing.assert_close(fast(image, single), inferer()(image, single))
    assert fast.last_run() is None


def test_half_precision_members_halve_memory_and_round_like_a_half_precision_bank(tmp_path):
    members = pixelwise_members(3)
    exact = PosteriorEnsemble(torch.nn.Conv2d(1, 4, 1), members)
    half = PosteriorEnsemble(torch.nn.Conv2d(1, 4, 1), members, weights_dtype=torch.float16)
    assert half.member_0.dtype == torch.float16 and half.member_0.element_size() * 2 == exact.member_0.element_size()
    assert half.member_weights(0)["weight"].dtype == torch.float32  # computed in the network's precision
    image = heart_image()[..., 0]
    torch.testing.assert_close(half(image), exact(image), atol=2e-3, rtol=0)
    bank = PosteriorBank(tmp_path)  # a half-precision bank on disk gives exactly the same members
    for epoch, sd in enumerate(members):
        bank.add({k: v.half() for k, v in sd.items()}, epoch=epoch, cycle=0, lr=0.01, num_cycles=1)
    from_bank = load_posterior_ensemble(torch.nn.Conv2d(1, 4, 1), tmp_path, mode="all", weights_dtype="float16")
    for j in range(len(half.keys)):
        assert torch.equal(getattr(from_bank, f"member_{j}"), getattr(half, f"member_{j}"))
    assert [c.epoch for c in from_bank.checkpoints] == [0, 1, 2]


class SlowScale(torch.nn.Module):
    """Reads its weight twice with a pause between: a pass that saw two members' weights returns a mixed value."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = x * self.weight
        time.sleep(0.002)
        return first + x * self.weight


def test_concurrent_callers_each_get_their_own_member():
    ensemble = PosteriorEnsemble(SlowScale(), [{"weight": torch.tensor([float(i)])} for i in range(8)])
    image = torch.ones(2, 1, 4, 4)
    with ThreadPoolExecutor(max_workers=8) as pool:
        together = list(pool.map(lambda k: ensemble.member_logits(image, k % 8), range(64)))
    for k, logits in enumerate(together):
        assert torch.equal(logits, torch.full_like(image, 2.0 * (k % 8)))


def test_checkpoints_give_the_order_of_cycles():
    checkpoints = [PosteriorCheckpoint(f"e{t}.pt", t, t // 3, 0.01, "") for t in range(6)]
    ensemble = PosteriorEnsemble(torch.nn.Conv2d(1, 4, 1), pixelwise_members(6), checkpoints=checkpoints)
    fast = FastEnsembleInferer(inferer(), crop_margin=None)
    fast(heart_image(), ensemble)
    assert [checkpoints[i].cycle for i in fast.last_run().members] == [1, 0, 1, 0, 1, 0]
