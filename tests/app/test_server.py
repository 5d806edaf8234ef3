"""The app in a real MONAI Label server process, driven through ``MONAILabelClient`` (what the Slicer plugin uses)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import nrrd
import numpy as np
import requests
import torch
from monai.transforms import LoadImage

from scripts.posterior_bank import PosteriorBank
from scripts.uncertainty import volume_uncertainty

SEGMENTATION, OVERLAY = "segmentation_uncertainty", "uncertainty_overlay"
AS_SLICER = {"result_extension": ".nrrd", "result_dtype": "uint8", "result_compress": False}  # the plugin's request
LABEL_INFO = [{"name": "RV", "idx": 1}, {"name": "MYO", "idx": 2}, {"name": "LV", "idx": 3}]

read = LoadImage(reader="ITKReader", image_only=True)  # one reader for NIfTI and NRRD: the same orientation for both


def _image_id(studies, index: int = 0) -> str:
    return sorted(studies.references)[index]


def test_info_lists_both_tasks_with_their_labels(client):
    info = client.info()
    assert info["models"][SEGMENTATION]["labels"] == {"RV": 1, "MYO": 2, "LV": 3}
    assert info["models"][OVERLAY]["labels"] == {"low uncertainty": 1, "medium uncertainty": 2, "high uncertainty": 3}
    assert info["labels"] == ["RV", "MYO", "LV"]
    assert list(info["trainers"]) == ["cardiac_uncertainty"]
    assert list(info["strategies"]) == ["most_uncertain"] and list(info["scoring"]) == ["ensemble_uncertainty"]


def test_segmentation_returns_the_labelmap_and_stores_the_entropy_in_the_image_geometry(
    client, studies, trained_bundle
):
    image_id = _image_id(studies)
    image = read(studies.folder / f"{image_id}.nii.gz")
    label_file, params = client.infer(SEGMENTATION, image_id, AS_SLICER)

    assert label_file.endswith(".nrrd") and nrrd.read_header(label_file)["type"] == "unsigned char"
    seg = read(label_file)
    assert seg.shape == image.shape
    np.testing.assert_allclose(seg.affine, image.affine, atol=1e-4)
    assert set(np.unique(seg.numpy()).tolist()) <= {0, 1, 2, 3}

    assert params["uncertainty_label"] == {"label": image_id, "tag": "uncertainty"}
    entropy_file = client.download_label(image_id, "uncertainty")
    entropy = read(entropy_file)
    assert entropy.shape == image.shape and entropy.dtype == torch.float32
    np.testing.assert_allclose(entropy.affine, image.affine, atol=1e-4)
    assert 0.0 <= float(entropy.min()) and float(entropy.max()) <= 2.0 + 1e-5

    # params: the scores are those of the maps that came back, and the voters are the configured bank selection
    assert abs(params["volume_uncertainty"] - volume_uncertainty(entropy, seg)) < 1e-4
    assert params["review_suggested"] == (params["volume_uncertainty"] > params["review_threshold"])
    assert set(params["mean_entropy"]) == {"RV", "MYO", "LV"}
    for name, value in params["mean_entropy"].items():
        present = bool((seg == {"RV": 1, "MYO": 2, "LV": 3}[name]).any())
        assert (value is not None) == present and (value is None or 0.0 <= value <= 2.0)
    bank = PosteriorBank(trained_bundle[0] / "models" / "posterior")
    expected = {c.file: c.sha256 for c in bank.select("multi", 2)}  # tiny.json: mode multi, n = 2
    assert {c["file"]: c["sha256"] for c in params["checkpoints"]} == expected
    assert params["bank_dir"] == str(bank.directory)


def test_overlay_returns_the_entropy_as_named_levels(client, studies):
    image_id = _image_id(studies, 1)
    label_file, params = client.infer(OVERLAY, image_id, AS_SLICER)
    assert params["label_names"] == {"low uncertainty": 1, "medium uncertainty": 2, "high uncertainty": 3}
    levels = read(label_file)
    entropy = read(client.download_label(image_id, "uncertainty"))
    expected = torch.bucketize(entropy.as_tensor(), torch.tensor([0.1, 0.5, 1.0]), right=True)
    assert levels.shape == entropy.shape
    np.testing.assert_array_equal(levels.numpy(), expected.numpy())
    assert len(np.unique(levels.numpy())) > 1  # the tiny model is unsure somewhere, certain elsewhere


def test_ohif_request_gets_the_labelmap_file_only(server, studies):
    """OHIF v3's panel asks for ``output=image`` and reads an NRRD labelmap."""
    query = {"image": _image_id(studies), "output": "image"}
    response = requests.post(f"{server.url}/infer/{SEGMENTATION}", params=query,
                             data={"params": json.dumps(AS_SLICER)}, timeout=120)
    assert response.status_code == 200, response.text
    assert response.content.startswith(b"NRRD")


def test_a_corrected_label_saved_as_final_is_kept(client, studies):
    image_id = _image_id(studies, 2)
    client.save_label(image_id, str(studies.references[image_id]), tag="final", params={"label_info": LABEL_INFO})
    assert "final" in client.datastore()["objects"][image_id]["labels"]
    saved = read(client.download_label(image_id, "final"))
    np.testing.assert_array_equal(saved.numpy(), read(studies.references[image_id]).numpy())


def test_next_sample_is_the_most_uncertain_unlabeled_image(server, client, studies, trained_bundle):
    def score() -> dict[str, float]:
        response = requests.post(f"{server.url}/scoring/ensemble_uncertainty", params={"run_sync": "true"}, timeout=300)
        assert response.status_code == 200, response.text
        return response.json()["scores"]

    scores = score()
    labeled = {i for i, o in client.datastore()["objects"].items() if "final" in o["labels"]}
    assert set(scores) == set(studies.references) - labeled and len(scores) >= 2
    first = client.next_sample("most_uncertain", {})
    assert first["id"] == max(scores, key=scores.get)
    assert first["ensemble_uncertainty"]["score"] == scores[first["id"]]
    assert first["ensemble_uncertainty"]["bank_dir"] == str(trained_bundle[0] / "models" / "posterior")

    client.save_label(first["id"], str(studies.references[first["id"]]), tag="final", params={"label_info": LABEL_INFO})
    rest = score()
    assert first["id"] not in rest and rest == {k: v for k, v in scores.items() if k != first["id"]}  # not re-scored
    assert client.next_sample("most_uncertain", {})["id"] == max(rest, key=rest.get)


def test_eight_concurrent_requests_all_succeed_with_identical_results(server, studies, tmp_path):
    image_id = _image_id(studies, 3)

    def infer(i: int):
        label_file, params = server.client(tmp_path / str(i)).infer(SEGMENTATION, image_id, AS_SLICER)
        params.pop("latencies")
        return read(label_file).numpy(), params

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(infer, range(8)))
    for labels, params in results[1:]:
        np.testing.assert_array_equal(labels, results[0][0])
        assert params == results[0][1]
