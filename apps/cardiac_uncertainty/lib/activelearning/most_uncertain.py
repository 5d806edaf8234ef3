"""Active learning strategy: serve the unlabeled image on which the checkpoint ensemble is least certain."""

from __future__ import annotations

import logging
from typing import Any

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.strategy import Strategy

from lib.scoring.ensemble_uncertainty import SCORE_KEY

__all__ = ["MostUncertain"]

logger = logging.getLogger(__name__)


class MostUncertain(Strategy):
    """The unlabeled image with the highest ``ensemble_uncertainty`` score (see
    :class:`lib.scoring.ensemble_uncertainty.EnsembleUncertaintyScoring`). Images not scored yet come after all
    scored ones, in the datastore's order, so labelling can start before scoring has finished."""

    def __init__(self) -> None:
        super().__init__("Most uncertain first (volume uncertainty of the checkpoint ensemble)")

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any] | None:
        images = datastore.get_unlabeled_images()
        if not images:
            return None
        scores = {image: datastore.get_image_info(image).get(SCORE_KEY, {}).get("score") for image in images}
        ranked = sorted(images, key=lambda image: (scores[image] is None, -(scores[image] or 0.0)))
        image = ranked[0]
        logger.info(f"most uncertain unlabeled image: {image} ({SCORE_KEY} {scores[image]})")
        return {"id": image}  # the server adds the image's info, which holds the score record
