"""Infer task: the checkpoint ensemble's RV / MYO / LV labelmap, its voxel-wise entropy, and per-case scores.

Why: a radiologist needs the contours *and* where they are likely wrong. The labelmap goes back in the form the stock
clients ask for (Slicer and OHIF: ``.nrrd``, uint8); the float entropy map (bits, in the image's geometry) is handed
to the app, which stores it in the datastore under the tag ``uncertainty``; ``params`` carry the volume uncertainty
score, the review flag, the mean entropy per structure, the ensemble's checkpoints and those that voted (the
bundle's fast path stops adding members once their mean has settled).

Everything about the method comes from the bundle's ``configs/inference.json`` (with the user's overrides): the
pre-processing, the slice-wise inferer, the ensemble and the post-processing that inverts the resampling and
computes the entropy (Eq. 3). Only the bundle's file writers are left out: MONAI Label writes the result.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from monai.transforms import LoadImaged, SaveImaged, SqueezeDimd
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.basic_infer import BasicInferTask
from monailabel.transform.writer import write_nifti

from lib.bundle import CardiacBundle
from lib.image_loading import LoadOrExplain
from lib.served_ensemble import EnsembleRegistry, ServedEnsemble
from scripts.case_report import STRUCTURES, case_row
from scripts.input_checks import ValidateStackd

__all__ = ["ENTROPY_FILE", "PRED", "UNCERTAINTY", "SegmentationUncertainty"]

PRED = "pred"  # the bundle's key of the prediction (probabilities, then labels after its post-processing)
UNCERTAINTY = "uncertainty"  # the bundle's key of the entropy map (PredictiveUncertaintyd's entropy_key)
SERVED = "served_ensemble"
VOTERS = "ensemble_voters"
ENTROPY_FILE = "uncertainty_file"  # params entry that hands the entropy map to the app; removed before the reply


class SegmentationUncertainty(BasicInferTask):
    """Checkpoint-ensemble segmentation with uncertainty (see the module docstring).

    Args:
        bundle: the bundle whose ``configs/inference.json`` defines the pipeline.
        registry: gives the ensemble of the currently published bank, shared by all requests.
        description: shown by the clients.
        labels: label name -> value of the returned labelmap.
        output_label_key: the data key that is written as the returned labelmap.
    """

    def __init__(
        self,
        bundle: CardiacBundle,
        registry: EnsembleRegistry,
        description: str = "Checkpoint-ensemble segmentation of RV, MYO and LV with a voxel-wise entropy map",
        labels: Mapping[str, int] | None = None,
        output_label_key: str = PRED,
    ) -> None:
        super().__init__(
            path=None,
            network=None,
            type=InferType.SEGMENTATION,
            labels=dict(labels) if labels else {name: value for value, name in STRUCTURES.items()},
            dimension=3,
            description=description,
            output_label_key=output_label_key,
            config={"result_extension": ".nrrd", "result_dtype": "uint8"},
        )
        self.registry = registry
        parser = bundle.parser("inference.json")
        self.review_threshold = float(parser.get_parsed_content("review_threshold"))
        # one parse: the bundle's Invertd holds the very pre-processing instances it must invert
        self._pre = [
            LoadOrExplain(t) if isinstance(t, LoadImaged) else t
            for t in parser.get_parsed_content("preprocessing").transforms
        ]
        self._inferer = parser.get_parsed_content("inferer")
        postprocessing = parser.get_parsed_content("postprocessing").transforms
        self._post = [t for t in postprocessing if not isinstance(t, SaveImaged)]

    def check_image(self, path: str) -> None:
        """Read ``path`` as the pipeline does and apply the bundle's input checks (``ValidateStackd``); raises
        ``InputError`` naming the problem and the fix."""
        data: Any = {self.input_key: path}
        for transform in self._pre:
            data = transform(data)
            if isinstance(transform, ValidateStackd):
                return

    def is_valid(self) -> bool:
        return True  # the bank is checked per request, so that a bank published later is served without a restart

    def pre_transforms(self, data: Mapping[str, Any] | None = None) -> Sequence[Callable]:
        return self._pre

    def inferer(self, data: Mapping[str, Any] | None = None) -> Callable:
        return self._inferer

    def post_transforms(self, data: Mapping[str, Any] | None = None) -> Sequence[Callable]:
        return [*self._post, SqueezeDimd(keys=PRED, dim=0)]

    def run_pre_transforms(self, data: dict[str, Any], transforms: Sequence[Callable]) -> dict[str, Any]:
        # MONAI's Spacingd updates every "image_*" entry as if it were the image's metadata dict, and MONAI Label
        # keeps the input path (a string) as "image_path": set it aside while the bundle's transforms run.
        image_path = data.pop("image_path", None)
        data = super().run_pre_transforms(data, transforms)
        if image_path is not None:
            data["image_path"] = image_path
        return data

    def run_inferer(self, data: dict[str, Any], convert_to_batch: bool = True, device: str = "cpu") -> dict[str, Any]:
        served = self.registry.get()
        data[PRED] = served.predict(self._inferer, data[self.input_key][None])[0].cpu()
        data[SERVED] = served
        data[VOTERS] = served.voters(self._inferer)
        return data

    def summarise(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """The per-case result for ``params``: uncertainty score, review flag, mean entropy per structure (bits),
        the bank entries of the ensemble and those that voted for this image."""
        served: ServedEnsemble = data[SERVED]
        row = case_row(data[PRED], data[UNCERTAINTY], review_threshold=self.review_threshold)
        return {
            "volume_uncertainty": row["uncertainty"],
            "review_suggested": row["review"],
            "review_threshold": self.review_threshold,
            "mean_entropy": {name: row[f"entropy_{name}"] if row[f"entropy_{name}"] != "" else None
                             for name in STRUCTURES.values()},
            "entropy_units": "bits (0 = certain, 2 = uniform over the 4 classes)",
            "bank_dir": str(served.bank_dir),
            "checkpoints": served.checkpoints,
            "voters": data[VOTERS],
        }

    def writer(self, data: dict[str, Any], extension: str | None = None, dtype: Any = None) -> tuple[Any, Any]:
        label_file, result = super().writer(data, extension, dtype)
        result.update(self.summarise(data))
        entropy = data[UNCERTAINTY]
        entropy_file = tempfile.NamedTemporaryFile(suffix=".nii.gz", delete=False).name
        write_nifti(entropy[0].numpy(), entropy_file, affine=entropy.affine.numpy(), output_dtype=np.float32)
        result[ENTROPY_FILE] = entropy_file
        return label_file, result
