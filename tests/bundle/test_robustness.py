"""Killed runs, bad input and missing or damaged models: a clear message, and nothing already written damaged."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import nibabel as nib
import numpy as np
import pytest
from bundle_runs import bundle_cli, bundle_command, copy_bundle

from scripts.posterior_bank import PosteriorBank, sha256_of
from scripts.schedule import posterior_epochs


def _snapshot(folder):
    return {p.relative_to(folder): sha256_of(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_killed_training_resumes_and_the_bank_matches_its_files(tmp_path, tiny_data):
    bundle = copy_bundle(tmp_path / "bundle")
    cmd = bundle_command(
        bundle, "train.json", "--dataset_dir", str(tiny_data.parent), "--epochs", "12", "--num_cycles", "3",
        "--val_interval", "100",
    )
    state_dir = bundle / "models" / "train_state"
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 300
        while not list(state_dir.glob("train_state_epoch=5.pt")) and time.time() < deadline and process.poll() is None:
            time.sleep(0.02)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # no clean-up handlers run: as a power cut or an OOM kill
        process.wait()
    assert not (bundle / "models" / "model.pt").exists(), "the run finished before it could be killed"
    bank = PosteriorBank(bundle / "models" / "posterior")
    for c in bank.checkpoints:  # the manifest never names a file that is not complete on disk
        assert sha256_of(bank.directory / c.file) == c.sha256

    # a fresh run must not silently mix its samples with the killed run's
    refused = bundle_cli(
        bundle, "train.json", "--dataset_dir", str(tiny_data.parent), "--epochs", "12", "--num_cycles", "3", check=False
    )
    assert refused.returncode != 0 and "already holds a checkpoint bank" in refused.stdout + refused.stderr
    assert "--resume true" in refused.stdout + refused.stderr

    resumed = bundle_cli(
        bundle,
        "train.json",
        "--dataset_dir",
        str(tiny_data.parent),
        "--epochs",
        "12",
        "--num_cycles",
        "3",
        "--val_interval",
        "100",
        "--resume",
        "true",
    )
    assert "resumed from" in resumed.stdout
    assert [c.epoch for c in bank.checkpoints] == [t for cycle in posterior_epochs(12, 3, 0.5) for t in cycle]
    bank.verify()
    assert (bundle / "models" / "model.pt").is_file()
    first_epoch = int(resumed.stdout.split("resumed from")[1].split("at epoch")[1].split()[0])
    assert first_epoch >= 5  # it continued, it did not start over


def test_resume_without_a_saved_state_says_so(tmp_path, tiny_data):
    bundle = copy_bundle(tmp_path / "bundle")
    result = bundle_cli(bundle, "train.json", "--dataset_dir", str(tiny_data.parent), "--resume", "true", check=False)
    assert result.returncode != 0 and "holds no training state" in result.stdout + result.stderr


def test_empty_dataset_folder(tmp_path):
    bundle = copy_bundle(tmp_path / "bundle")
    (tmp_path / "empty").mkdir()
    result = bundle_cli(bundle, "train.json", "--dataset_dir", str(tmp_path / "empty"), check=False)
    assert result.returncode != 0
    assert f"{tmp_path / 'empty' / 'datalist.json'} does not exist" in result.stdout + result.stderr
    assert "prepare_data synthetic" in result.stdout + result.stderr


def test_label_values_outside_acdc_stop_training(tmp_path, tiny_data):
    data = tmp_path / "data"
    entries = json.loads(tiny_data.read_text())
    bad_label = data / "bad_gt.nii.gz"
    data.mkdir()
    for split in ("training", "validation", "test"):  # point at the original files from the new folder
        entries[split] = [
            {**e, "image": str(tiny_data.parent / e["image"]), "label": str(tiny_data.parent / e["label"])}
            for e in entries[split]
        ]
    first = entries["training"][0]
    label = nib.load(first["label"])
    values = np.asarray(label.dataobj).copy()
    values[values == 3] = 7
    nib.save(nib.Nifti1Image(values, label.affine), str(bad_label))
    entries["training"][0] = {**first, "label": str(bad_label)}
    (data / "datalist.json").write_text(json.dumps(entries))
    bundle = copy_bundle(tmp_path / "bundle")
    result = bundle_cli(bundle, "train.json", "--dataset_dir", str(data), check=False)
    assert result.returncode != 0
    assert "bad_gt.nii.gz: label values [7] are outside [0, 1, 2, 3]" in result.stdout + result.stderr


@pytest.fixture()
def served_bundle(trained_bundle, tmp_path):
    """A private copy of the trained bundle, so a test may damage it."""
    import shutil

    bundle = tmp_path / "bundle"
    shutil.copytree(trained_bundle[0], bundle)
    return bundle


def test_inference_on_a_4d_image_names_it(served_bundle, tmp_path):
    cine = nib.Nifti1Image(np.zeros((64, 64, 8, 5), np.float32), np.diag([1.5, 1.5, 8.0, 1.0]))
    (tmp_path / "in").mkdir()
    nib.save(cine, str(tmp_path / "in" / "cine.nii.gz"))
    result = bundle_cli(
        served_bundle,
        "inference.json",
        "--input_dir",
        str(tmp_path / "in"),
        "--output_dir",
        str(tmp_path / "out"),
        check=False,
    )
    assert result.returncode != 0 and "cine.nii.gz" in result.stderr and "looks 4D" in result.stderr


def test_inference_on_a_2d_image_names_it(served_bundle, tmp_path):
    (tmp_path / "in").mkdir()
    nib.save(nib.Nifti1Image(np.zeros((64, 64), np.float32), np.eye(4)), str(tmp_path / "in" / "slice.nii.gz"))
    result = bundle_cli(
        served_bundle,
        "inference.json",
        "--input_dir",
        str(tmp_path / "in"),
        "--output_dir",
        str(tmp_path / "out"),
        check=False,
    )
    assert result.returncode != 0 and "slice.nii.gz" in result.stderr and "is 2D" in result.stderr


def test_corrupted_checkpoint_is_named_and_left_alone(served_bundle, tiny_data, tmp_path):
    bank = PosteriorBank(served_bundle / "models" / "posterior")
    victim = bank.directory / bank.checkpoints[-1].file
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    before = _snapshot(served_bundle / "models")
    result = bundle_cli(
        served_bundle,
        "inference.json",
        "--input_dir",
        str(tiny_data),
        "--output_dir",
        str(tmp_path / "out"),
        check=False,
    )
    assert result.returncode != 0
    assert f"{victim.name} does not match the sha256 in its manifest" in result.stderr
    assert _snapshot(served_bundle / "models") == before
    assert not list((tmp_path / "out").glob("*_seg.nii.gz")) if (tmp_path / "out").exists() else True


def test_missing_bank_says_how_to_get_one(served_bundle, tiny_data, tmp_path):
    result = bundle_cli(
        served_bundle,
        "inference.json",
        "--input_dir",
        str(tiny_data),
        "--bank_dir",
        str(tmp_path / "nothing"),
        check=False,
    )
    assert result.returncode != 0 and "no checkpoint bank at" in result.stderr and "Train the bundle" in result.stderr


def test_more_members_than_the_bank_holds(served_bundle, tiny_data, tmp_path):
    before = _snapshot(served_bundle / "models")
    result = bundle_cli(
        served_bundle,
        "inference.json",
        "--input_dir",
        str(tiny_data),
        "--mode",
        "single",
        "--n",
        "5",
        "--output_dir",
        str(tmp_path / "out"),
        check=False,
    )
    assert result.returncode != 0 and "mode 'single' asks for the last n=5" in result.stderr
    assert "Ask for n <= 2" in result.stderr
    assert _snapshot(served_bundle / "models") == before


def test_inference_on_a_dicom_series(served_bundle, tiny_data, tmp_path):
    from monai.transforms import LoadImage

    from scripts.dicom_series import write_mr_series

    case = json.loads(tiny_data.read_text())["test"][0]
    series = tmp_path / "series"
    write_mr_series(tiny_data.parent / case["image"], series, patient_id="SYN001")
    bundle_cli(served_bundle, "inference.json", "--input_dir", str(series), "--output_dir", str(tmp_path / "out"))
    reference = LoadImage(reader="ITKReader", image_only=True)(str(series))
    seg = nib.load(str(tmp_path / "out" / "series_seg.nii.gz"))
    entropy = nib.load(str(tmp_path / "out" / "series_entropy.nii.gz"))
    for produced in (seg, entropy):
        assert produced.shape == tuple(reference.shape)
        np.testing.assert_allclose(produced.affine, reference.affine.numpy(), atol=1e-4)


def test_mlflow_tracking(tmp_path, tiny_data):
    bundle = copy_bundle(tmp_path / "bundle")
    # `--resume false` arrives as the string 'false' from the command line: it must still mean False
    bundle_cli(
        bundle,
        "train.json",
        "--dataset_dir",
        str(tiny_data.parent),
        "--epochs",
        "2",
        "--num_cycles",
        "1",
        "--resume",
        "false",
        "--overwrite",
        "false",
        "--tracking",
        "mlflow",
        "--output_dir",
        str(tmp_path / "eval"),
    )
    assert (tmp_path / "eval" / "mlruns.db").is_file()
    assert list((tmp_path / "eval").glob("config_*.json"))  # the executed config is kept with the run


def test_network_matches_metadata():
    from bundle_runs import ROOT

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "monai.bundle",
            "verify_net_in_out",
            "network_def",
            "--meta_file",
            str(ROOT / "bundle/configs/metadata.json"),
            "--config_file",
            str(ROOT / "bundle/configs/inference.json"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0 and "verified with no error" in result.stdout + result.stderr


def test_training_can_start_from_given_weights(trained_bundle, tiny_data, tmp_path):
    import torch

    start = trained_bundle[0] / "models" / "model.pt"
    bundle = copy_bundle(tmp_path / "bundle")
    # with a zero learning rate the run's final weights are exactly the weights it started from
    result = bundle_cli(
        bundle,
        "train.json",
        "--dataset_dir",
        str(tiny_data.parent),
        "--epochs",
        "2",
        "--num_cycles",
        "1",
        "--base_lr",
        "0",
        "--restart_lr",
        "0",
        "--pretrained_weights",
        str(start),
    )
    assert f"network initialised from {start}" in result.stdout
    before, after = torch.load(start, weights_only=True), torch.load(bundle / "models" / "model.pt", weights_only=True)
    assert all(torch.equal(before[k], after[k]) for k in before)
    missing = bundle_cli(
        bundle,
        "train.json",
        "--dataset_dir",
        str(tiny_data.parent),
        "--overwrite",
        "true",
        "--pretrained_weights",
        str(tmp_path / "nowhere.pt"),
        check=False,
    )
    assert missing.returncode != 0 and "nowhere.pt does not exist" in missing.stderr
