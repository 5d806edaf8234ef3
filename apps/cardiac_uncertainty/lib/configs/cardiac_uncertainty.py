"""The app's one model: the bundle's checkpoint ensemble, with its infer, train, scoring and strategy tasks.

All tasks share one :class:`~lib.served_ensemble.EnsembleRegistry`, so a process loads each published bank once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from monailabel.interfaces.config import TaskConfig
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask

from lib.activelearning.most_uncertain import MostUncertain
from lib.bank_publisher import BankPublisher
from lib.bundle import CardiacBundle
from lib.infers.segmentation_uncertainty import SegmentationUncertainty
from lib.infers.uncertainty_overlay import DEFAULT_LEVELS, UncertaintyOverlay, parse_levels
from lib.scoring.ensemble_uncertainty import SCORE_KEY, EnsembleUncertaintyScoring
from lib.served_ensemble import EnsembleRegistry
from lib.trainers.checkpoint_bank import CheckpointBankTrainer

__all__ = ["CardiacUncertainty"]

SEGMENTATION = "segmentation_uncertainty"
OVERLAY = "uncertainty_overlay"
STRATEGY = "most_uncertain"


class CardiacUncertainty(TaskConfig):
    """Builds the tasks from ``--conf`` options:

    * ``model_dir``: where trained banks are staged and published (default: the app's ``model/`` folder);
    * ``uncertainty_levels``: the overlay's levels as ``name:bits,...`` (default ``low:0.1,medium:0.5,high:1.0``).

    ``init`` takes the :class:`~lib.bundle.CardiacBundle` as keyword ``bundle``.
    """

    def init(self, name: str, model_dir: str, conf: dict[str, str], planner: Any, **kwargs: Any) -> None:
        super().init(name, model_dir, conf, planner, **kwargs)
        self.bundle: CardiacBundle = kwargs["bundle"]
        self.bundle_path = str(self.bundle.path)
        default_bank = self.bundle.parser("inference.json").get_parsed_content("bank_dir")
        self.publisher = BankPublisher(Path(conf.get("model_dir") or model_dir), default_bank)
        self.registry = EnsembleRegistry(self.bundle, self.publisher)
        levels = parse_levels(conf["uncertainty_levels"]) if conf.get("uncertainty_levels") else DEFAULT_LEVELS
        self.segmentation = SegmentationUncertainty(self.bundle, self.registry)
        self.overlay = UncertaintyOverlay(self.bundle, self.registry, levels)
        self.training = CheckpointBankTrainer(self.bundle, self.publisher)
        self.labels = self.segmentation.labels

    def infer(self) -> dict[str, InferTask]:
        return {SEGMENTATION: self.segmentation, OVERLAY: self.overlay}

    def trainer(self) -> TrainTask:
        return self.training

    def strategy(self) -> dict[str, Strategy]:
        return {STRATEGY: MostUncertain()}

    def scoring_method(self) -> dict[str, ScoringMethod]:
        return {SCORE_KEY: EnsembleUncertaintyScoring(self.segmentation)}
