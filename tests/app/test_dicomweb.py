"""Orthanc as the datastore: infer on an MR series over DICOMweb, and a saved correction goes back as DICOM SEG."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import requests
from monai.transforms import LoadImage

SEGMENTATION = "segmentation_uncertainty"
AS_SLICER = {"result_extension": ".nrrd", "result_dtype": "uint8"}
# what a client sends with a corrected label; the first entry's model_name becomes the SEG's series description
LABEL_INFO = [{"name": "RV", "idx": 1, "model_name": "Corrected RV MYO LV"}, {"name": "MYO", "idx": 2},
              {"name": "LV", "idx": 3}]

pytestmark = pytest.mark.system
read = LoadImage(reader="ITKReader", image_only=True)


def test_infer_on_an_orthanc_series_and_save_the_correction_as_dicom_seg(dicomweb_study, tmp_path):
    study = dicomweb_study
    client = study.server.client(tmp_path)
    # the MR series is listed through DICOMweb (QIDO with the MR search filter) as the one unlabeled image
    assert client.next_sample("most_uncertain", {})["id"] == study.series_uid

    label_file, params = client.infer(SEGMENTATION, study.series_uid, AS_SLICER)
    image = read(study.image)
    seg = read(label_file)
    assert seg.shape == image.shape  # the series, fetched over DICOMweb, has the geometry of the stack it came from
    np.testing.assert_allclose(seg.affine, image.affine, atol=1e-3)
    entropy = read(client.download_label(study.series_uid, "uncertainty"))
    assert entropy.shape == image.shape and 0.0 <= float(entropy.min()) and float(entropy.max()) <= 2.0 + 1e-5
    assert len(params["checkpoints"]) == 2

    client.save_label(study.series_uid, str(study.reference), tag="final", params={"label_info": LABEL_INFO})
    found = requests.get(f"{study.orthanc.dicomweb}/studies/{study.study_uid}/series", params={"Modality": "SEG"},
                         timeout=30)
    assert found.status_code == 200, found.text
    (seg_series,) = found.json()
    seg_uid = seg_series["0020000E"]["Value"][0]
    (instance,) = requests.get(f"{study.orthanc.dicomweb}/studies/{study.study_uid}/series/{seg_uid}/metadata",
                               timeout=30).json()
    dataset = pydicom.Dataset.from_json(instance)
    assert dataset.Modality == "SEG" and dataset.SeriesDescription == "Corrected RV MYO LV"
    assert dataset.ReferencedSeriesSequence[0].SeriesInstanceUID == study.series_uid
    assert [s.SegmentLabel for s in dataset.SegmentSequence] == ["RV", "MYO", "LV"]
