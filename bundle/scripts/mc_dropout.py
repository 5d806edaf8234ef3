"""Monte-Carlo dropout (Gal and Ghahramani, 2016): dropout kept on at test time, predictions averaged.

Only the dropout modules are switched to training mode; every other module stays in evaluation mode, so that a
network with batch normalisation would not update or use batch statistics. The output has the contract of
:class:`scripts.ensemble.PosteriorEnsemble`: mean softmax, and with ``return_expected_entropy`` the samples'
mean entropy (bits), from which the mutual information follows.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["DROPOUT_TYPES", "MCDropoutEnsemble", "enable_dropout"]

DROPOUT_TYPES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


def enable_dropout(network: nn.Module) -> list[nn.Module]:
    """Put ``network`` in evaluation mode except its dropout modules, which go to training mode; return them."""
    network.eval()
    dropout = [m for m in network.modules() if isinstance(m, DROPOUT_TYPES)]
    for module in dropout:
        module.train()
    return dropout


class MCDropoutEnsemble(nn.Module):
    """``samples`` stochastic forward passes of ``network`` with only its dropout active, softmax averaged.

    Args:
        network: a network with dropout modules (with non-zero probability) and its trained weights.
        samples: number of stochastic passes (30 in the paper).
        return_expected_entropy: also return the passes' mean entropy (bits), as a tuple.
    """

    def __init__(self, network: nn.Module, samples: int = 30, return_expected_entropy: bool = False) -> None:
        super().__init__()
        if samples < 1:
            raise ValueError(f"MC-Dropout needs samples >= 1, got {samples}.")
        self.network = network
        self.samples = samples
        self.return_expected_entropy = return_expected_entropy
        if not any(isinstance(m, DROPOUT_TYPES) and m.p > 0 for m in network.modules()):
            raise ValueError(
                "the network has no dropout module with p > 0, so MC-Dropout would repeat one deterministic "
                "prediction: build network_def with dropout (e.g. 0.1) and load a model trained with it."
            )
        enable_dropout(self.network)

    @property
    def num_members(self) -> int:
        return self.samples

    def train(self, mode: bool = True) -> MCDropoutEnsemble:
        # whatever an engine asks of the wrapper, the network keeps evaluation mode with dropout on
        super().train(mode)
        enable_dropout(self.network)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        enable_dropout(self.network)
        mean = torch.zeros((), device=x.device)
        expected_entropy = torch.zeros((), device=x.device)
        for _ in range(self.samples):
            p = torch.softmax(self.network(x).float(), dim=1)
            mean = mean + p
            if self.return_expected_entropy:
                expected_entropy = expected_entropy - (p * torch.log2(p.clamp_min(1e-12))).sum(1, keepdim=True)
        mean = mean / self.samples
        if self.return_expected_entropy:
            return mean, expected_entropy / self.samples
        return mean
