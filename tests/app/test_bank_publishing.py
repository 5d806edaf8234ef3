"""The app's bank publication and the shared ensemble, in-process: atomic switch, one load per bank, thread-safe."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from lib.bank_publisher import BankPublisher
from lib.bundle import CardiacBundle
from lib.infers.uncertainty_overlay import parse_levels
from lib.served_ensemble import EnsembleRegistry
from lib.trainers.checkpoint_bank import split_labeled
from scripts.posterior_bank import BankError


def _stage_copy(publisher: BankPublisher, bank) -> object:
    run = publisher.new_run()
    shutil.copytree(bank, run / "models" / "posterior")
    return run


def test_the_bundle_bank_is_served_until_a_complete_run_is_published(trained_bundle, tmp_path):
    bank = trained_bundle[0] / "models" / "posterior"
    publisher = BankPublisher(tmp_path / "model", bank, keep=2)
    assert publisher.current() == bank and publisher.published() is None

    runs = [_stage_copy(publisher, bank) for _ in range(3)]
    assert publisher.current() == bank  # staged runs are never served
    for run in runs:
        served = publisher.publish(run, labeled_images=3)
        assert publisher.current() == served == tmp_path / "model" / "banks" / run.name / "models" / "posterior"
        assert not run.exists() and (served / "manifest.json").is_file()
    record = json.loads(publisher.pointer.read_text())
    assert record["bank_dir"] == f"banks/{runs[-1].name}/models/posterior" and record["labeled_images"] == 3
    assert {p.name for p in (tmp_path / "model" / "banks").iterdir()} == {r.name for r in runs[1:]}  # keep=2
    assert not list((tmp_path / "model").glob(".published.json.*"))  # no temporary file left behind

    publisher.pointer.write_text("{half a pointer")
    with pytest.raises(BankError, match="not valid JSON"):
        publisher.current()


def test_one_ensemble_per_published_bank_shared_by_concurrent_requests(trained_bundle, tiny_overrides, tmp_path):
    bundle = CardiacBundle(trained_bundle[0], [tiny_overrides])
    publisher = BankPublisher(tmp_path / "model", trained_bundle[0] / "models" / "posterior")
    registry = EnsembleRegistry(bundle, publisher)
    inferer = bundle.parser("inference.json").get_parsed_content("inferer")
    image = torch.randn(1, 1, 64, 64, 6)

    with ThreadPoolExecutor(max_workers=8) as pool:
        served = list(pool.map(lambda _: registry.get(), range(8)))
        outputs = list(pool.map(lambda s: s.predict(inferer, image), served))
    assert all(s is served[0] for s in served)  # loaded once, shared
    for output in outputs[1:]:
        torch.testing.assert_close(output, outputs[0], rtol=0, atol=0)
    torch.testing.assert_close(outputs[0].sum(1), torch.ones(1, 64, 64, 6))  # mean softmax: a distribution

    publisher.publish(_stage_copy(publisher, trained_bundle[0] / "models" / "posterior"))
    new = registry.get()
    assert new is not served[0] and new.bank_dir == publisher.current() and registry.get() is new
    torch.testing.assert_close(new.predict(inferer, image), outputs[0])  # the same weights, moved
    torch.testing.assert_close(served[0].predict(inferer, image), outputs[0])  # a request holding the old one


def test_training_splits_and_overlay_levels():
    items = [{"image": f"i{k}", "label": f"l{k}"} for k in range(5)]
    assert split_labeled(items, 0.2) == {"training": items[:4], "validation": items[4:]}
    assert split_labeled(items[:1], 0.2) == {"training": items[:1], "validation": items[:1]}
    assert split_labeled(items[:2], 0.9) == {"training": items[:1], "validation": items[1:2]}
    assert parse_levels("low:0.2, high:1.5") == {"low": 0.2, "high": 1.5}
    for bad in ("low:0.5,high:0.2", "low", "low:3"):
        with pytest.raises(ValueError, match="uncertainty levels"):
            parse_levels(bad)


def test_voters_are_the_members_the_fast_path_used(trained_bundle, tiny_overrides, tmp_path):
    bundle = CardiacBundle(trained_bundle[0], [tiny_overrides])
    served = EnsembleRegistry(
        bundle, BankPublisher(tmp_path / "model", trained_bundle[0] / "models" / "posterior")
    ).get()
    parser = bundle.parser("inference.json")
    fast, exact = parser.get_parsed_content("inferer"), parser.get_parsed_content("slice_inferer")
    image = torch.randn(1, 1, 64, 64, 6)
    served.predict(fast, image)
    used = [served.ensemble.checkpoints[i].file for i in fast.last_run().members]
    assert [c["file"] for c in served.voters(fast)] == used and set(used) <= {c["file"] for c in served.checkpoints}
    served.predict(exact, image)
    assert served.voters(exact) == served.checkpoints  # the exact ensemble: every member votes
