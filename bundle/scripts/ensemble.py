"""Checkpoint-ensemble prediction (Eq. 2): the mean softmax of posterior samples of one network."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn
from torch.func import functional_call

from scripts.posterior_bank import BankError, PosteriorBank, PosteriorCheckpoint, SelectionMode, load_state_dict

__all__ = ["PosteriorEnsemble", "load_posterior_ensemble", "load_single_model"]


def _check_fits(network: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Fail with the cause and the fix when a checkpoint belongs to another network configuration."""
    expected = network.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = [k for k in expected.keys() & state_dict.keys() if expected[k].shape != state_dict[k].shape]
    if missing or unexpected or mismatched:
        detail = "; ".join(
            f"{what}: {keys[:3]}{' ...' if len(keys) > 3 else ''}"
            for what, keys in (("missing", missing), ("unexpected", unexpected), ("shape differs", mismatched))
            if keys
        )
        raise BankError(
            f"{source} does not fit the configured network_def ({detail}). The checkpoints were trained with "
            "another network configuration: pass the same network_def overrides as in training (the bank's "
            "manifest.json records them under 'network_def')."
        )


class PosteriorEnsemble(nn.Module):
    """A network whose output is the predictive distribution averaged over posterior samples.

    The members share one architecture, so their weights are stacked into buffers and each member runs through
    ``torch.func.functional_call`` on the same module: one copy of the graph, no ``load_state_dict`` per forward.
    Softmax is applied per member *before* averaging, as Eq. 2 prescribes (averaging logits is another,
    less calibrated, predictor).

    Args:
        network: the architecture (its own weights are not used).
        state_dicts: one ``state_dict`` per member.
        temperature: divides every member's logits before the softmax (1 = none; temperature scaling baseline).
        return_expected_entropy: also return the members' mean entropy (bits), from which the mutual information
            (epistemic uncertainty) follows; the output is then a tuple ``(probabilities, expected_entropy)``.
        checkpoints: the bank entries of the members, kept to report which checkpoints voted.
    """

    def __init__(
        self,
        network: nn.Module,
        state_dicts: Sequence[Mapping[str, torch.Tensor]],
        temperature: float = 1.0,
        return_expected_entropy: bool = False,
        checkpoints: Sequence[PosteriorCheckpoint] = (),
    ) -> None:
        super().__init__()
        if not state_dicts:
            raise BankError("an ensemble needs at least one member checkpoint.")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}.")
        self.network = network.eval()
        self.temperature = float(temperature)
        self.return_expected_entropy = return_expected_entropy
        self.checkpoints = list(checkpoints)
        for i, sd in enumerate(state_dicts):
            _check_fits(network, sd, checkpoints[i].file if i < len(checkpoints) else f"member {i}")
        # named_parameters/buffers list a shared module once (DynUNet shares its decoder blocks between two
        # attributes, so its state_dict names them twice); functional_call wants each tensor once.
        reference = dict(network.named_parameters()) | dict(network.named_buffers())
        self.keys = list(reference)
        for j, key in enumerate(self.keys):
            stacked = torch.stack([sd[key].to(reference[key].dtype) for sd in state_dicts])
            self.register_buffer(f"member_{j}", stacked, persistent=False)

    @property
    def num_members(self) -> int:
        return self.member_0.shape[0]

    def member_weights(self, i: int) -> dict[str, torch.Tensor]:
        return {key: getattr(self, f"member_{j}")[i] for j, key in enumerate(self.keys)}

    def train(self, mode: bool = True) -> PosteriorEnsemble:
        # The members are fixed posterior samples: the wrapped network stays in eval mode (instance norm and no
        # dropout), whatever an engine asks of the wrapper.
        super().train(mode)
        self.network.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        mean = torch.zeros((), device=x.device)
        expected_entropy = torch.zeros((), device=x.device)
        for i in range(self.num_members):
            logits = functional_call(self.network, self.member_weights(i), (x,))
            p = torch.softmax(logits.float() / self.temperature, dim=1)
            mean = mean + p
            if self.return_expected_entropy:
                expected_entropy = expected_entropy - (p * torch.log2(p.clamp_min(1e-12))).sum(1, keepdim=True)
        mean = mean / self.num_members
        if self.return_expected_entropy:
            return mean, expected_entropy / self.num_members
        return mean


def load_posterior_ensemble(
    network: nn.Module,
    bank_dir: str | Path,
    mode: SelectionMode = "multi",
    n: int | None = None,
    temperature: float = 1.0,
    return_expected_entropy: bool = False,
    verify: bool = True,
) -> PosteriorEnsemble:
    """The paper's ensembles from a trained bank: ``single`` (last ``n`` of the last cycle), ``multi``
    (last ``n / M`` of every cycle) or ``all``; every file's sha256 is checked against the manifest."""
    bank = PosteriorBank(bank_dir)
    chosen = bank.select(mode, n)
    state_dicts = [bank.load(c, verify=verify) for c in chosen]
    return PosteriorEnsemble(network, state_dicts, temperature, return_expected_entropy, chosen)


def load_single_model(network: nn.Module, model_path: str | Path, temperature: float = 1.0) -> PosteriorEnsemble:
    """The vanilla model (``models/model.pt``) as a one-member ensemble, so that it outputs probabilities too."""
    return PosteriorEnsemble(network, [load_state_dict(model_path)], temperature)
