"""MONAI Label app: checkpoint-ensemble segmentation of cardiac cine MRI (RV, MYO, LV) with where it is unsure.

Start it with::

    python -m monailabel.main start_server --app apps/cardiac_uncertainty --studies <folder or DICOMweb URL> \\
        --conf bundle_path <bundle folder> [--conf bundle_overrides <json,...>] [--conf model_dir <folder>] \\
        [--conf uncertainty_levels low:0.1,medium:0.5,high:1.0] --host 127.0.0.1 --port 8000

The method lives in the bundle (``--conf bundle_path``, default ``<repository>/bundle``); this app is the glue that
serves it to 3D Slicer and OHIF (see ``docs/app.md``).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import monailabel
from fastapi import HTTPException
from monailabel.config import settings
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask

from lib.bundle import CardiacBundle

logger = logging.getLogger(__name__)

UNCERTAINTY_TAG = "uncertainty"


class CardiacUncertaintyApp(MONAILabelApp):
    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        bundle = CardiacBundle.from_conf(conf, app_dir)
        # imported only now: these modules import the bundle's ``scripts`` package, which the bundle just put on
        # sys.path, and the bundle's location is known only from --conf
        from lib.configs.cardiac_uncertainty import CardiacUncertainty

        self.model = CardiacUncertainty()
        self.model.init("cardiac_uncertainty", os.path.join(app_dir, "model"), conf, None, bundle=bundle)
        logger.info(f"serving bundle {bundle.path} (overrides: {[str(f) for f in bundle.override_files]})")
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="Cardiac MRI segmentation with checkpoint-ensemble uncertainty",
            description="RV, MYO and LV contours from a checkpoint ensemble (Efficient Bayesian Uncertainty "
            "Estimation for nnU-Net), with a voxel-wise entropy map and named uncertainty levels",
            version=monailabel.__version__,
            labels=list(self.model.labels),
        )

    def init_datastore(self) -> Datastore:
        if self.studies.startswith(("http://", "https://")):
            return super().init_datastore()
        from lib.checked_datastore import CheckedLocalDatastore

        return CheckedLocalDatastore(
            self.studies,
            extensions=settings.MONAI_LABEL_DATASTORE_FILE_EXT,
            auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
            read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY,
            check_image=self.model.segmentation.check_image,
            check_label=self.model.training.check_label,
        )

    def init_infers(self) -> dict[str, InferTask]:
        return self.model.infer()

    def init_trainers(self) -> dict[str, TrainTask]:
        return {self.model.name: self.model.trainer()}

    def init_strategies(self) -> dict[str, Strategy]:
        return self.model.strategy()

    def init_scoring_methods(self) -> dict[str, ScoringMethod]:
        return self.model.scoring_method()

    def infer(self, request: dict[str, Any], datastore: Datastore | None = None) -> dict[str, Any]:
        """MONAI Label's inference, plus: an unknown image id or bad input answered with a clear 4xx, a bank that
        cannot serve with a 503 naming it, and the entropy map stored under the tag ``uncertainty``."""
        from lib.http_errors import HANDLED, http_error
        from lib.infers.segmentation_uncertainty import ENTROPY_FILE

        datastore = datastore or self.datastore()
        image = request.get("image")
        stored = isinstance(image, str) and not os.path.exists(image)
        if stored:
            self._require_image(image, datastore)
        try:
            result = super().infer(request, datastore)
        except HANDLED as e:
            raise http_error(e) from e
        params = result["params"]
        entropy_file = params.pop(ENTROPY_FILE)
        try:
            if stored:
                info = {"model": request.get("model"), "units": "bits", "bank_dir": params["bank_dir"]}
                label_id = datastore.save_label(image, entropy_file, UNCERTAINTY_TAG, info)
                params["uncertainty_label"] = {"label": label_id, "tag": UNCERTAINTY_TAG}
        finally:
            os.unlink(entropy_file)
        return result

    def _require_image(self, image_id: str, datastore: Datastore) -> None:
        try:
            uri = datastore.get_image_uri(image_id)
        except Exception as e:  # a DICOMweb server answers an unknown series in several ways
            raise HTTPException(404, f"image {image_id!r} could not be fetched from {self.studies}: {e}") from e
        if not uri or not os.path.exists(uri):
            raise HTTPException(
                404,
                f"image {image_id!r} is not in the datastore {self.studies}. List the image ids with "
                "GET /datastore/?output=all, or upload the image with PUT /datastore/image.",
            )
