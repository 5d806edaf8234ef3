"""The evaluation's training runs: which runs, and whether a run folder is reused, resumed or trained anew."""

from __future__ import annotations

import json

import pytest

from scripts.evaluation_runs import _request, plan_runs, run_status
from scripts.synthetic import generate_synthetic_dataset

POLY = {"num_cycles": 1, "gamma": 1.0, "restart_lr": "@base_lr"}


def test_plan_has_every_run_the_methods_need():
    runs = {r.name: r for r in plan_runs(0, POLY, 0.1, [0, 1, 2])}
    assert list(runs) == [
        "cyclic",
        "cyclic_Tc",
        "mc_dropout",
        "deep_ensemble_seed0",
        "deep_ensemble_seed1",
        "deep_ensemble_seed2",
    ]
    assert runs["cyclic"].keeps_bank and runs["cyclic"].overrides["record_trajectory"] is True
    assert runs["cyclic_Tc"].overrides["lr_denominator"] == "Tc"
    assert runs["mc_dropout"].overrides == {**POLY, "seed": 0, "dropout": 0.1}
    assert runs["deep_ensemble_seed2"].overrides == {**POLY, "seed": 2} and not runs["deep_ensemble_seed2"].keeps_bank


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return generate_synthetic_dataset(tmp_path_factory.mktemp("data"), n_train=1, n_val=1, n_test=1, matrix=32).parent


def test_run_status(tmp_path, dataset):
    config = tmp_path / "train.json"
    config.write_text(json.dumps({"epochs": 60}))
    run = plan_runs(0, POLY, 0.1, [0])[0]
    request = _request(run, [config], {"epochs": 6}, dataset)
    folder = tmp_path / "cyclic"
    assert run_status(folder, request) == "missing"
    folder.mkdir()
    (folder / "stray.txt").write_text("")
    assert run_status(folder, request) == "stale"  # a folder without a record is not ours to reuse

    (folder / "run.json").write_text(json.dumps({**request, "complete": False}))
    assert run_status(folder, request) == "missing"  # started, killed before its first epoch was saved
    (folder / "train_state").mkdir()
    (folder / "train_state" / "train_state_epoch=3.pt").write_bytes(b"")
    assert run_status(folder, request) == "resumable"
    (folder / "run.json").write_text(json.dumps({**request, "complete": True}))
    assert run_status(folder, request) == "complete"

    # another budget, another training config or another dataset: the run is stale
    assert run_status(folder, _request(run, [config], {"epochs": 9}, dataset)) == "stale"
    config.write_text(json.dumps({"epochs": 60, "gamma": 0.5}))
    assert run_status(folder, _request(run, [config], {"epochs": 6}, dataset)) == "stale"
    config.write_text(json.dumps({"epochs": 60}))
    assert run_status(folder, _request(run, [config], {"epochs": 6}, dataset)) == "complete"
    label = next(dataset.glob("in_domain/*_ED_gt.nii.gz"))
    label.write_bytes(label.read_bytes() + b"\0")  # the training data changed
    assert run_status(folder, _request(run, [config], {"epochs": 6}, dataset)) == "stale"
