"""Scoring method: each unlabeled image's uncertainty under the checkpoint ensemble, for active learning.

Why: MONAI Label's ``EpistemicScoring`` forces dropout on at test time, on a network trained without it. The bank's
posterior checkpoints are the samples this model was trained to produce, so the score here is the bundle's volume
uncertainty (mean entropy, bits, in the bounding box of the predicted heart) of the served ensemble. It is stored in
each image's info under ``ensemble_uncertainty`` (with the bank it came from); an image already scored with the
served bank is not scored again.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.scoring import ScoringMethod

from lib.infers.segmentation_uncertainty import SegmentationUncertainty
from scripts.input_checks import InputError

__all__ = ["SCORE_KEY", "EnsembleUncertaintyScoring"]

logger = logging.getLogger(__name__)

SCORE_KEY = "ensemble_uncertainty"


class EnsembleUncertaintyScoring(ScoringMethod):
    """Score the unlabeled images with ``infer_task`` (the served ensemble) and store the scores in the datastore."""

    def __init__(self, infer_task: SegmentationUncertainty) -> None:
        super().__init__("Volume uncertainty (mean entropy, bits) of the checkpoint ensemble per unlabeled image")
        self.infer_task = infer_task

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any]:
        bank_dir = str(self.infer_task.registry.get().bank_dir)
        scores = {}
        for image_id in datastore.get_unlabeled_images():
            previous = datastore.get_image_info(image_id).get(SCORE_KEY, {})
            if previous.get("bank_dir") == bank_dir:
                scores[image_id] = previous["score"]
                continue
            try:
                _, data = self.infer_task({"image": datastore.get_image_uri(image_id), "skip_writer": True})
            except InputError as e:  # one unusable image must not stop the scoring of the others
                logger.warning(f"{image_id} not scored: {e}")
                continue
            summary = self.infer_task.summarise(data)
            record = {
                "score": summary["volume_uncertainty"],
                "review_suggested": summary["review_suggested"],
                "bank_dir": bank_dir,
                "ts": int(time.time()),
            }
            datastore.update_image_info(image_id, {SCORE_KEY: record})
            scores[image_id] = record["score"]
            logger.info(f"{image_id}: ensemble uncertainty {record['score']:.4f} bits")
        return {"bank_dir": bank_dir, "scores": scores}
