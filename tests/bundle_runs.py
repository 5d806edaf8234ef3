"""Running the bundle as a user does, for the tests: a copy of ``bundle/`` elsewhere and the real ``monai.bundle`` CLI
with the tiny configuration (``tests/bundle/tiny.json``) merged over a config."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "bundle" / "tiny.json"


def bundle_command(bundle: Path, config: str, *overrides: str) -> list[str]:
    """The ``python -m monai.bundle run`` command line for ``bundle`` with the tiny configuration merged over
    ``config``."""
    files = str([str(bundle / "configs" / config), str(TINY)])  # fire parses the list literal
    return [sys.executable, "-m", "monai.bundle", "run", "--config_file", files, "--bundle_root", str(bundle),
            "--logging_file", str(bundle / "configs" / "logging.conf"), *overrides]


def bundle_cli(
    bundle: Path, config: str, *overrides: str, check: bool = True, timeout: float = 600
) -> subprocess.CompletedProcess:
    """:func:`bundle_command`, run to completion with the bundle's own ``scripts/`` only on the path."""
    cmd = bundle_command(bundle, config, *overrides)
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
