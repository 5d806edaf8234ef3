"""Temperature scaling (Guo et al., 2017): one scalar ``tau`` that divides the logits before the softmax.

The paper uses a fixed ``tau = 1.5``; the usual recipe fits ``tau`` on held-out data by minimising the negative
log-likelihood. Both are baselines in the evaluation. ``tau`` changes the confidence, never the argmax, so the
segmentation (and its Dice) is the vanilla model's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["fit_temperature"]


def fit_temperature(logits: torch.Tensor, target: torch.Tensor, max_iter: int = 100) -> float:
    """The temperature that minimises the mean negative log-likelihood of ``target`` under
    ``softmax(logits / tau)``.

    Args:
        logits: (N, C) logits of N samples (voxels).
        target: (N,) integer classes.
        max_iter: iterations of L-BFGS.

    ``log tau`` is optimised, so ``tau`` stays positive without constraints; the NLL is convex in ``1 / tau``,
    so L-BFGS with a line search finds the single minimum from ``tau = 1``.
    """
    if logits.ndim != 2 or target.shape != logits.shape[:1]:
        raise ValueError(f"need logits (N, C) and target (N,), got {tuple(logits.shape)} and {tuple(target.shape)}.")
    if logits.shape[0] == 0:
        raise ValueError("cannot fit a temperature on zero samples.")
    logits, target = logits.detach().double(), target.detach().long()
    log_tau = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_tau], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_tau.exp(), target)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_tau.detach().exp())
