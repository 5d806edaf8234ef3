"""``configs/multi_gpu_train.json`` under ``torchrun``: two gloo processes on the CPU build the bank a single process
builds (same epochs, cycles, files and manifest keys), and only rank 0 writes it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch
from bundle_runs import TINY, copy_bundle

from scripts.posterior_bank import PosteriorBank


def test_two_process_ddp_training_builds_the_single_process_bank(trained_bundle, tiny_data, tmp_path):
    single, _ = trained_bundle
    bundle = copy_bundle(tmp_path / "ddp_bundle")
    configs = str([str(bundle / "configs" / "train.json"), str(bundle / "configs" / "multi_gpu_train.json"), str(TINY)])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "monai.bundle", "run", "--config_file", configs, "--bundle_root", str(bundle),
           "--dataset_dir", str(tiny_data.parent), "--logging_file", str(bundle / "configs" / "logging.conf")]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"

    reference, bank = PosteriorBank(single / "models" / "posterior"), PosteriorBank(bundle / "models" / "posterior")
    assert [(c.file, c.epoch, c.cycle, c.lr) for c in bank.checkpoints] == [
        (c.file, c.epoch, c.cycle, c.lr) for c in reference.checkpoints
    ]
    manifest = json.loads(bank.manifest_path.read_text())
    assert manifest.keys() == json.loads(reference.manifest_path.read_text()).keys()
    assert manifest["network_def"] == json.loads(reference.manifest_path.read_text())["network_def"]
    bank.verify()  # every file is whole and has the hash its manifest names: one writer, no interleaved writes
    assert sorted(p.name for p in bank.directory.iterdir()) == sorted(p.name for p in reference.directory.iterdir())
    # the network, not its DistributedDataParallel wrapper, is saved: the keys carry no "module." prefix
    saved = bank.load(bank.checkpoints[-1])
    assert saved.keys() == torch.load(single / "models" / "model.pt", weights_only=True).keys()
    assert (bundle / "models" / "model.pt").is_file()
    # one progress line per epoch: the other rank runs no logging handler
    log = result.stdout + result.stderr
    assert sum("| cycle " in line for line in log.splitlines()) == 8
