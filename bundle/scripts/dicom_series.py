"""Write a 3D stack as a DICOM MR image series, one file per slice.

Why: viewers and PACS speak DICOM. The bundle's inference reads DICOM folders, and the MONAI Label app
is demonstrated with studies served by Orthanc over DICOMweb to OHIF, so synthetic (or NIfTI) stacks
must become real MR series with exact geometry: loading the folder back with
``monai.transforms.LoadImage(reader="ITKReader")`` gives the shape, affine and intensities (within the
quantisation) of the NIfTI file read by the same loader.

Geometry: the input affine is NIfTI's RAS voxel-to-world matrix; DICOM patient coordinates are LPS.
Array axis 0 runs along the DICOM row direction (columns of pixels), axis 1 along the column direction
and axis 2 across slices, as ITK (and MONAI's ITKReader) index them.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import nibabel as nib
import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid
from pydicom.valuerep import format_number_as_ds

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _ds(value: float) -> str:
    """A decimal string that fits DICOM's 16 characters."""
    return format_number_as_ds(float(value))


def _quantise(volume: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Stored 16-bit pixels with slope and intercept such that ``volume ~= stored * slope + intercept``.

    Integer-valued volumes that fit 16 bits are stored as they are (slope 1); anything else is mapped
    linearly onto the full uint16 range, so the error is at most half a step of (max - min) / 65535.
    """
    volume = np.asarray(volume)
    low, high = float(volume.min()), float(volume.max())
    if np.array_equal(volume, np.rint(volume)):
        if low >= 0 and high <= np.iinfo(np.uint16).max:
            return volume.astype(np.uint16), 1.0, 0.0
        if low >= np.iinfo(np.int16).min and high <= np.iinfo(np.int16).max:
            return volume.astype(np.int16), 1.0, 0.0
    slope = (high - low) / np.iinfo(np.uint16).max if high > low else 1.0
    stored = np.rint((volume.astype(np.float64) - low) / slope)
    return stored.astype(np.uint16), slope, low


def write_mr_series(
    image: str | Path | np.ndarray,
    output_dir: str | Path,
    patient_id: str,
    study_uid: str | None = None,
    affine: np.ndarray | None = None,
    series_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    patient_name: str | None = None,
    study_description: str = "Cardiac MRI",
    series_description: str = "SA cine",
    series_number: int = 1,
    slice_thickness: float | None = None,
) -> list[Path]:
    """Write ``image`` as an MR series in ``output_dir`` (``0001.dcm``, ``0002.dcm``, ...) and return the files.

    Args:
        image: a NIfTI file, or a 3D array (H, W, S) together with ``affine``.
        output_dir: folder for the series (created; hold one series per folder for ITK's reader).
        patient_id: PatientID (and PatientName unless given).
        study_uid: StudyInstanceUID; a new one when None. Pass the same value to put several series
            (e.g. ED and ES) in one study.
        affine: 4x4 RAS voxel-to-world matrix of an array ``image`` (ignored for a file).
        series_uid, frame_of_reference_uid: new ones when None.
        patient_name, study_description, series_description, series_number: descriptive tags.
        slice_thickness: SliceThickness in mm; the slice spacing when None.

    A left-handed affine (possible in NIfTI, not in a DICOM stack sorted along its normal) is written
    with its slice order reversed: the same voxels in space, loaded back with the third axis flipped.
    """
    if isinstance(image, (str, Path)):
        nifti = nib.load(str(image))
        volume, affine = np.asarray(nifti.dataobj), nifti.affine
    elif affine is None:
        raise ValueError("write_mr_series needs the affine of an array image; pass affine=<4x4 RAS matrix>.")
    else:
        volume = np.asarray(image)
    if volume.ndim != 3:
        raise ValueError(f"write_mr_series writes 3D stacks; got shape {volume.shape}.")
    affine = np.asarray(affine, dtype=np.float64)
    columns = affine[:3, :3]
    spacing = np.linalg.norm(columns, axis=0)
    directions = columns / spacing
    if not np.allclose(directions.T @ directions, np.eye(3), atol=1e-4):
        raise ValueError("The affine has sheared (non-orthogonal) axes, which a DICOM stack cannot represent.")
    if np.linalg.det(directions) < 0:
        volume = volume[:, :, ::-1]
        affine = affine.copy()
        affine[:3, 3] += affine[:3, 2] * (volume.shape[2] - 1)
        affine[:3, 2] *= -1
    lps = RAS_TO_LPS @ affine
    stored, slope, intercept = _quantise(volume)
    rows_dir, cols_dir = lps[:3, 0] / spacing[0], lps[:3, 1] / spacing[1]
    normal = lps[:3, 2] / spacing[2]
    window_low, window_high = np.percentile(volume, [0.5, 99.5])

    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    frame_of_reference_uid = frame_of_reference_uid or generate_uid()
    now = datetime.datetime.now()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for k in range(stored.shape[2]):
        position = lps[:3, 3] + k * lps[:3, 2]
        sop_uid = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = output_dir / f"{k + 1:04d}.dcm"
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, sop_uid
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.FrameOfReferenceUID = frame_of_reference_uid
        ds.PatientID, ds.PatientName = patient_id, patient_name or patient_id
        ds.PatientBirthDate, ds.PatientSex = "", ""
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
        ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "1", "", ""
        ds.StudyDescription, ds.SeriesDescription = study_description, series_description
        ds.Modality, ds.Manufacturer = "MR", "synthetic"
        ds.SeriesNumber, ds.InstanceNumber, ds.AcquisitionNumber = series_number, k + 1, 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions = "GR", "SS", ""
        ds.MRAcquisitionType = "2D"
        ds.ImagePositionPatient = [_ds(v) for v in position]
        ds.ImageOrientationPatient = [_ds(v) for v in (*rows_dir, *cols_dir)]
        ds.PixelSpacing = [_ds(spacing[1]), _ds(spacing[0])]  # between rows, between columns
        ds.SliceThickness = _ds(slice_thickness or spacing[2])
        ds.SpacingBetweenSlices = _ds(spacing[2])
        ds.SliceLocation = _ds(position @ normal)
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = stored.shape[1], stored.shape[0]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = int(stored.dtype == np.int16)
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = _ds(intercept), _ds(slope), "US"
        ds.WindowCenter, ds.WindowWidth = _ds((window_low + window_high) / 2), _ds(max(window_high - window_low, 1))
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()
        ds.save_as(str(path), write_like_original=False)
        files.append(path)
    return files

