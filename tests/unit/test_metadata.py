"""The bundle's metadata repeats the project's pins (the bundle specification asks for them): keep them equal."""

import json
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MANDATORY = [
    "version",
    "changelog",
    "monai_version",
    "pytorch_version",
    "numpy_version",
    "required_packages_version",
    "task",
    "description",
    "authors",
    "copyright",
    "network_data_format",
]


def pins() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {
        m.group(1).lower(): m.group(2) for d in project["dependencies"] if (m := re.match(r"([\w.-]+)==([\w.]+)$", d))
    }


def test_mandatory_keys_and_channels():
    metadata = json.loads((ROOT / "bundle/configs/metadata.json").read_text())
    assert all(key in metadata for key in MANDATORY)
    assert metadata["version"] in metadata["changelog"]
    fmt = metadata["network_data_format"]
    assert fmt["inputs"]["image"]["channel_def"] == {"0": "image"}
    assert fmt["outputs"]["pred"]["channel_def"] == {"0": "background", "1": "RV", "2": "MYO", "3": "LV"}


def test_versions_agree_with_pyproject():
    metadata = json.loads((ROOT / "bundle/configs/metadata.json").read_text())
    pinned = pins()
    assert metadata["monai_version"] == pinned["monai"]
    assert metadata["pytorch_version"] == pinned["torch"]
    assert metadata["numpy_version"] == pinned["numpy"]
    for package, version in metadata["required_packages_version"].items():
        assert pinned.get(package) == version, f"{package}: metadata {version}, pyproject {pinned.get(package)}"
