"""The checkpoint bank: atomic files, a manifest that matches them, and the paper's selections."""

import json

import pytest
import torch

from scripts.posterior_bank import (
    BankError,
    PosteriorBank,
    PosteriorCheckpoint,
    atomic_save,
    select_checkpoints,
    sha256_of,
)


def bank_of(tmp_path, epochs_per_cycle, num_cycles=3):
    bank = PosteriorBank(tmp_path / "bank")
    for cycle, epochs in enumerate(epochs_per_cycle):
        for epoch in epochs:
            bank.add({"w": torch.full((2,), float(epoch))}, epoch=epoch, cycle=cycle, lr=0.0076, num_cycles=num_cycles)
    return bank


def entries(epochs_per_cycle):
    return [PosteriorCheckpoint(f"e{t}.pt", t, c, 0.01, "x") for c, ts in enumerate(epochs_per_cycle) for t in ts]


def test_manifest_lists_every_file_with_its_hash(tmp_path):
    bank = bank_of(tmp_path, [[2, 3], [6, 7], [10, 11]])
    manifest = json.loads(bank.manifest_path.read_text())
    assert [c["epoch"] for c in manifest["checkpoints"]] == [2, 3, 6, 7, 10, 11]
    for c in manifest["checkpoints"]:
        assert sha256_of(bank.directory / c["file"]) == c["sha256"]
        assert c["cycle"] == {2: 0, 3: 0, 6: 1, 7: 1, 10: 2, 11: 2}[c["epoch"]]
    bank.verify()
    assert not list(bank.directory.glob("*.tmp"))  # no temporary file left behind


def test_load_is_weights_only_and_cpu(tmp_path):
    bank = bank_of(tmp_path, [[1]], num_cycles=1)
    state = bank.load(bank.checkpoints[0])
    assert torch.equal(state["w"], torch.full((2,), 1.0)) and state["w"].device.type == "cpu"


def test_readding_an_epoch_replaces_it(tmp_path):
    bank = bank_of(tmp_path, [[1, 2]], num_cycles=1)
    bank.add({"w": torch.zeros(2)}, epoch=2, cycle=0, lr=0.1)
    assert [c.epoch for c in bank.checkpoints] == [1, 2]
    assert torch.equal(bank.load(bank.checkpoints[1])["w"], torch.zeros(2))


def test_single_is_the_last_n_of_the_last_cycle():
    picked = select_checkpoints(entries([[2, 3, 4], [7, 8, 9], [12, 13, 14]]), "single", 2, 3)
    assert [c.epoch for c in picked] == [13, 14]


def test_multi_is_the_last_n_over_m_of_every_cycle():
    picked = select_checkpoints(entries([[2, 3, 4], [7, 8, 9], [12, 13, 14]]), "multi", 6, 3)
    assert [c.epoch for c in picked] == [3, 4, 8, 9, 13, 14]


def test_all_takes_every_sample():
    assert len(select_checkpoints(entries([[2, 3], [6, 7]]), "all", None, 2)) == 4


@pytest.mark.parametrize(
    "mode, n, message",
    [
        ("single", 4, "only 3"),
        ("multi", 12, "cycles"),
        ("multi", 5, "multiple of 3"),
        ("single", 0, "n >= 1"),
        ("ensemble", 3, "unknown selection mode"),
    ],
)
def test_requests_the_bank_cannot_serve(mode, n, message):
    with pytest.raises(BankError, match=message):
        select_checkpoints(entries([[2, 3, 4], [7, 8, 9], [12, 13, 14]]), mode, n, 3)


def test_unfinished_run_lacks_cycles():
    with pytest.raises(BankError, match="resume it first"):
        select_checkpoints(entries([[2, 3, 4]]), "multi", 3, 3)


def test_corrupted_file_is_refused_by_name(tmp_path):
    bank = bank_of(tmp_path, [[1, 2]], num_cycles=1)
    target = bank.directory / bank.checkpoints[1].file
    target.write_bytes(target.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(BankError, match=f"{target.name}.*sha256"):
        bank.verify()
    before = bank.manifest_path.read_text()
    with pytest.raises(BankError):
        bank.load(bank.checkpoints[1])
    assert bank.manifest_path.read_text() == before  # reading never rewrites the bank


def test_missing_file_and_missing_manifest(tmp_path):
    bank = bank_of(tmp_path, [[1]], num_cycles=1)
    (bank.directory / bank.checkpoints[0].file).unlink()
    with pytest.raises(BankError, match="missing"):
        bank.verify()
    with pytest.raises(BankError, match="no checkpoint bank"):
        _ = PosteriorBank(tmp_path / "nowhere").checkpoints


def test_truncate_drops_samples_a_resumed_run_will_retrain(tmp_path):
    bank = bank_of(tmp_path, [[2, 3], [6, 7]], num_cycles=2)
    bank.truncate(first_dropped_epoch=6)
    assert [c.epoch for c in bank.checkpoints] == [2, 3]
    assert sorted(p.name for p in bank.directory.glob("*.pt")) == ["epoch_00002.pt", "epoch_00003.pt"]


def test_atomic_save_leaves_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "model.pt"
    atomic_save({"w": torch.ones(1)}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        atomic_save({"w": Unpicklable()}, path)
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.ones(1))
    assert list(tmp_path.iterdir()) == [path]
