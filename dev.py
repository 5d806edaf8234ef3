#!/usr/bin/env python3
"""The project's entry point on a fresh machine: it needs nothing but Python 3.11+.

    python3 dev.py demo     # install, generate synthetic data, train, run ensemble inference, print a summary
    python3 dev.py test     # install, run the test suite (what .ci/run calls)
    python3 dev.py evaluate # install, train what the paper's comparison needs, evaluate, write docs/results.md
    python3 dev.py serve    # install, train if needed, start the MONAI Label server on the trained bundle
    python3 dev.py system   # install Orthanc (DICOMweb) and Chromium from Debian, for the DICOMweb and OHIF parts

Every command first brings ``.venv`` in step with ``pyproject.toml`` (skipped when it already is), then runs the
step inside it. The bundle itself is used through its own CLI (``python -m monai.bundle run ...``), exactly as a
user who copies ``bundle/`` elsewhere would.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import venv
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BUNDLE = ROOT / "bundle"
PYTHON = VENV / "bin" / "python"
APP = ROOT / "apps" / "cardiac_uncertainty"
# Debian packages behind the DICOMweb and OHIF parts of the app, and a file each one installs
SYSTEM_PACKAGES = {
    "orthanc": "/usr/sbin/Orthanc",
    "orthanc-dicomweb": "/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
    "chromium": "/usr/bin/chromium",
}


def _run(cmd: list[str], **kwargs) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, **kwargs)


def ensure_environment() -> None:
    """Create ``.venv`` and install the project with its test extras when ``pyproject.toml`` changed."""
    stamp = VENV / ".installed"
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if stamp.is_file() and stamp.read_text() == digest and PYTHON.exists():
        return
    if not PYTHON.exists():
        print(f"creating {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    _run([PYTHON, "-m", "pip", "install", "--quiet", "--upgrade", "pip"])
    _run([PYTHON, "-m", "pip", "install", "--quiet", "-e", f"{ROOT}[test]"])
    stamp.write_text(digest)


def bundle_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BUNDLE), env.get("PYTHONPATH")]))
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def monai_bundle(config: str, *overrides: str) -> None:
    files = str([str(BUNDLE / "configs" / c) for c in config.split(",")])  # a list literal, as monai.bundle takes it
    _run(
        [
            PYTHON,
            "-m",
            "monai.bundle",
            "run",
            "--config_file",
            files,
            "--bundle_root",
            BUNDLE,
            "--logging_file",
            BUNDLE / "configs" / "logging.conf",
            *overrides,
        ],
        env=bundle_env(),
    )


def print_summary(summary_csv: Path, bank_dir: Path, outputs: Path, seconds: dict[str, float]) -> None:
    rows = list(csv.DictReader(open(summary_csv)))
    manifest = json.loads((bank_dir / "manifest.json").read_text())
    by_cycle: dict[int, list[int]] = defaultdict(list)
    for c in manifest["checkpoints"]:
        by_cycle[c["cycle"]].append(c["epoch"])
    print("\n=== checkpoint bank", bank_dir)
    for cycle, epochs in sorted(by_cycle.items()):
        print(f"  cycle {cycle + 1}: {len(epochs)} posterior checkpoints, epochs {epochs[0]}..{epochs[-1]}")
    print("\n=== checkpoint-ensemble inference on the held-out cases (Dice mean, uncertainty = mean entropy, bits)")
    print(f"  {'domain':<12} {'cases':>5} {'RV':>6} {'MYO':>6} {'LV':>6} {'uncert.':>8} {'review':>7}")
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        groups[row.get("domain") or "-"].append(row)

    def mean(values: list[str]) -> float:
        numbers = [float(v) for v in values if v not in ("", None)]
        return sum(numbers) / len(numbers) if numbers else float("nan")

    for domain, group in groups.items():
        dice = [mean([r.get(f"dice_{s}", "") for r in group]) for s in ("RV", "MYO", "LV")]
        flagged = sum(r["review"] == "True" for r in group)
        print(
            f"  {domain:<12} {len(group):>5} {dice[0]:>6.3f} {dice[1]:>6.3f} {dice[2]:>6.3f} "
            f"{mean([r['uncertainty'] for r in group]):>8.4f} {flagged:>7}"
        )
    print(f"\n  segmentations (*_seg) and uncertainty maps (*_entropy) per case: {outputs}")
    print(f"  per-case table: {summary_csv}")
    print("  CPU time: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in seconds.items()))


def demo(args: argparse.Namespace) -> None:
    data = ROOT / "data" / "synthetic"
    outputs = ROOT / "runs" / "demo" / "inference"
    models = BUNDLE / "models"
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    if not (data / "datalist.json").is_file():
        _run(
            [PYTHON, "-m", "scripts.prepare_data", "synthetic", "--output", data, "--seed", str(args.seed)],
            env=bundle_env(),
        )
    seconds["data"] = time.perf_counter() - start
    start = time.perf_counter()
    common = ["--dataset_dir", data]
    if args.retrain or not (models / "model.pt").is_file():
        resume = (models / "train_state").is_dir() and any((models / "train_state").glob("*.pt")) and not args.retrain
        monai_bundle("train.json", *common, "--resume", str(resume).lower(), "--overwrite", str(args.retrain).lower())
    else:
        print(f"reusing the trained bank in {models} (pass --retrain to train again)")
    seconds["training"] = time.perf_counter() - start
    start = time.perf_counter()
    monai_bundle("inference.json", "--input_dir", data / "datalist.json", "--output_dir", outputs)
    seconds["ensemble inference"] = time.perf_counter() - start
    print_summary(outputs / "summary.csv", models / "posterior", outputs, seconds)


def ensure_system_packages() -> None:
    """Install Orthanc, its DICOMweb plugin and Chromium with apt-get when missing (as root, or with sudo -n)."""
    missing = [name for name, path in SYSTEM_PACKAGES.items() if not Path(path).exists()]
    if not missing:
        return
    if shutil.which("apt-get") is None:
        raise RuntimeError(f"{', '.join(missing)} missing and apt-get is not available: install them by hand.")
    apt = ["apt-get"] if os.geteuid() == 0 else ["sudo", "-n", "apt-get"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _run([*apt, "update", "-qq"], env=env)
    _run([*apt, "install", "-y", "-qq", *missing], env=env)


def serve(args: argparse.Namespace) -> None:
    """Start the MONAI Label app on the trained bundle (trained first, as by ``demo``, when it is not)."""
    if not (BUNDLE / "models" / "posterior" / "manifest.json").is_file():
        demo(argparse.Namespace(retrain=False, seed=args.seed))
    studies = args.studies
    if not studies:  # the synthetic test images (every domain), without their reference labels
        data = ROOT / "data" / "synthetic"
        if not (data / "datalist.json").is_file():
            sys.exit(f"{data} holds no dataset: pass --studies <folder or DICOMweb URL>, or run `python3 dev.py demo`.")
        folder = ROOT / "data" / "studies"
        folder.mkdir(parents=True, exist_ok=True)
        for case in json.loads((data / "datalist.json").read_text())["test"]:
            image = data / case["image"]
            if not (folder / image.name).exists():
                shutil.copy(image, folder / image.name)
        studies = str(folder)
    env = dict(os.environ)
    dcmqi = next(VENV.glob("lib/python*/site-packages/dcmqi/bin"))  # itkimage2segimage: labels as DICOM SEG
    env["PATH"] = os.pathsep.join([str(dcmqi), env.get("PATH", "")])
    if studies.startswith(("http://", "https://")):
        env.setdefault("MONAI_LABEL_DICOMWEB_SEARCH_FILTER", '{"Modality": "MR"}')
    conf = [str(c) for key, value in [("bundle_path", BUNDLE), *(args.conf or [])] for c in ("--conf", key, value)]
    cmd = [
        PYTHON,
        "-m",
        "monailabel.main",
        "start_server",
        "--app",
        APP,
        "--studies",
        studies,
        *conf,
        "--host",
        args.host,
        "--port",
        str(args.port),
    ]
    print("+", " ".join(str(c) for c in cmd), flush=True)
    os.execve(PYTHON, [str(c) for c in cmd], env)  # the server replaces this process: Ctrl-C and kill reach it


def evaluate(args: argparse.Namespace) -> int:
    """The paper's comparison on synthetic data (default) or on ACDC + M&Ms: prepare the data when missing, then
    ``scripts.evaluation`` trains the missing runs under ``runs/evaluation/<setting>/``, evaluates and reports."""
    if bool(args.acdc_dir) != bool(args.mnms_dir):
        print("real data needs both --acdc_dir and --mnms_dir", file=sys.stderr)
        return 2
    name = "real" if args.acdc_dir else "synthetic"
    data = ROOT / "data" / name
    if not (data / "datalist.json").is_file():
        source = ["real", "--acdc_dir", args.acdc_dir, "--mnms_dir", args.mnms_dir] if args.acdc_dir else ["synthetic"]
        _run([PYTHON, "-m", "scripts.prepare_data", *source, "--output", data], env=bundle_env())
    report = args.report or ROOT / "docs" / ("results.md" if name == "synthetic" else f"results_{name}.md")
    work = ROOT / "runs" / "evaluation" / (name + ("_paper" if args.paper else ""))
    cmd = [
        PYTHON,
        "-m",
        "scripts.evaluation",
        "--dataset_dir",
        data,
        "--work_dir",
        work,
        "--report",
        report,
        *(["--paper"] if args.paper else []),
        *(["--no_train"] if args.no_train else []),
    ]
    print("+", " ".join(str(c) for c in cmd), flush=True)
    return subprocess.run([str(c) for c in cmd], env=bundle_env(), cwd=BUNDLE).returncode


def test(args: argparse.Namespace) -> int:
    """Run pytest; "no tests collected" (exit 5) is a failure, never a silent pass."""
    code = subprocess.run([str(PYTHON), "-m", "pytest", *args.pytest_args], cwd=ROOT).returncode
    if code == 5:
        print("pytest collected no tests: treating this as a failure", file=sys.stderr)
        return 1
    return code


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("demo", help="train on synthetic data and run checkpoint-ensemble inference")
    p.add_argument("--retrain", action="store_true", help="train again even if bundle/models holds a model")
    p.add_argument("--seed", type=int, default=0)
    p = commands.add_parser("test", help="run the test suite (extra arguments go to pytest)")
    p.add_argument("pytest_args", nargs=argparse.REMAINDER)
    p = commands.add_parser("serve", help="start the MONAI Label server on the trained bundle (trains it if needed)")
    p.add_argument("--studies", help="folder of NIfTI images or DICOMweb URL (default: the synthetic test images)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--conf", nargs=2, action="append", metavar=("KEY", "VALUE"), help="more app options")
    p.add_argument("--seed", type=int, default=0)
    p = commands.add_parser("evaluate", help="reproduce the paper's comparison of all methods and write the report")
    p.add_argument("--paper", action="store_true", help="the paper's setting (configs/full_size.json)")
    p.add_argument("--acdc_dir", type=Path, help="ACDC database folder: evaluate on ACDC + M&Ms, not synthetic data")
    p.add_argument("--mnms_dir", type=Path, help="M&Ms OpenDataset folder (with --acdc_dir)")
    p.add_argument("--report", type=Path, help="report to write (default docs/results.md, docs/results_real.md)")
    p.add_argument("--no_train", action="store_true", help="evaluate the existing runs only")
    commands.add_parser("system", help="install Orthanc + DICOMweb plugin and Chromium (Debian) when missing")
    commands.add_parser("setup", help="only create or update .venv")
    args = parser.parse_args()
    if args.command == "system":
        ensure_system_packages()
        return 0
    ensure_environment()
    if args.command == "demo":
        demo(args)
    elif args.command == "test":
        return test(args)
    elif args.command == "evaluate":
        return evaluate(args)
    elif args.command == "serve":
        serve(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
