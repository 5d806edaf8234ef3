"""The paper's top-label ECE: equal to torchmetrics on continuous confidences, to hand computation, and measured
in the foreground box of reference and prediction."""

from __future__ import annotations

import importlib
import sys
from importlib.metadata import PackageNotFoundError

import pytest
import torch

from scripts.calibration import CalibrationBins, calibration_bins, expected_calibration_error, volume_calibration
from scripts.uncertainty import foreground_box


@pytest.fixture(scope="module")
def torchmetrics_calibration_error():
    """``torchmetrics``' ``multiclass_calibration_error``, imported with ``torchvision`` hidden.

    ``monailabel`` pulls in a ``torchvision`` that does not import next to the CPU torch (see the design notes);
    ``torchmetrics`` imports it whenever its metadata is installed, so the import is made with it hidden."""
    lightning_imports = importlib.import_module("lightning_utilities.core.imports")
    real_version = lightning_imports._version

    def version(name: str) -> str:
        if name == "torchvision":
            raise PackageNotFoundError(name)
        return real_version(name)

    saved = sys.modules.get("torchvision", None)
    lightning_imports._version = version
    sys.modules["torchvision"] = None  # find_spec answers "not installed"
    try:
        from torchmetrics.functional.classification import multiclass_calibration_error
    finally:
        lightning_imports._version = real_version
        if saved is None:
            sys.modules.pop("torchvision", None)
        else:
            sys.modules["torchvision"] = saved
    return multiclass_calibration_error


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("num_classes", [2, 4])
def test_equals_torchmetrics_on_random_arrays(torchmetrics_calibration_error, seed, num_classes):
    g = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(500, num_classes, generator=g, dtype=torch.float64)
    probabilities = torch.softmax(logits, dim=1)
    target = torch.randint(0, num_classes, (500,), generator=g)
    # torchmetrics bins in float32, hence agreement to 1e-6 rather than to the last digit
    expected = torchmetrics_calibration_error(probabilities, target, num_classes, n_bins=100, norm="l1")
    assert expected_calibration_error(probabilities, target, n_bins=100) == pytest.approx(float(expected), abs=1e-6)
    for n_bins in (10, 15):
        expected = torchmetrics_calibration_error(probabilities, target, num_classes, n_bins=n_bins, norm="l1")
        assert expected_calibration_error(probabilities, target, n_bins=n_bins) == pytest.approx(
            float(expected), abs=1e-6
        )


def _probabilities(confidences, predictions, num_classes=4):
    """Rows whose top class is ``predictions[i]`` with probability ``confidences[i]``, the rest spread evenly."""
    rows = []
    for c, k in zip(confidences, predictions, strict=True):
        row = torch.full((num_classes,), (1 - c) / (num_classes - 1), dtype=torch.float64)
        row[k] = c
        rows.append(row)
    return torch.stack(rows)


def test_hand_computed_case():
    # bins (90, 91]: 0.905 right and 0.905 wrong -> |0.905 - 0.5| * 2/4; (65, 66]: 0.655 right -> |0.655 - 1| * 1/4;
    # (30, 31]: 0.305 wrong -> |0.305 - 0| * 1/4
    probabilities = _probabilities([0.905, 0.905, 0.655, 0.305], [1, 2, 3, 0])
    target = torch.tensor([1, 0, 3, 2])
    expected = (2 * 0.405 + 0.345 + 0.305) / 4
    assert expected_calibration_error(probabilities, target) == pytest.approx(expected)
    assert expected == pytest.approx(0.365)


def test_bins_are_closed_on_the_right_as_in_the_paper():
    # a confidence of exactly 1 shares the bin (99%, 100%] with 0.995 (torchmetrics keeps a bin for 1.0 alone):
    # one bin of mean confidence 0.9975 and accuracy 0.5
    probabilities = _probabilities([1.0, 0.995], [1, 1])
    assert expected_calibration_error(probabilities, torch.tensor([0, 1])) == pytest.approx(0.4975)
    # a confidence of exactly 0.5 belongs to (49%, 50%], with 0.495, not to (50%, 51%] with 0.505
    bins = calibration_bins(torch.tensor([0.495, 0.5, 0.505]), torch.tensor([1, 1, 1]))
    assert bins.count[49] == 2 and bins.count[50] == 1


def test_pooled_bins_equal_the_bins_of_all_voxels():
    g = torch.Generator().manual_seed(0)
    confidence, correct = torch.rand(300, generator=g), torch.rand(300, generator=g) > 0.3
    pooled = CalibrationBins.empty(100)
    pooled += calibration_bins(confidence[:100], correct[:100])
    pooled += calibration_bins(confidence[100:], correct[100:])
    assert pooled.ece() == pytest.approx(calibration_bins(confidence, correct).ece())
    coarse = pooled.coarsen(5)
    assert coarse.n_bins == 20 and coarse.ece() == pytest.approx(calibration_bins(confidence, correct, 20).ece())


def test_foreground_box_of_reference_and_prediction():
    reference = torch.zeros(10, 12, 4, dtype=torch.long)
    reference[2:4, 3:5, 1] = 1
    prediction = torch.zeros_like(reference)
    prediction[5, 8, 2] = 3
    assert foreground_box(reference, prediction) == (slice(2, 6), slice(3, 9), slice(1, 3))
    assert foreground_box(reference) == (slice(2, 4), slice(3, 5), slice(1, 2))
    assert foreground_box(torch.zeros_like(reference)) is None


def test_volume_ece_counts_only_the_foreground_box():
    label = torch.zeros(8, 8, 3, dtype=torch.long)
    label[2:4, 2:4, 1] = 3  # a 2 x 2 LV in one slice
    probabilities = torch.zeros(4, 8, 8, 3, dtype=torch.float64)
    probabilities[0] = 0.55  # background everywhere, at confidence 0.55 (badly calibrated: always right)
    probabilities[1:] = 0.15
    probabilities[:, 2:4, 2:4, 1] = torch.tensor([0.1, 0.1, 0.1, 0.7])[:, None, None]  # LV at 0.7, right
    probabilities[:, 5, 5, 1] = torch.tensor([0.1, 0.8, 0.05, 0.05])  # a false RV voxel at 0.8 widens the box
    ece = volume_calibration(probabilities, label).ece()
    box = (slice(2, 6), slice(2, 6), slice(1, 2))  # rows 2..5, columns 2..5 of slice 1: 16 voxels
    in_box = probabilities[(slice(None), *box)].reshape(4, -1).T
    assert ece == pytest.approx(expected_calibration_error(in_box, label[box].reshape(-1)))
    # 4 LV voxels at 0.7 right, 1 RV voxel at 0.8 wrong, 11 background voxels at 0.55 right
    assert ece == pytest.approx((4 * 0.3 + 0.8 + 11 * 0.45) / 16)
    assert volume_calibration(probabilities, label[None]).ece() == pytest.approx(ece)  # a channel of one is fine
