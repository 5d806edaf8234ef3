"""Shared test set-up: the bundle's own package (``scripts``) is importable as it is inside a bundle run, and a tiny
synthetic dataset and a bundle trained on it through the real CLI are made once per session for every suite."""

import subprocess
import sys
from pathlib import Path

import pytest

BUNDLE = Path(__file__).resolve().parents[1] / "bundle"
if str(BUNDLE) not in sys.path:
    sys.path.insert(0, str(BUNDLE))

from bundle_runs import bundle_cli, copy_bundle  # noqa: E402  (needs the path above)

from scripts.synthetic import generate_synthetic_dataset  # noqa: E402


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny_data")
    return generate_synthetic_dataset(folder, n_train=4, n_val=1, n_test=1, matrix=64, seed=3)


@pytest.fixture(scope="session")
def trained_bundle(tmp_path_factory, tiny_data) -> tuple[Path, subprocess.CompletedProcess]:
    bundle = copy_bundle(tmp_path_factory.mktemp("trained") / "cardiac_bundle")
    result = bundle_cli(bundle, "train.json", "--dataset_dir", str(tiny_data.parent))
    return bundle, result
