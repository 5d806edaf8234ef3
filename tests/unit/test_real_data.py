"""ACDC and M&Ms readers, on tiny fake trees with the real file naming."""

import csv
import json

import nibabel as nib
import numpy as np
import pytest

from scripts.datalist import load_datalist
from scripts.prepare_data import main as prepare_data
from scripts.real_data import acdc_cases, acdc_datalist, extract_mnms, read_mnms_info, remap_mnms_labels

AFFINE = np.array([[-1.4, 0, 0, 90.0], [0, -1.4, 0, 80.0], [0, 0, 8.0, -30.0], [0, 0, 0, 1]])
MNMS_CSV = "211230_M&Ms_Dataset_information_diagnosis_opendataset.csv"
MNMS_HEADER = ["", "External code", "VendorName", "Vendor", "Centre", "ED", "ES", "Pathology", "Sex", "Age"]


def _save(array, path, affine=AFFINE):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), str(path))


def _all_labels(shape):
    """A label volume where every value 0..3 occupies a known block."""
    label = np.zeros(shape, dtype=np.uint8)
    label[1:3, 1:3], label[3:5, 1:3], label[5:7, 1:3] = 1, 2, 3
    return label


def make_acdc(root, n_training=10, n_testing=2):
    rng = np.random.default_rng(0)
    for i in range(1, n_training + n_testing + 1):
        folder = root / ("training" if i <= n_training else "testing") / f"patient{i:03d}"
        folder.mkdir(parents=True)
        ed, es = 1, 8 + i % 5
        (folder / "Info.cfg").write_text(f"ED: {ed}\nES: {es}\nGroup: NOR\nHeight: 180.0\nNbFrame: 20\nWeight: 80.0\n")
        for frame in (ed, es):
            _save(rng.integers(0, 500, (8, 8, 3)).astype(np.int16), folder / f"patient{i:03d}_frame{frame:02d}.nii.gz")
            _save(_all_labels((8, 8, 3)), folder / f"patient{i:03d}_frame{frame:02d}_gt.nii.gz")
        _save(np.zeros((8, 8, 3, 20), np.int16), folder / f"patient{i:03d}_4d.nii.gz")
    return root


