"""Bad input and a bad checkpoint bank: a clear error that names the problem, and the server keeps serving."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pytest
from monailabel.client.client import MONAILabelClientException

SEGMENTATION = "segmentation_uncertainty"


def _refused(call, status: int, *phrases: str) -> None:
    with pytest.raises(MONAILabelClientException) as error:
        call()
    assert f"Status: {status};" in error.value.msg, error.value.msg
    for phrase in phrases:
        assert phrase in error.value.msg, error.value.msg


def _still_serving(client, studies) -> None:
    image_id = sorted(studies.references)[0]
    _, params = client.infer(SEGMENTATION, image_id, {"result_extension": ".nrrd", "result_dtype": "uint8"})
    assert 0.0 <= params["volume_uncertainty"] <= 2.0


def test_unknown_image_id(client, studies):
    _refused(lambda: client.infer(SEGMENTATION, "no_such_image", {}), 404, "'no_such_image'", "PUT /datastore/image")
    _still_serving(client, studies)


def test_upload_that_is_not_an_image(client, studies, tmp_path):
    report = tmp_path / "report.nii.gz"
    report.write_text("not an image, although its name says so")
    _refused(lambda: client.upload_image(str(report), "report"), 415, "could not be read as an image", "NIfTI")
    assert "report" not in client.datastore()["objects"]  # nothing was stored
    _refused(lambda: client.infer(SEGMENTATION, "", {}, file=str(report)), 415, "could not be read as an image")
    _still_serving(client, studies)


def test_images_of_the_wrong_dimensionality(client, studies, tmp_path):
    slice_2d = tmp_path / "slice.nii.gz"
    nib.save(nib.Nifti1Image(np.random.rand(64, 64).astype(np.float32), np.eye(4)), slice_2d)
    _refused(lambda: client.upload_image(str(slice_2d), "slice"), 422, "is 2D", "stack")
    assert "slice" not in client.datastore()["objects"]
    cine_4d = tmp_path / "cine.nii.gz"
    nib.save(nib.Nifti1Image(np.random.rand(64, 64, 8, 5).astype(np.float32), np.eye(4)), cine_4d)
    _refused(lambda: client.infer(SEGMENTATION, "", {}, file=str(cine_4d)), 422, "looks 4D", "ED or ES")
    _still_serving(client, studies)


def test_missing_then_corrupt_bank_is_a_503_naming_it_until_it_is_repaired(
    start_label_server, untrained_bundle, trained_bundle, fresh_studies, tmp_path
):
    server = start_label_server(fresh_studies.folder, untrained_bundle)
    client = server.client(tmp_path / "client")
    image_id = sorted(fresh_studies.references)[0]
    bank = untrained_bundle / "models" / "posterior"

    _refused(lambda: client.infer(SEGMENTATION, image_id, {}), 503, "checkpoint bank", "no checkpoint bank at", "Train")
    assert SEGMENTATION in client.info()["models"]

    shutil.copytree(trained_bundle[0] / "models" / "posterior", bank)
    damaged = sorted(bank.glob("epoch_*.pt"))[-1]
    original = damaged.read_bytes()
    damaged.write_bytes(original[:-64] + bytes(64))
    _refused(lambda: client.infer(SEGMENTATION, image_id, {}), 503, damaged.name, "does not match the sha256")

    damaged.write_bytes(original)  # repaired: served from the next request on, without a restart
    _still_serving(client, fresh_studies)


def test_a_final_label_that_training_would_refuse(client, studies, tmp_path):
    image_id = sorted(studies.references)[-1]
    reference = nib.load(studies.references[image_id])
    with_overlay = tmp_path / "with_overlay.nii.gz"  # anatomy plus an uncertainty level submitted as label 5
    values = np.asarray(reference.dataobj).copy()
    values[0, 0, 0] = 5
    nib.save(nib.Nifti1Image(values, reference.affine), with_overlay)
    _refused(lambda: client.save_label(image_id, str(with_overlay), tag="final"), 422, "label values [5]", "Remap")
    cropped = tmp_path / "cropped.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(reference.dataobj)[:32], reference.affine), cropped)
    _refused(lambda: client.save_label(image_id, str(cropped), tag="final"), 422, "differs from its image")
    assert "final" not in client.datastore()["objects"][image_id]["labels"]
    _refused(lambda: client.save_label("no_such_image", str(studies.references[image_id]), tag="final"), 404,
             "'no_such_image'")
    _still_serving(client, studies)
