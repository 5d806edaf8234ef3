"""Bad images and labels stop with the file, the problem and the fix."""

import pytest
import torch
from monai.data import MetaTensor

from scripts.input_checks import InputError, ValidateLabelsd, ValidateStackd


def named(array, name="case.nii.gz"):
    return MetaTensor(array, meta={"filename_or_obj": f"/data/{name}"})


@pytest.mark.parametrize(
    "shape, message",
    [
        ((1, 32, 32, 8, 20), "4D .*Extract one frame"),
        ((20, 32, 32, 8), "4D"),
        ((1, 32, 32), "2D"),
        ((1, 4, 4, 8), "too small"),
    ],
)
def test_stack_shape(shape, message):
    with pytest.raises(InputError, match=f"case.nii.gz.*{message}"):
        ValidateStackd("image")({"image": named(torch.zeros(shape))})


def test_valid_stack_passes_untouched():
    image = named(torch.rand(1, 32, 32, 8))
    assert ValidateStackd("image")({"image": image})["image"] is image


def test_non_finite_values():
    image = torch.zeros(1, 16, 16, 2)
    image[0, 0, 0, 0] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        ValidateStackd("image")({"image": named(image)})


def test_label_values_outside_acdc():
    label = torch.zeros(1, 16, 16, 2)
    label[0, 0, 0, 0] = 4
    with pytest.raises(InputError, match=r"case_gt.nii.gz: label values \[4\].*Remap"):
        ValidateLabelsd("label")({"image": named(torch.zeros(1, 16, 16, 2)), "label": named(label, "case_gt.nii.gz")})


def test_label_of_another_shape():
    with pytest.raises(InputError, match="differs from its image"):
        ValidateLabelsd("label")(
            {"image": named(torch.zeros(1, 16, 16, 2)), "label": named(torch.zeros(1, 16, 16, 3), "gt.nii.gz")}
        )