def make_mnms(root, frames=5):
    """Training/Labeled (vendor A), Validation (B), Testing (C), an unlabelled subject and the CSV."""
    rows = [("A0S9V9", "A", 1, 0, 3), ("B1C2D3", "B", 2, 1, 4), ("C4E5F6", "C", 3, 0, 2), ("U7N8L9", "A", 1, 0, 2)]
    folders = {"A0S9V9": "Training/Labeled", "B1C2D3": "Validation", "C4E5F6": "Testing"}
    rng = np.random.default_rng(1)
    for code, _, _, ed, es in rows:
        folder = root / folders.get(code, "Training/Unlabeled") / code
        _save(rng.normal(100, 20, (8, 8, 3, frames)).astype(np.float32), folder / f"{code}_sa.nii.gz")
        if code != "U7N8L9":
            gt = np.zeros((8, 8, 3, frames), np.uint8)  # M&Ms convention: 1 LV, 2 MYO, 3 RV
            gt[..., ed] = _all_labels((8, 8, 3))
            gt[..., es] = _all_labels((8, 8, 3))
            _save(gt, folder / f"{code}_sa_gt.nii.gz")
    with open(root / MNMS_CSV, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(MNMS_HEADER)
        for i, (code, vendor, centre, ed, es) in enumerate(rows):
            writer.writerow([i, code, {"A": "Siemens", "B": "Philips", "C": "GE"}[vendor], vendor, centre, ed, es,
                             "NOR", "M", 50])
    return root


def test_acdc_split_by_subject_with_original_files(tmp_path):
    root = make_acdc(tmp_path / "ACDC" / "database")
    splits = acdc_datalist(root, seed=0)
    assert [len(splits[s]) // 2 for s in ("training", "validation", "test")] == [8, 1, 3]  # 12 subjects, 0.7/0.1/0.2
    subjects = {s: {e["subject"] for e in entries} for s, entries in splits.items()}
    assert not subjects["training"] & subjects["test"] and not subjects["validation"] & subjects["test"]
    entry = next(e for e in splits["training"] if e["subject"] == min(subjects["training"]) and e["phase"] == "ES")
    number = 8 + int(entry["subject"][-3:]) % 5
    assert entry["image"] == str(root / "training" / entry["subject"] / f"{entry['subject']}_frame{number:02d}.nii.gz")
    assert entry["label"].endswith(f"_frame{number:02d}_gt.nii.gz") and entry["domain"] == "acdc"
    assert "patient012" in subjects["training"] | subjects["validation"] | subjects["test"]  # testing/ is read
    assert acdc_datalist(root, seed=0) == splits and acdc_datalist(root, seed=5) != splits


def test_acdc_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"ACDC folder .*nowhere.*training/"):
        acdc_cases(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"No ACDC subject.*empty"):
        acdc_cases(tmp_path / "empty")
    root = make_acdc(tmp_path / "acdc", n_training=2, n_testing=0)
    (root / "training" / "patient002" / "patient002_frame01_gt.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"Info\.cfg names ED frame 1 but .*patient002_frame01_gt\.nii\.gz"):
        acdc_cases(root)
    _save(np.zeros((8, 8, 4), np.uint8), root / "training" / "patient002" / "patient002_frame01_gt.nii.gz")
    with pytest.raises(ValueError, match=r"shape \(8, 8, 3\) but its label .*\(8, 8, 4\)"):
        acdc_cases(root)


def test_mnms_labels_are_remapped_and_frames_extracted(tmp_path):
    root = make_mnms(tmp_path / "OpenDataset")
    entries = extract_mnms(root, tmp_path / "out")
    assert sorted(e["case"] for e in entries) == ["A0S9V9_ED", "A0S9V9_ES", "B1C2D3_ED", "B1C2D3_ES"]
    assert {e["domain"] for e in entries} == {"mnms_vendor_A", "mnms_vendor_B"}
    source = nib.load(root / "Validation" / "B1C2D3" / "B1C2D3_sa_gt.nii.gz").get_fdata()[..., 4]
    es = next(e for e in entries if e["case"] == "B1C2D3_ES")
    label = nib.load(es["label"])
    remapped = np.asarray(label.dataobj)
    assert set(np.unique(source)) == {0, 1, 2, 3}
    np.testing.assert_array_equal(remapped[source == 1], 3)  # M&Ms LV -> project LV (3)
    np.testing.assert_array_equal(remapped[source == 2], 2)  # MYO stays
    np.testing.assert_array_equal(remapped[source == 3], 1)  # M&Ms RV -> project RV (1)
    np.testing.assert_array_equal(remapped[source == 0], 0)
    assert label.get_data_dtype() == np.uint8
    image = nib.load(es["image"])
    np.testing.assert_allclose(image.affine, AFFINE)
    assert image.shape == (8, 8, 3)
    cine = nib.load(root / "Validation" / "B1C2D3" / "B1C2D3_sa.nii.gz").get_fdata()
    np.testing.assert_allclose(image.get_fdata(), cine[..., 4])
    assert {e["domain"] for e in extract_mnms(root, tmp_path / "all", vendors=None)} >= {"mnms_vendor_C"}
    np.testing.assert_array_equal(remap_mnms_labels(np.array([0, 1, 2, 3])), [0, 3, 2, 1])


def test_mnms_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"M&Ms folder .*nowhere"):
        extract_mnms(tmp_path / "nowhere", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"No M&Ms information CSV.*empty"):
        extract_mnms(tmp_path / "empty", tmp_path / "out")
    root = make_mnms(tmp_path / "OpenDataset")
    csv_path = root / MNMS_CSV
    text = csv_path.read_text()
    csv_path.write_text(text.replace("Centre", "Center"))
    with pytest.raises(ValueError, match=r"211230_M&Ms.*lacks column\(s\) \['Centre'\]"):
        read_mnms_info(csv_path)
    csv_path.write_text(text.replace("A0S9V9,Siemens,A,1,0,3", "A0S9V9,Siemens,A,1,0,7"))
    with pytest.raises(ValueError, match=r"ES frame 7 for A0S9V9.*frames 0\.\.4.*0-based"):
        extract_mnms(root, tmp_path / "out")
    csv_path.write_text(text)
    _save(np.zeros((8, 8, 2, 5), np.uint8), root / "Testing" / "C4E5F6" / "C4E5F6_sa_gt.nii.gz")
    with pytest.raises(ValueError, match=r"C4E5F6_sa\.nii\.gz has shape \(8, 8, 3, 5\) but its label"):
        extract_mnms(root, tmp_path / "out", vendors=["C"])
    with pytest.raises(ValueError, match=r"M&Ms labels must be 0\.\.3"):
        remap_mnms_labels(np.array([0, 4]))


def test_real_command_combines_acdc_and_mnms(tmp_path, capsys):
    acdc, mnms = make_acdc(tmp_path / "ACDC"), make_mnms(tmp_path / "MnMs")
    datalist = prepare_data(["real", "--acdc_dir", str(acdc), "--mnms_dir", str(mnms), "--output", str(tmp_path / "o")])
    assert "mnms_vendor_A: 2" in capsys.readouterr().out
    test = load_datalist(datalist, "test")
    assert {e["domain"] for e in test} == {"acdc", "mnms_vendor_A", "mnms_vendor_B"}
    raw = json.loads(datalist.read_text())
    assert raw["test"][-1]["image"].startswith("mnms/"), "extracted frames are stored relative to the datalist"
    assert raw["training"][0]["image"].startswith(str(acdc)), "ACDC entries point to the original files"
