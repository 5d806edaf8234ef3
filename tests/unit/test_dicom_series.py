"""DICOM MR series writer: geometry and intensities round-trip through MONAI's ITK reader."""

import numpy as np
import pydicom
import pytest
from monai.transforms import LoadImage

from scripts.dicom_series import write_mr_series
from scripts.synthetic import save_nifti, synthesize_subject


@pytest.fixture(scope="module")
def subject():
    return synthesize_subject(11, matrix=48)


@pytest.fixture(scope="module")
def itk_loader():
    return LoadImage(reader="ITKReader", image_only=True)


def test_nifti_and_dicom_load_identically(tmp_path, subject, itk_loader):
    nifti = save_nifti(subject.images["ED"], subject.affine, tmp_path / "ed.nii.gz")
    files = write_mr_series(nifti, tmp_path / "dicom", patient_id="SYN001", study_uid="1.2.826.0.1.3680043.8.498.1")
    assert len(files) == subject.images["ED"].shape[2]
    reference, loaded = itk_loader(nifti), itk_loader(tmp_path / "dicom")
    assert loaded.shape == reference.shape
    np.testing.assert_allclose(loaded.affine, reference.affine, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(loaded), np.asarray(reference))  # int16 pixels are stored as they are
    ds = pydicom.dcmread(files[1])
    assert ds.Modality == "MR" and ds.SOPClassUID == pydicom.uid.MRImageStorage
    assert ds.StudyInstanceUID == "1.2.826.0.1.3680043.8.498.1" and ds.PatientID == "SYN001"
    assert float(ds.SpacingBetweenSlices) == pytest.approx(subject.spacing[2], abs=1e-6)
    assert [float(v) for v in ds.PixelSpacing] == pytest.approx(subject.spacing[1::-1], abs=1e-6)
    assert (ds.Rows, ds.Columns) == subject.images["ED"].shape[1::-1]
    uids = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files}
    assert len(uids) == len(files)


def test_float_array_is_quantised_with_rescale(tmp_path, subject, itk_loader):
    volume = subject.images["ES"].astype(np.float32) * 0.37 - 12.5
    write_mr_series(volume, tmp_path / "dicom", "SYN002", affine=subject.affine)
    reference = itk_loader(save_nifti(volume, subject.affine, tmp_path / "es.nii.gz"))
    loaded = itk_loader(tmp_path / "dicom")
    np.testing.assert_allclose(loaded.affine, reference.affine, atol=1e-4)
    step = (volume.max() - volume.min()) / 65535
    assert np.abs(np.asarray(loaded) - volume).max() <= step * 0.51 + 1e-4


def test_left_handed_affine_keeps_voxels_in_place(tmp_path, subject, itk_loader):
    flipped = subject.affine.copy()
    flipped[:3, 3] += flipped[:3, 2] * (subject.images["ED"].shape[2] - 1)
    flipped[:3, 2] *= -1  # the same voxels listed apex to base: a left-handed affine
    volume = subject.images["ED"][:, :, ::-1]
    write_mr_series(volume, tmp_path / "dicom", "SYN003", affine=flipped)
    loaded = itk_loader(tmp_path / "dicom")
    reference = itk_loader(save_nifti(subject.images["ED"], subject.affine, tmp_path / "ed.nii.gz"))
    np.testing.assert_allclose(loaded.affine, reference.affine, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(loaded), np.asarray(reference))


def test_array_without_affine_is_refused(tmp_path):
    with pytest.raises(ValueError, match="affine"):
        write_mr_series(np.zeros((4, 4, 2)), tmp_path, "X")
