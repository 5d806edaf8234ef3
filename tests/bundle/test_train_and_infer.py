"""Train then infer through the real ``python -m monai.bundle run`` CLI, on a copy of the bundle elsewhere."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from bundle_runs import TINY, bundle_cli
from monai.bundle import ConfigParser

from scripts.posterior_bank import PosteriorBank, sha256_of
from scripts.schedule import posterior_epochs


def test_training_builds_the_bank_of_every_posterior_epoch(trained_bundle):
    bundle, result = trained_bundle
    bank = PosteriorBank(bundle / "models" / "posterior")
    expected = [t for cycle in posterior_epochs(8, 2, 0.5) for t in cycle]
    assert [c.epoch for c in bank.checkpoints] == expected == [2, 3, 6, 7]
    assert [c.cycle for c in bank.checkpoints] == [0, 0, 1, 1]
    for c in bank.checkpoints:
        assert sha256_of(bank.directory / c.file) == c.sha256
    manifest = json.loads(bank.manifest_path.read_text())
    assert manifest["network_def"]["filters"] == [4, 8, 16, 32]
    # the vanilla model is the last epoch's weights, and that epoch is also the last posterior sample
    vanilla = torch.load(bundle / "models" / "model.pt", weights_only=True)
    last = bank.load(bank.checkpoints[-1])
    assert vanilla.keys() == last.keys() and all(torch.equal(vanilla[k], last[k]) for k in vanilla)
    # progress: one line per epoch with the cycle and the learning rate, and TensorBoard logs
    lines = [line for line in result.stdout.splitlines() if "| cycle " in line]
    assert len(lines) == 8 and "epoch 1/8 | cycle 1/2 | lr 0.10000" in lines[0] and "cycle 2/2" in lines[-1]
    assert "val_mean_dice" in lines[-1]
    assert list((bundle / "eval" / "tensorboard").glob("events.out.tfevents.*"))


def _geometry(path):
    image = nib.load(str(path))
    return image.shape, image.affine


@pytest.mark.parametrize("mode", ["multi", "single", "all"])
def test_inference_writes_segmentation_and_entropy_in_the_input_geometry(trained_bundle, tiny_data, tmp_path, mode):
    bundle, _ = trained_bundle
    out = tmp_path / "out"
    result = bundle_cli(
        bundle, "inference.json", "--input_dir", str(tiny_data), "--output_dir", str(out), "--mode", mode
    )
    test_cases = json.loads(tiny_data.read_text())["test"]
    assert len(test_cases) == 6  # 1 subject x 2 frames x 3 domains
    for case in test_cases:
        image_path = tiny_data.parent / case["image"]
        stem = image_path.name.removesuffix(".nii.gz")
        seg, entropy = nib.load(str(out / f"{stem}_seg.nii.gz")), nib.load(str(out / f"{stem}_entropy.nii.gz"))
        shape, affine = _geometry(image_path)
        for produced in (seg, entropy):
            assert produced.shape == shape
            np.testing.assert_allclose(produced.affine, affine, atol=1e-5)  # spacing, origin and direction
        assert seg.get_data_dtype() == np.uint8 and entropy.get_data_dtype() == np.float32
        assert set(np.unique(np.asarray(seg.dataobj))) <= {0, 1, 2, 3}
        values = np.asarray(entropy.dataobj)
        assert values.min() >= 0.0 and values.max() <= 2.0 + 1e-5
    summary = (out / "summary.csv").read_text().splitlines()
    assert summary[0].startswith("case,domain,uncertainty,review") and "dice_LV" in summary[0]
    assert len(summary) == 7
    assert {row.split(",")[1] for row in summary[1:]} <= {"in_domain", "vendor_b", "vendor_c"}  # from the datalist
    assert "uncertainty" in result.stdout


def test_modes_choose_their_members(trained_bundle, monkeypatch):
    bundle, _ = trained_bundle
    monkeypatch.syspath_prepend(str(bundle))
    chosen = {}
    for mode in ("single", "multi", "all"):
        parser = ConfigParser(ConfigParser.load_config_files([bundle / "configs" / "inference.json", TINY]))
        parser.update({"bundle_root": str(bundle), "mode": mode})
        chosen[mode] = [c.epoch for c in parser.get_parsed_content("ensemble").checkpoints]
    assert chosen == {"single": [6, 7], "multi": [3, 7], "all": [2, 3, 6, 7]}


def test_vanilla_model_exports_to_torchscript(trained_bundle, tmp_path):
    import subprocess
    import sys

    from monai.networks.nets import DynUNet

    bundle, _ = trained_bundle
    target = tmp_path / "model.ts"
    files = str([str(bundle / "configs" / "inference.json"), str(TINY)])
    # DynUNet's deep-supervision branch does not script; in eval mode it traces to the plain segmentation network.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "monai.bundle",
            "ckpt_export",
            "network_def",
            "--filepath",
            str(target),
            "--ckpt_file",
            str(bundle / "models" / "model.pt"),
            "--meta_file",
            str(bundle / "configs" / "metadata.json"),
            "--config_file",
            files,
            "--bundle_root",
            str(bundle),
            "--use_trace",
            "true",
            "--input_shape",
            "[1, 1, 64, 64]",
        ],
        check=True,
        capture_output=True,
        cwd=bundle,
    )
    tiny = json.loads(TINY.read_text())
    eager = DynUNet(
        2,
        1,
        4,
        tiny["network_def#kernel_size"],
        tiny["network_def#strides"],
        tiny["network_def#upsample_kernel_size"],
        filters=tiny["network_def#filters"],
        norm_name=("INSTANCE", {"affine": True}),
        act_name=("leakyrelu", {"negative_slope": 0.01}),
        deep_supervision=True,
        deep_supr_num=1,
    )
    eager.load_state_dict(torch.load(bundle / "models" / "model.pt", weights_only=True))
    x = torch.randn(2, 1, 96, 64)
    with torch.no_grad():
        assert torch.allclose(torch.jit.load(str(target))(x), eager.eval()(x), atol=1e-5)
