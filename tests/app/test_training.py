"""Training from corrections through the API: the served bank is replaced only once the new one is complete."""

from __future__ import annotations

import json
import time

from scripts.posterior_bank import PosteriorBank

SEGMENTATION = "segmentation_uncertainty"
AS_SLICER = {"result_extension": ".nrrd", "result_dtype": "uint8"}
LABEL_INFO = [{"name": "RV", "idx": 1}, {"name": "MYO", "idx": 2}, {"name": "LV", "idx": 3}]


def test_training_through_the_api_publishes_the_new_bank_only_when_complete(
    start_label_server, trained_bundle, fresh_studies, tmp_path
):
    server = start_label_server(fresh_studies.folder, trained_bundle[0])
    client = server.client(tmp_path / "client")
    image_id = sorted(fresh_studies.references)[0]
    _, before = client.infer(SEGMENTATION, image_id, AS_SLICER)
    old_bank = before["bank_dir"]
    assert old_bank == str(trained_bundle[0] / "models" / "posterior")

    for labeled in sorted(fresh_studies.references)[:3]:  # corrections: two to train on, one to validate
        client.save_label(labeled, str(fresh_studies.references[labeled]), tag="final",
                          params={"label_info": LABEL_INFO})
    schedule = {"epochs": 4, "num_cycles": 2, "gamma": 0.5, "pretrained": True}
    task = client.train_start("cardiac_uncertainty", schedule)
    assert task["status"] in ("SUBMITTED", "RUNNING")

    answers = []  # (bank that answered, training still running when the answer came)
    deadline = time.monotonic() + 400
    while client.train_status()["status"] in ("SUBMITTED", "RUNNING") and time.monotonic() < deadline:
        _, during = client.infer(SEGMENTATION, image_id, AS_SLICER)
        answers.append(((during["bank_dir"], during["checkpoints"]), client.train_status()["status"] == "RUNNING"))
        time.sleep(1)
    status = client.train_status()
    assert status["status"] == "DONE", json.dumps(status, indent=1)
    _, after = client.infer(SEGMENTATION, image_id, AS_SLICER)
    old, new = (old_bank, before["checkpoints"]), (after["bank_dir"], after["checkpoints"])
    assert any(bank == old and running for bank, running in answers), "no request was answered during training"
    assert all(bank in (old, new) for bank, _ in answers)  # never a bank in the making

    published = json.loads((server.model_dir / "published.json").read_text())
    new_bank = PosteriorBank(server.model_dir / published["bank_dir"])
    new_bank.verify()  # every file the manifest names is there with its sha256
    assert [c.epoch for c in new_bank.checkpoints] == [1, 3]  # T = 4, M = 2, gamma = 0.5: epochs 1 and 3
    assert not any((server.model_dir / "staging").iterdir())  # the run moved out of staging in one rename
    assert after["bank_dir"] == str(new_bank.directory)
    assert {c["sha256"] for c in after["checkpoints"]} == {c.sha256 for c in new_bank.checkpoints}
    assert not {c["sha256"] for c in after["checkpoints"]} & {c["sha256"] for c in before["checkpoints"]}
