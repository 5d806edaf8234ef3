"""The synthetic cardiac MRI generator and the datalist it writes."""

import json
import runpy
import sys

import nibabel as nib
import numpy as np
import pytest

from scripts.datalist import load_datalist, split_subjects
from scripts.prepare_data import main as prepare_data
from scripts.prepare_data import parse_difficulty
from scripts.synthetic import DOMAINS, Difficulty, generate_synthetic_dataset, synthesize_subject


@pytest.fixture(scope="module")
def subjects():
    """Three subjects per domain (96 x 96 to keep the tests fast)."""
    return {domain: [synthesize_subject(seed, domain, matrix=96) for seed in range(3)] for domain in DOMAINS}


def test_same_seed_same_subject():
    first, again, other = (synthesize_subject(seed, matrix=64) for seed in (7, 7, 8))
    for phase in ("ED", "ES"):
        np.testing.assert_array_equal(first.images[phase], again.images[phase])
        np.testing.assert_array_equal(first.labels[phase], again.labels[phase])
    np.testing.assert_array_equal(first.affine, again.affine)
    assert not np.array_equal(first.affine, other.affine)


def test_shapes_types_labels_and_geometry(subjects):
    for domain, cases in subjects.items():
        low, high = DOMAINS[domain].spacing_mm
        for case in cases:
            for phase in ("ED", "ES"):
                image, label = case.images[phase], case.labels[phase]
                assert image.dtype == np.int16 and label.dtype == np.uint8
                assert image.shape == label.shape and image.shape[:2] == (96, 96) and 8 <= image.shape[2] <= 12
                assert set(np.unique(label)) <= {0, 1, 2, 3}
            assert set(np.unique(case.labels["ED"])) == {0, 1, 2, 3}
            row, col, thick = case.spacing
            assert low <= row <= high and row == pytest.approx(col) and 5.0 - 1e-9 <= thick <= 10.0 + 1e-9
            directions = case.affine[:3, :3] / np.array(case.spacing)
            np.testing.assert_allclose(directions.T @ directions, np.eye(3), atol=1e-9)
            assert np.linalg.det(directions) > 0  # right-handed: DICOM slices sort base to apex
    in_domain = DOMAINS["in_domain"].spacing_mm
    assert in_domain[0] >= 1.2 and in_domain[1] <= 1.8


def test_rv_shrinks_towards_apex_and_es_cavity_is_smaller(subjects):
    for case in subjects["in_domain"]:
        rv = (case.labels["ED"] == 1).sum(axis=(0, 1))
        lv_slices = np.flatnonzero((case.labels["ED"] == 3).any(axis=(0, 1)))
        assert np.argmax(rv) < len(rv) / 2, "the RV is largest in the basal half"
        assert rv[lv_slices[-1]] < 0.5 * rv.max(), "the RV is small or gone where the LV cavity ends"
        for label in (1, 3):
            assert (case.labels["ES"] == label).sum() < (case.labels["ED"] == label).sum()


def test_shifted_domains_differ_in_intensity_statistics(subjects):
    def contrast(case):  # median blood-pool over median myocardium signal at ED
        image, label = case.images["ED"].astype(float), case.labels["ED"]
        return np.median(image[label == 3]) / np.median(image[label == 2])

    ratio = {domain: np.array([contrast(c) for c in cases]) for domain, cases in subjects.items()}
    assert ratio["vendor_b"].max() < ratio["in_domain"].min() < ratio["in_domain"].max() < ratio["vendor_c"].min()
    scale = {domain: np.mean([np.percentile(c.images["ED"], 99) for c in cases]) for domain, cases in subjects.items()}
    assert scale["vendor_b"] > 2 * scale["in_domain"] > 4 * scale["vendor_c"]


def test_difficulty_knobs_change_the_reference_labels():
    sharp = synthesize_subject(3, matrix=64, difficulty=Difficulty(annotator_jitter_px=0.0))
    jittered = synthesize_subject(3, matrix=64, difficulty=Difficulty(annotator_jitter_px=1.5))
    np.testing.assert_array_equal(sharp.affine, jittered.affine)
    changed = (sharp.labels["ED"] != jittered.labels["ED"]).sum() / (sharp.labels["ED"] > 0).sum()
    assert 0.02 < changed < 0.5


