"""Checkpoint-ensemble prediction (Eq. 2): the mean softmax of posterior samples of one network."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn
from torch.func import functional_call

from scripts.posterior_bank import BankError, PosteriorBank, PosteriorCheckpoint, SelectionMode, load_state_dict

__all__ = ["PosteriorEnsemble", "load_posterior_ensemble", "load_single_model"]


def _check_fits(network: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Fail with the cause and the fix when a checkpoint belongs to another network configuration.

    Extra tensors in the checkpoint are allowed (an inference network built without deep-supervision heads does
    not use the trained heads); every tensor the network needs must be there with its shape."""
    expected = network.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    mismatched = [k for k in expected.keys() & state_dict.keys() if expected[k].shape != state_dict[k].shape]
    if missing or mismatched:
        detail = "; ".join(
            f"{what}: {keys[:3]}{' ...' if len(keys) > 3 else ''}"
            for what, keys in (("missing", missing), ("shape differs", mismatched))
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

    ``functional_call`` swaps a member's weights into the shared module for the duration of one pass, so the passes
    are serialised by a lock that the ensemble holds: any number of threads may call it at once (requests of a
    server, workers of a data loader) and every pass sees exactly one member's weights.

    Args:
        network: the architecture (its own weights are not used).
        state_dicts: one ``state_dict`` per member. Each is read once, in order, and copied into the stacked
            buffers, so a lazy sequence that loads a member on indexing (as :func:`load_posterior_ensemble` passes)
            keeps the peak memory at the stacked members plus one checkpoint.
        temperature: divides every member's logits before the softmax (1 = none; temperature scaling baseline).
        return_expected_entropy: also return the members' mean entropy (bits), from which the mutual information
            (epistemic uncertainty) follows; the output is then a tuple ``(probabilities, expected_entropy)``.
        checkpoints: the bank entries of the members, kept to report which checkpoints voted.
        weights_dtype: the floating dtype in which the members' weights are *kept* in memory; each pass casts its
            member back to the network's dtype, so the arithmetic is unchanged. ``torch.float16`` halves the memory
            of the bank (30 members of the full-size network: 1.2 GB instead of 2.5 GB) at the cost of rounding the
            weights as a half-precision bank on disk does. ``None`` keeps the network's dtype (exact).
    """

    def __init__(
        self,
        network: nn.Module,
        state_dicts: Sequence[Mapping[str, torch.Tensor]],
        temperature: float = 1.0,
        return_expected_entropy: bool = False,
        checkpoints: Sequence[PosteriorCheckpoint] = (),
        weights_dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if len(state_dicts) == 0:
            raise BankError("an ensemble needs at least one member checkpoint.")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}.")
        self.network = network.eval()
        self.temperature = float(temperature)
        self.return_expected_entropy = return_expected_entropy
        self.checkpoints = list(checkpoints)
        self._lock = threading.Lock()
        # named_parameters/buffers list a shared module once (DynUNet shares its decoder blocks between two
        # attributes, so its state_dict names them twice); functional_call wants each tensor once.
        reference = dict(network.named_parameters()) | dict(network.named_buffers())
        self.keys = list(reference)
        self._dtypes = {key: t.dtype for key, t in reference.items()}
        stacked = [
            torch.empty(
                (len(state_dicts), *t.shape),
                dtype=weights_dtype if weights_dtype is not None and t.is_floating_point() else t.dtype,
                device=t.device,
            )
            for t in reference.values()
        ]
        for i, sd in enumerate(state_dicts):  # one member at a time: a lazy sequence loads it only now
            _check_fits(network, sd, self.checkpoints[i].file if i < len(self.checkpoints) else f"member {i}")
            for key, buffer in zip(self.keys, stacked, strict=True):
                buffer[i].copy_(sd[key])
        for j, buffer in enumerate(stacked):
            self.register_buffer(f"member_{j}", buffer, persistent=False)

    @property
    def num_members(self) -> int:
        return self.member_0.shape[0]

    def member_weights(self, i: int) -> dict[str, torch.Tensor]:
        """The weights of member ``i`` in the network's dtypes (views of the stacked buffers when no cast is
        needed)."""
        return {key: getattr(self, f"member_{j}")[i].to(self._dtypes[key]) for j, key in enumerate(self.keys)}

    def member_logits(self, x: torch.Tensor, i: int) -> torch.Tensor:
        """The network's output with member ``i``'s weights (thread-safe, see the class docstring)."""
        weights = self.member_weights(i)
        with self._lock:
            return functional_call(self.network, weights, (x,))

    def member_probabilities(self, x: torch.Tensor, i: int) -> torch.Tensor:
        """Softmax of member ``i``'s logits divided by the temperature, in float32."""
        return torch.softmax(self.member_logits(x, i).float() / self.temperature, dim=1)

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
            p = self.member_probabilities(x, i)
            mean = mean + p
            if self.return_expected_entropy:
                expected_entropy = expected_entropy - (p * torch.log2(p.clamp_min(1e-12))).sum(1, keepdim=True)
        mean = mean / self.num_members
        if self.return_expected_entropy:
            return mean, expected_entropy / self.num_members
        return mean


class _BankMembers(Sequence):
    """The chosen checkpoints of a bank as a sequence that reads (and verifies) a file only when indexed."""

    def __init__(self, bank: PosteriorBank, chosen: Sequence[PosteriorCheckpoint], verify: bool) -> None:
        self.bank, self.chosen, self.verify = bank, list(chosen), verify

    def __len__(self) -> int:
        return len(self.chosen)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:  # type: ignore[override]
        return self.bank.load(self.chosen[i], verify=self.verify)


def load_posterior_ensemble(
    network: nn.Module,
    bank_dir: str | Path,
    mode: SelectionMode = "multi",
    n: int | None = None,
    temperature: float = 1.0,
    return_expected_entropy: bool = False,
    verify: bool = True,
    weights_dtype: torch.dtype | str | None = None,
) -> PosteriorEnsemble:
    """The paper's ensembles from a trained bank: ``single`` (last ``n`` of the last cycle), ``multi``
    (last ``n / M`` of every cycle) or ``all``; every file's sha256 is checked against the manifest.

    The checkpoints are read one at a time straight into the ensemble's stacked buffers, so loading never holds
    more than the ensemble and one checkpoint. ``weights_dtype`` (a dtype or its name, e.g. ``"float16"``) is the
    in-memory precision of the members, see :class:`PosteriorEnsemble`."""
    bank = PosteriorBank(bank_dir)
    chosen = bank.select(mode, n)
    if isinstance(weights_dtype, str):
        weights_dtype = getattr(torch, weights_dtype)
    members = _BankMembers(bank, chosen, verify)
    return PosteriorEnsemble(network, members, temperature, return_expected_entropy, chosen, weights_dtype)


def load_single_model(network: nn.Module, model_path: str | Path, temperature: float = 1.0) -> PosteriorEnsemble:
    """The vanilla model (``models/model.pt``) as a one-member ensemble, so that it outputs probabilities too."""
    return PosteriorEnsemble(network, [load_state_dict(model_path)], temperature)
