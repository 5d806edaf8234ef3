"""A tiny synthetic dataset and a bundle copy trained once per session through the real ``monai.bundle`` CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.synthetic import generate_synthetic_dataset

ROOT = Path(__file__).resolve().parents[2]
TINY = Path(__file__).with_name("tiny.json")


def bundle_cli(bundle: Path, config: str, *overrides: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m monai.bundle run`` on ``bundle`` with the tiny configuration merged over ``config``."""
    files = str([str(bundle / "configs" / config), str(TINY)])  # fire parses the list literal
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", files, "--bundle_root", str(bundle),
           "--logging_file", str(bundle / "configs" / "logging.conf"), *overrides]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "2"}
    env.pop("PYTHONPATH", None)  # the bundle must find its own scripts/ with nothing else on the path
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=bundle.parent, timeout=timeout)
    if check and result.returncode:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def copy_bundle(destination: Path) -> Path:
    """The bundle folder copied elsewhere, without anything generated: it must run from there on its own."""
    ignore = shutil.ignore_patterns("models", "eval", "data", "__pycache__", "logs", "mlruns")
    shutil.copytree(ROOT / "bundle", destination, ignore=ignore)
    (destination / "models").mkdir()
    return destination


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny_data")
    return generate_synthetic_dataset(folder, n_train=4, n_val=1, n_test=1, matrix=64, seed=3)


@pytest.fixture(scope="session")
def trained_bundle(tmp_path_factory, tiny_data) -> tuple[Path, subprocess.CompletedProcess]:
    bundle = copy_bundle(tmp_path_factory.mktemp("trained") / "cardiac_bundle")
    result = bundle_cli(bundle, "train.json", "--dataset_dir", str(tiny_data.parent))
    return bundle, result
