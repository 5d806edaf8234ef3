"""Train task: a new checkpoint bank from the labels saved as ``final``, published only once it is complete.

Why: corrections are the best training data there is, and the method's posterior samples come from the cyclic
learning rate schedule, so a new bank must be trained with the bundle's own ``configs/train.json`` (cycles, posterior
epochs, checkpoint saver), not with a generic MONAI Label trainer. The run writes into a staging folder that nothing
serves; when it has finished, the new bank is loaded as the configured ensemble (every file checked against its
sha256, the ensemble formed as ``mode``/``n`` ask) and only then published atomically (:mod:`lib.bank_publisher`).
Requests keep being answered by the old bank until that moment; a failed run leaves the served bank untouched.

By default the run fine-tunes: it starts from the served bank's vanilla model (``model.pt`` beside the bank).
"""

from __future__ import annotations

import logging
import shutil
from typing import Any

import monai.bundle
from monai.transforms import LoadImaged
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.utils.others.generic import strtobool

from lib.bank_publisher import BankPublisher
from lib.bundle import CardiacBundle
from lib.image_loading import LoadOrExplain
from scripts.datalist import write_datalist
from scripts.input_checks import ValidateLabelsd

__all__ = ["CheckpointBankTrainer", "split_labeled"]

logger = logging.getLogger(__name__)


def split_labeled(items: list[dict[str, str]], val_split: float) -> dict[str, list[dict[str, str]]]:
    """Training and validation splits of the labeled images: the last ``val_split`` fraction (at least one) is held
    out; a single labeled image serves as both (the bundle validates every few epochs and needs one case)."""
    if len(items) == 1:
        return {"training": items, "validation": items}
    n_val = min(len(items) - 1, max(1, round(len(items) * val_split)))
    return {"training": items[:-n_val], "validation": items[-n_val:]}


class CheckpointBankTrainer(TrainTask):
    """Train the bundle's cyclic schedule on the ``final`` labels into staging, verify, publish.

    Request options (defaults from the bundle's train config and overrides): ``epochs``, ``num_cycles``, ``gamma``
    (the schedule), ``pretrained`` (start from the served vanilla model), ``val_split``.
    """

    def __init__(self, bundle: CardiacBundle, publisher: BankPublisher) -> None:
        super().__init__("Retrain the checkpoint bank from the labels saved as 'final' (cyclic schedule)")
        self.bundle = bundle
        self.publisher = publisher
        parser = self.bundle.parser("train.json")
        self._schedule = {key: parser.get_parsed_content(key) for key in ("epochs", "num_cycles", "gamma")}
        # the bundle's loading and checks of a training pair, up to the label check: run on a label saved as final
        checks = []
        for transform in parser.get_parsed_content("load_volumes"):
            checks.append(LoadOrExplain(transform) if isinstance(transform, LoadImaged) else transform)
            if isinstance(transform, ValidateLabelsd):
                break
        self._label_checks = checks

    def config(self) -> dict[str, Any]:
        return {**self._schedule, "pretrained": True, "val_split": 0.2}

    def check_label(self, image: str, label: str) -> None:
        """Check an image and its label as training will (readable, values 0..3, same shape), raising the bundle's
        ``InputError`` that names the problem: a label that training would refuse is refused when it is saved."""
        data: Any = {"image": image, "label": label}
        for transform in self._label_checks:
            data = transform(data)

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any]:
        options = {**self.config(), **request}
        labeled = [{"image": d["image"], "label": d["label"]} for d in datastore.datalist()]
        if not labeled:
            raise MONAILabelException(
                MONAILabelError.APP_TRAIN_FAILED,
                "no image has a label saved as 'final': correct and save at least one segmentation first.",
            )
        run = self.publisher.new_run()
        try:
            splits = split_labeled(labeled, float(options["val_split"]))
            write_datalist(run / "data" / "datalist.json", splits, description="labels saved as 'final' in MONAI Label")
            overrides = {
                "bundle_root": str(self.bundle.path),
                "dataset_dir": str(run / "data"),
                "ckpt_dir": str(run / "models"),
                "output_dir": str(run / "eval"),
                "epochs": int(options["epochs"]),
                "num_cycles": int(options["num_cycles"]),
                "gamma": float(options["gamma"]),
            }
            start = self.publisher.current().parent / "model.pt"
            if strtobool(options["pretrained"]) and start.is_file():
                overrides["pretrained_weights"] = str(start)
                logger.info(f"fine-tuning from {start}")
            logger.info(f"training a new bank in {run} on {len(labeled)} labeled image(s): {overrides}")
            monai.bundle.run(
                config_file=[str(f) for f in self.bundle.config_files("train.json")],
                logging_file=False,  # keep the app's logging as it is
                **overrides,
            )
            bank_dir = run / "models" / "posterior"
            ensemble = self.bundle.parser("inference.json", bank_dir=str(bank_dir)).get_parsed_content("ensemble")
            shutil.rmtree(run / "models" / "train_state", ignore_errors=True)  # only needed to resume this run
            published = self.publisher.publish(run, labeled_images=len(labeled), epochs=overrides["epochs"])
        except BaseException:
            shutil.rmtree(run, ignore_errors=True)
            raise
        logger.info(f"published the new checkpoint bank {published} ({ensemble.num_members} members)")
        return {"published_bank": str(published), "members": ensemble.num_members, "labeled_images": len(labeled)}