def test_dataset_splits_by_subject_and_writes_geometry(tmp_path):
    datalist = generate_synthetic_dataset(tmp_path / "data", n_train=2, n_val=1, n_test=1, matrix=64, seed=3)
    assert datalist == tmp_path / "data" / "datalist.json"
    raw = json.loads(datalist.read_text())
    assert {"training", "validation", "test", "labels"} <= set(raw)
    assert not raw["training"][0]["image"].startswith("/"), "paths inside the dataset folder are relative"
    splits = {split: load_datalist(datalist, split) for split in ("training", "validation", "test")}
    assert [len(splits[s]) for s in ("training", "validation", "test")] == [4, 2, 6]
    subjects = {split: {e["subject"] for e in entries} for split, entries in splits.items()}
    assert not subjects["training"] & subjects["validation"] and not subjects["training"] & subjects["test"]
    for entries in splits.values():
        for entry in entries:
            assert set(entry) == {"image", "label", "case", "subject", "phase", "domain"}
            assert entry["case"] == f"{entry['subject']}_{entry['phase']}"
        phases = {(e["subject"], e["phase"]) for e in entries}
        assert all((s, p) in phases for s, _ in phases for p in ("ED", "ES"))
    assert {e["domain"] for e in splits["test"]} == {"in_domain", "vendor_b", "vendor_c"}
    assert {e["domain"] for e in splits["training"] + splits["validation"]} == {"in_domain"}
    entry = splits["test"][-1]
    image, label = nib.load(entry["image"]), nib.load(entry["label"])
    np.testing.assert_allclose(image.affine, label.affine)
    assert image.get_data_dtype() == np.int16 and label.get_data_dtype() == np.uint8
    again = generate_synthetic_dataset(tmp_path / "again", n_train=2, n_val=1, n_test=1, matrix=64, seed=3)
    first = load_datalist(again, "test")[-1]
    np.testing.assert_array_equal(nib.load(first["image"]).get_fdata(), image.get_fdata())


def test_split_subjects_is_deterministic_and_disjoint():
    names = [f"patient{i:03d}" for i in range(1, 101)]
    split = split_subjects(reversed(names), seed=1)
    assert split == split_subjects(names, seed=1) != split_subjects(names, seed=2)
    assert [len(split[s]) for s in ("training", "validation", "test")] == [70, 10, 20]
    assert sorted(sum(split.values(), [])) == names
    assert all(len(s) >= 1 for s in split_subjects(names[:3]).values())


def test_load_datalist_errors_name_the_file_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.json.*prepare_data"):
        load_datalist(tmp_path / "missing.json", "training")
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps({"training": [], "test": [{"image": "gone.nii.gz", "label": "gone_gt.nii.gz"}]}))
    with pytest.raises(ValueError, match=r"'training'.*datalist\.json.*empty"):
        load_datalist(path, "training")
    assert load_datalist(path, "training", allow_empty=True) == []
    with pytest.raises(KeyError, match="validation"):
        load_datalist(path, "validation")
    with pytest.raises(FileNotFoundError, match=r"gone\.nii\.gz.*regenerate"):
        load_datalist(path, "test")


def test_prepare_data_synthetic_command_with_preview(tmp_path, capsys):
    datalist = prepare_data(
        ["synthetic", "--output", str(tmp_path / "d"), "--n_train", "1", "--n_val", "1", "--n_test", "1",
         "--matrix", "64", "--preview", str(tmp_path / "preview.png"), "--difficulty", "annotator_jitter_px=0.3"]
    )
    out = capsys.readouterr().out
    assert str(datalist) in out and "vendor_c: 2" in out
    assert (tmp_path / "preview.png").read_bytes()[:4] == b"\x89PNG"
    assert parse_difficulty(["papillary=false", "noise_scale=2"]) == Difficulty(papillary=False, noise_scale=2.0)
    with pytest.raises(SystemExit, match="annotator_jitter_px"):
        parse_difficulty(["jitter=1"])


def test_prepare_data_runs_as_a_module(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["prepare_data", "--help"])
    monkeypatch.delitem(sys.modules, "scripts.prepare_data", raising=False)  # run it fresh, as `python -m` does
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("scripts.prepare_data", run_name="__main__")
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert all(command in out for command in ("synthetic", "acdc", "mnms", "real"))
