"""The MONAI bundle that the app serves: where it is, and its configs parsed with the user's overrides.

Why: the method (network, pre-processing, slice-wise inferer, checkpoint ensemble, uncertainty) is defined once, in
the bundle's configs and its ``scripts`` package. The app takes the pieces it needs from ``configs/inference.json``
and ``configs/train.json``, merged with the same override files a user passes to ``python -m monai.bundle run``
(for example ``configs/full_size.json`` or the test suite's ``tiny.json``), so it computes what the bundle computes.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from monai.bundle import ConfigParser

__all__ = ["CardiacBundle"]


class CardiacBundle:
    """A bundle folder (``configs/``, ``scripts/``, ``models/``) and the override files merged over its configs.

    Creating it puts the bundle folder on ``sys.path``, as ``python -m monai.bundle run --bundle_root`` does, so that
    the bundle's own package ``scripts`` (the method) is importable by the rest of the app.

    Args:
        path: the bundle folder.
        override_files: JSON/YAML files merged, in order, over every config the app reads. Relative paths are taken
            relative to the bundle folder when such a file exists there, else relative to the working directory.
    """

    def __init__(self, path: str | Path, override_files: Sequence[str | Path] = ()) -> None:
        self.path = Path(path).expanduser().resolve()
        if not (self.path / "configs" / "inference.json").is_file():
            raise ValueError(
                f"{self.path} is not the cardiac bundle (configs/inference.json is missing). "
                "Start the server with --conf bundle_path <the bundle folder>."
            )
        self.override_files = [self._resolve(f) for f in override_files]
        if str(self.path) not in sys.path:
            sys.path.insert(0, str(self.path))

    def _resolve(self, file: str | Path) -> Path:
        file = Path(file).expanduser()
        candidates = [file] if file.is_absolute() else [self.path / file, Path.cwd() / file]
        for candidate in candidates:
            if candidate.is_file():
                return candidate.resolve()
        raise ValueError(
            f"bundle override file {file} not found (looked at {', '.join(str(c) for c in candidates)}). "
            "Pass --conf bundle_overrides with existing JSON files, comma separated."
        )

    @classmethod
    def from_conf(cls, conf: Mapping[str, str], app_dir: str | Path) -> CardiacBundle:
        """The bundle named by ``--conf bundle_path`` (default: ``bundle/`` of the repository that holds the app)
        with the comma-separated ``--conf bundle_overrides``."""
        path = conf.get("bundle_path") or Path(app_dir).resolve().parents[1] / "bundle"
        overrides = [f.strip() for f in conf.get("bundle_overrides", "").split(",") if f.strip()]
        return cls(path, overrides)

    def config_files(self, name: str) -> list[Path]:
        """``configs/<name>`` followed by the override files, in the order they are merged."""
        return [self.path / "configs" / name, *self.override_files]

    def parser(self, name: str, **overrides: Any) -> ConfigParser:
        """A fresh parser of ``configs/<name>`` with the override files and ``overrides`` (config id -> value)
        applied, rooted at this bundle folder."""
        parser = ConfigParser(ConfigParser.load_config_files([str(f) for f in self.config_files(name)]))
        parser.update({"bundle_root": str(self.path), **overrides})
        return parser
