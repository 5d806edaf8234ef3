"""The checkpoint ensemble that answers requests: loaded once per published bank and shared by all requests.

Why: loading and hashing a bank of posterior checkpoints costs far more than one inference, so a process keeps one
ensemble in memory and reuses it. Every request first asks :class:`EnsembleRegistry` for the served ensemble; the
registry compares the published bank folder with the loaded one (a small file read) and loads a newly published bank
once, under a lock, while requests already running finish on the ensemble they hold.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from monai.inferers import Inferer

from lib.bank_publisher import BankPublisher
from lib.bundle import CardiacBundle
from scripts.ensemble import PosteriorEnsemble
from scripts.fast_ensemble import FastEnsembleInferer
from scripts.posterior_bank import BankError

__all__ = ["EnsembleRegistry", "ServedEnsemble"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServedEnsemble:
    """One loaded bank: the ensemble and where it came from.

    Requests call it concurrently as they are: ``PosteriorEnsemble`` itself serialises the member passes that share
    its module, so no lock is needed here.
    """

    bank_dir: Path
    ensemble: PosteriorEnsemble
    device: torch.device

    @property
    def checkpoints(self) -> list[dict[str, Any]]:
        """The bank entries of the ensemble (the configured selection): file, epoch, cycle, learning rate, sha256."""
        return [asdict(c) for c in self.ensemble.checkpoints]

    def voters(self, inferer: Inferer) -> list[dict[str, Any]]:
        """The bank entries that voted in this thread's last :meth:`predict`: the members the bundle's fast path
        used before the mean settled (in the order it added them), or all of them for the exact ensemble."""
        run = inferer.last_run() if isinstance(inferer, FastEnsembleInferer) else None
        if run is None:
            return self.checkpoints
        return [asdict(self.ensemble.checkpoints[i]) for i in run.members]

    def predict(self, inferer: Inferer, image: torch.Tensor) -> torch.Tensor:
        """Mean softmax over the members for a batch of channel-first images, on the ensemble's device (the
        configured inferer decides how: every member on the whole image, or the bundle's fast path)."""
        with torch.no_grad():
            return inferer(image.to(self.device), self.ensemble)


class EnsembleRegistry:
    """Hands out the ensemble of the currently published bank, loading it once per bank (thread-safe).

    A bank that cannot be loaded (missing, corrupted, too small for the configured ensemble) raises the bundle's
    ``BankError`` on every request until it is fixed; nothing else is served in its place, so a replaced model never
    answers silently.
    """

    def __init__(self, bundle: CardiacBundle, publisher: BankPublisher) -> None:
        self.bundle = bundle
        self.publisher = publisher
        self._lock = threading.Lock()
        self._served: ServedEnsemble | None = None

    def get(self) -> ServedEnsemble:
        bank_dir = self.publisher.current()
        with self._lock:
            if self._served is None or self._served.bank_dir != bank_dir:
                self._served = self._load(bank_dir)
            return self._served

    def _load(self, bank_dir: Path) -> ServedEnsemble:
        parser = self.bundle.parser("inference.json", bank_dir=str(bank_dir))
        try:
            ensemble = parser.get_parsed_content("network")  # the configured ensemble, moved to the configured device
        except RuntimeError as e:  # MONAI's config parser wraps what the component raised: pass the bank's own error on
            cause: BaseException | None = e
            while cause is not None and not isinstance(cause, BankError):
                cause = cause.__cause__
            if cause is None:
                raise
            raise cause from e
        device = parser.get_parsed_content("device")
        logger.info(f"serving checkpoint bank {bank_dir}: {ensemble.num_members} members on {device}")
        return ServedEnsemble(bank_dir=bank_dir, ensemble=ensemble, device=device)
