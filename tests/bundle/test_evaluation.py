"""The evaluation entry point end to end on a tiny budget: it trains every run, evaluates all methods, writes the
report with its figures, reuses complete runs, and survives bad input with a message."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from bundle_runs import TINY, copy_bundle

from scripts.evaluation import main

TINY_EVALUATION = TINY.with_name("tiny_evaluation.json")
METHODS = [
    "vanilla",
    "ts_fixed",
    "ts_fitted",
    "swa",
    "mc_dropout",
    "deep_ensemble",
    "ckpt_single",
    "ckpt_multi",
    "ckpt_single_Tc",
    "ckpt_multi_Tc",
]
RUNS = ["cyclic", "cyclic_Tc", "mc_dropout", "deep_ensemble_seed0", "deep_ensemble_seed1"]
FIGURES = ["reliability", "ensemble_size", "risk_coverage", "examples", "weight_trajectory"]


def evaluate(bundle: Path, data: Path, work: Path, report: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "scripts.evaluation",
        "--dataset_dir",
        str(data),
        "--work_dir",
        str(work),
        "--report",
        str(report),
        "--config_file",
        str(TINY),
        str(TINY_EVALUATION),
        *extra,
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "2"}
    env.pop("PYTHONPATH", None)  # the copied bundle finds its own scripts/
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=bundle, timeout=900)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, tiny_data):
    root = tmp_path_factory.mktemp("evaluation")
    bundle = copy_bundle(root / "bundle")
    data = root / "data"
    shutil.copytree(tiny_data.parent, data)
    result = evaluate(bundle, data, root / "work", root / "docs" / "results.md")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return bundle, data, root, result


def _rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_trains_evaluates_and_reports_every_method(evaluated):
    _, _, root, result = evaluated
    work = root / "work"
    for run in RUNS:
        record = json.loads((work / run / "run.json").read_text())
        assert record["complete"] and (work / run / "model.pt").is_file()
        assert f"{run}: trained" in result.stdout
    assert (work / "cyclic" / "posterior" / "manifest.json").is_file()
    assert sorted(p.name for p in (work / "cyclic" / "trajectory").glob("*.pt")) == [
        f"epoch_{t:05d}.pt" for t in range(4)
    ]

    rows = _rows(work / "results" / "cases.csv")
    assert sorted({r["method"] for r in rows}) == sorted(METHODS)
    assert {r["domain"] for r in rows} == {"in_domain", "vendor_b", "vendor_c"}
    assert len(rows) == len(METHODS) * 6  # 1 subject x 2 frames x 3 domains
    for r in rows:
        assert 0 <= float(r["ece"]) <= 100 and 0 <= float(r["uncertainty"]) <= 2
    ensembles = {r["method"] for r in rows if r["mutual_information"]}
    assert ensembles == {"mc_dropout", "deep_ensemble", "ckpt_single", "ckpt_multi", "ckpt_single_Tc", "ckpt_multi_Tc"}
    summary = json.loads((work / "results" / "summary.json").read_text())
    assert summary["temperature"] > 0
    assert summary["methods"]["deep_ensemble"]["members"] == 2 and summary["methods"]["mc_dropout"]["members"] == 2

    report = (root / "docs" / "results.md").read_text()
    for heading in ("Table 1", "Table 2", "Failure detection", "Cost", "Discussion", "Weight trajectory"):
        assert heading in report
    for name in FIGURES:
        figure = root / "docs" / "figures" / f"results_{name}.png"
        assert figure.is_file() and figure.stat().st_size > 10_000
        assert f"figures/results_{name}.png" in report
    # the numbers of the report are the ones of the results: Table 2's Vanilla in-domain ECE
    vanilla = np.mean([float(r["ece"]) for r in rows if r["method"] == "vanilla" and r["domain"] == "in_domain"])
    table2 = report.split("## Table 2")[1].split("\n| Vanilla |")[1].split("|")[0].strip().strip("*")
    assert float(table2) == pytest.approx(vanilla, abs=0.006)


def _write_label(path: Path, shape: tuple[int, ...]) -> Path:
    nib.save(nib.Nifti1Image(np.zeros(shape, dtype=np.uint8), np.eye(4)), str(path))
    return path


def test_reuses_runs_and_reports_bad_input_and_missing_checkpoints(evaluated, capsys):
    _, data, root, _ = evaluated
    datalist = json.loads((data / "datalist.json").read_text())
    unlabelled, wrong_shape = datalist["test"][0], datalist["test"][1]
    del unlabelled["label"]
    wrong_shape["label"] = str(_write_label(data / "wrong_shape_gt.nii.gz", (7, 9, 3)))
    (data / "datalist.json").write_text(json.dumps(datalist))
    (root / "work" / "deep_ensemble_seed1" / "model.pt").unlink()

    # in this process this time (the same entry point, without a second start-up)
    argv = [
        "--dataset_dir",
        str(data),
        "--work_dir",
        str(root / "work"),
        "--report",
        str(root / "docs2" / "results.md"),
    ]
    assert main([*argv, "--config_file", str(TINY), str(TINY_EVALUATION)]) == 1  # 1: a method is missing
    captured = capsys.readouterr()
    for run in RUNS:
        assert f"{run}: reused" in captured.out  # nothing is trained again
    out = captured.out + captured.err
    assert f"{unlabelled['case']}: the datalist gives no reference label" in out
    assert f"{wrong_shape['case']}: label" in out and "has shape (7, 9, 3)" in out
    assert "Deep ens." in out and "model.pt is missing" in out

    rows = _rows(root / "work" / "results" / "cases.csv")
    assert "deep_ensemble" not in {r["method"] for r in rows}
    assert {r["method"] for r in rows} == set(METHODS) - {"deep_ensemble"}
    assert len(rows) == (len(METHODS) - 1) * 4  # the two bad cases are skipped, the other four evaluated
    report = (root / "docs2" / "results.md").read_text()
    assert "Not evaluated / skipped" in report and "model.pt is missing" in report and "has shape (7, 9, 3)" in report
    assert "| Ckpt. ens. (multi, n = 2) |" in report


def test_a_folder_without_labels_is_refused_before_training(evaluated, tmp_path, capsys):
    _, data, _, _ = evaluated
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(next(data.glob("in_domain/*_ED.nii.gz")), images)
    argv = ["--dataset_dir", str(images), "--work_dir", str(tmp_path / "work"), "--report", str(tmp_path / "r.md")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "datalist.json does not exist" in err and "without reference labels cannot be evaluated" in err

    unlabelled = json.loads((data / "datalist.json").read_text())
    for entry in unlabelled["test"]:
        entry.pop("label", None)
    (images / "datalist.json").write_text(json.dumps(unlabelled))
    assert main(argv) == 2
    assert "no case of the test split" in capsys.readouterr().err
    assert not (tmp_path / "work").exists()  # refused before any training
