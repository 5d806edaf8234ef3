"""The paper's comparison: every method on every test domain, segmentation, calibration and failure detection.

    python -m scripts.evaluation --dataset_dir data/synthetic --work_dir runs/evaluation/synthetic \\
        --report docs/results.md [--paper] [--config_file extra.json ...] [--no_train]

trains the runs that are missing (``scripts.evaluation_runs``), evaluates the methods below on the validation
split (to fit the temperature) and on each domain of the test split, writes per-volume results to
``<work_dir>/results`` and the report with its figures (``scripts.evaluation_report``).

Methods: Vanilla (last checkpoint of the cyclic run), temperature scaling (fixed ``tau`` and ``tau`` fitted on the
validation split), SWA (last cycle's posterior checkpoints averaged), MC-Dropout, deep ensemble, checkpoint
ensembles single- and multi-modal, and the checkpoint ensembles of the run with the per-cycle (``Tc``) schedule.

Evaluation reuses ``inference.json`` through ``monai.bundle.ConfigParser``: the same network definition,
preprocessing, slice-wise inferer and inversion to the input geometry, so that an evaluated prediction is exactly
what inference writes. Every member's softmax is computed once per volume and the ensembles of every size (the
ensemble-size curves) are means of these. Metrics are computed in the geometry of the reference label.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import sys
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.metrics import compute_dice, compute_hausdorff_distance
from monai.networks.utils import one_hot
from monai.transforms import LoadImage
from monai.utils import set_determinism
from torch import nn

from scripts.calibration import CalibrationBins, volume_calibration
from scripts.datalist import load_datalist
from scripts.ensemble import PosteriorEnsemble
from scripts.evaluation_report import write_report
from scripts.evaluation_runs import RunOutcome, ensure_trained, plan_runs
from scripts.failure_detection import uncertainty_error_overlap
from scripts.input_checks import ACDC_LABELS, InputError, ValidateLabelsd
from scripts.mc_dropout import MCDropoutEnsemble
from scripts.posterior_bank import BankError, PosteriorBank, load_state_dict
from scripts.swa import load_swa_model
from scripts.temperature_scaling import fit_temperature
from scripts.uncertainty import foreground_box, mutual_information, predictive_entropy, volume_uncertainty

__all__ = ["EvaluationSettings", "evaluate", "load_config", "main"]

BUNDLE_ROOT = Path(__file__).resolve().parents[1]
STRUCTURES = {k: v for k, v in ACDC_LABELS.items() if k}
# (key, label): the table rows, in the paper's order; the Tc rows are this project's addition
METHODS = {
    "vanilla": "Vanilla",
    "ts_fixed": "Temp. scaling (fixed τ)",
    "ts_fitted": "Temp. scaling (fitted τ)",
    "swa": "SWA",
    "mc_dropout": "MC-Dropout",
    "deep_ensemble": "Deep ens.",
    "ckpt_single": "Ckpt. ens. (single)",
    "ckpt_multi": "Ckpt. ens. (multi)",
    "ckpt_single_Tc": "Ckpt. ens. (single, Tc)",
    "ckpt_multi_Tc": "Ckpt. ens. (multi, Tc)",
}
BANKS = {"": "cyclic", "_Tc": "cyclic_Tc"}  # method-key suffix -> run whose bank it uses
MAX_FIT_VOXELS = 2_000_000


@dataclass(frozen=True)
class EvaluationSettings:
    """The evaluation's knobs (``configs/evaluate.json``; the ensemble size ``n`` comes from ``inference.json``)."""

    n: int
    fixed_temperature: float = 1.5
    mc_dropout_p: float = 0.1
    mc_dropout_samples: int = 30
    deep_ensemble_seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    ensemble_size_max: int = 30
    ece_bins: int = 100
    failure_dice: float = 0.8
    overlap_threshold: float = 0.5
    failed_examples: int = 3
    seed: int = 0

    @classmethod
    def from_parser(cls, parser: ConfigParser) -> EvaluationSettings:
        values = {k: parser.get_parsed_content(k) for k in cls.__dataclass_fields__ if k in parser}
        values["deep_ensemble_seeds"] = tuple(values.get("deep_ensemble_seeds", cls.deep_ensemble_seeds))
        return cls(**values)


def load_config(config_files: Sequence[str | Path], overrides: Mapping[str, Any]) -> ConfigParser:
    """``config_files`` merged in order (later files win) with ``overrides`` on top."""
    parser = ConfigParser(ConfigParser.load_config_files([str(f) for f in config_files]))
    parser.update(dict(overrides))
    return parser


# ---------------------------------------------------------------------------------------------------- the models


@dataclass
class BankMembers:
    """The posterior checkpoints of one bank that any evaluated ensemble uses, as one-member ensembles, and
    which of them form the single- and multi-modal ensembles of each size."""

    members: dict[int, PosteriorEnsemble]
    cycles: list[list[int]]
    n_single: int
    n_multi: int

    def single(self, n: int) -> list[int]:
        return self.cycles[-1][-n:]

    def multi(self, n: int) -> list[int]:
        return [t for cycle in self.cycles for t in cycle[-(n // len(self.cycles)) :]]

    def sizes(self, mode: str, up_to: int) -> list[int]:
        if mode == "single":
            return list(range(1, min(up_to, len(self.cycles[-1])) + 1))
        m = len(self.cycles)
        return [m * k for k in range(1, min(up_to // m, min(map(len, self.cycles))) + 1)] or [m]


def _load_bank(network: nn.Module, bank_dir: Path, settings: EvaluationSettings, verify: bool, device) -> BankMembers:
    bank = PosteriorBank(bank_dir)
    checkpoints = bank.checkpoints
    by_cycle: dict[int, list] = defaultdict(list)
    for c in sorted(checkpoints, key=lambda c: c.epoch):
        by_cycle[c.cycle].append(c)
    cycles = [by_cycle[k] for k in sorted(by_cycle)]
    m, last, shortest = len(cycles), len(cycles[-1]), min(map(len, cycles))
    n_single = min(settings.n, last)
    n_multi = m * max(1, min(settings.n // m, shortest))
    up_to = max(settings.ensemble_size_max, settings.n)
    needed = {c.epoch: c for c in cycles[-1][-min(up_to, last) :]}
    needed |= {c.epoch: c for cycle in cycles for c in cycle[-max(1, min(up_to // m, shortest)) :]}
    members = {
        t: PosteriorEnsemble(network, [bank.load(c, verify)], return_expected_entropy=True).to(device)
        for t, c in sorted(needed.items())
    }
    return BankMembers(members, [[c.epoch for c in cycle] for cycle in cycles], n_single, n_multi)


@dataclass
class Models:
    """Everything the methods need, loaded once; ``errors`` says why a method cannot be evaluated."""

    vanilla: nn.Module | None = None
    swa: PosteriorEnsemble | None = None
    mc_dropout: MCDropoutEnsemble | None = None
    deep_ensemble: list[PosteriorEnsemble] = field(default_factory=list)
    banks: dict[str, BankMembers] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)


def _with_weights(network: nn.Module, path: Path) -> nn.Module:
    """``network`` with the weights of ``path``; tensors the network has no place for (the deep-supervision heads
    of a training checkpoint, when the network is built without them) are left out, every other must fit."""
    needed = network.state_dict().keys()
    network.load_state_dict({k: v for k, v in load_state_dict(path).items() if k in needed})
    return network


def _guard(models: Models, keys: Sequence[str], load: Callable[[], Any]) -> Any:
    """Run ``load``; on a missing or unusable checkpoint record the message for ``keys`` and return ``None``."""
    try:
        return load()
    except (BankError, FileNotFoundError, RuntimeError, ValueError, OSError) as e:
        for key in keys:
            models.errors.setdefault(key, str(e).strip())
        return None


def load_models(
    parser: ConfigParser, runs: Mapping[str, RunOutcome], settings: EvaluationSettings, device: torch.device
) -> Models:
    """Load the weights of every method from the run folders; a method whose checkpoints are missing or damaged
    gets a message in ``errors`` and the others are loaded as usual."""
    models = Models()
    network = parser.get_parsed_content("network_def").to(device).eval()
    verify = bool(parser.get_parsed_content("verify_bank"))

    def run_dir(name: str) -> Path:
        outcome = runs.get(name)
        if outcome is None or not outcome.ok:
            detail = outcome.error if outcome is not None else "not planned"
            raise FileNotFoundError(f"run {name!r} is not available: {detail}")
        return outcome.directory

    def vanilla() -> nn.Module:
        return _with_weights(copy.deepcopy(network), run_dir("cyclic") / "model.pt").eval()

    models.vanilla = _guard(models, ("vanilla", "ts_fixed", "ts_fitted"), vanilla)
    models.swa = _guard(
        models, ("swa",), lambda: load_swa_model(network, run_dir("cyclic") / "posterior", verify).to(device)
    )
    for suffix, run in BANKS.items():
        keys = (f"ckpt_single{suffix}", f"ckpt_multi{suffix}")
        bank = _guard(
            models, keys, lambda run=run: _load_bank(network, run_dir(run) / "posterior", settings, verify, device)
        )
        if bank is not None:
            models.banks[suffix] = bank
            models.sizes.update({keys[0]: bank.n_single, keys[1]: bank.n_multi})

    def mc_dropout() -> MCDropoutEnsemble:
        dropout_parser = ConfigParser(copy.deepcopy(parser.get()))
        dropout_parser["network_def"]["dropout"] = settings.mc_dropout_p
        dropout_network = _with_weights(
            dropout_parser.get_parsed_content("network_def"), run_dir("mc_dropout") / "model.pt"
        )
        return MCDropoutEnsemble(dropout_network.to(device), settings.mc_dropout_samples, return_expected_entropy=True)

    models.mc_dropout = _guard(models, ("mc_dropout",), mc_dropout)

    def deep_ensemble() -> list[PosteriorEnsemble]:
        paths = [run_dir(f"deep_ensemble_seed{s}") / "model.pt" for s in settings.deep_ensemble_seeds]
        return [
            PosteriorEnsemble(network, [load_state_dict(p)], return_expected_entropy=True).to(device) for p in paths
        ]

    models.deep_ensemble = _guard(models, ("deep_ensemble",), deep_ensemble) or []
    models.sizes.update(
        vanilla=1,
        ts_fixed=1,
        ts_fitted=1,
        swa=1,
        mc_dropout=settings.mc_dropout_samples,
        deep_ensemble=len(settings.deep_ensemble_seeds),
    )
    return models


# ----------------------------------------------------------------------------------------------- one volume


@dataclass
class Prediction:
    """A method's predictive distribution in the label's geometry, and what it cost."""

    probabilities: torch.Tensor
    expected_entropy: torch.Tensor | None
    forward_passes: int
    seconds: float


def volume_metrics(
    prediction: Prediction,
    label: torch.Tensor,
    spacing: Sequence[float],
    settings: EvaluationSettings,
    full: bool = True,
) -> tuple[dict[str, float], CalibrationBins, dict[str, torch.Tensor]]:
    """Per-volume metrics of one prediction against ``label`` (1, *spatial): Dice and HD95 (mm) per structure,
    mean Dice, ECE (%, foreground box), the volume uncertainty scores (mean entropy, and mean mutual information
    for an ensemble, in the predicted heart's box) and the uncertainty-error overlap; ``full=False`` computes
    only Dice and ECE (the ensemble-size curves). Also returns the calibration bins and the maps."""
    probabilities = prediction.probabilities
    segmentation = probabilities.argmax(0)
    label = label.reshape(segmentation.shape).long()
    pred_1h = one_hot(segmentation[None, None], len(ACDC_LABELS))
    ref_1h = one_hot(label[None, None], len(ACDC_LABELS))
    dice = compute_dice(pred_1h, ref_1h, include_background=False, ignore_empty=True)[0].tolist()
    bins = volume_calibration(probabilities, label, settings.ece_bins)
    row = {f"dice_{name}": d for name, d in zip(STRUCTURES.values(), dice, strict=True)}
    row["mean_dice"] = float(np.nanmean(dice)) if not all(map(math.isnan, dice)) else math.nan
    row["ece"] = 100.0 * bins.ece()
    maps: dict[str, torch.Tensor] = {"segmentation": segmentation}
    if not full:
        return row, bins, maps
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an empty structure gives NaN, reported as missing
        hd95 = compute_hausdorff_distance(
            pred_1h, ref_1h, include_background=False, percentile=95, spacing=list(spacing)
        )
    row.update({f"hd95_{name}": h for name, h in zip(STRUCTURES.values(), hd95[0].tolist(), strict=True)})
    entropy = predictive_entropy(probabilities)[0]
    maps["entropy"] = entropy
    row["uncertainty"] = volume_uncertainty(entropy, segmentation)
    if prediction.expected_entropy is not None:
        mi = mutual_information(probabilities, prediction.expected_entropy)[0]
        maps["mutual_information"] = mi
        row["mutual_information"] = volume_uncertainty(mi, segmentation)
    row["overlap"] = uncertainty_error_overlap(entropy, segmentation, label, settings.overlap_threshold)
    row["forward_passes"] = prediction.forward_passes
    row["seconds"] = prediction.seconds
    return row, bins, maps


class VolumePredictor:
    """Runs the methods' networks on one preprocessed volume (caching each member's output) and brings the
    composed predictions back to the input geometry with the inference config's ``Invertd``."""

    def __init__(self, data: Mapping[str, Any], inferer: Callable, inverter: Callable, device: torch.device) -> None:
        self.data = data
        self.image = data["image"].unsqueeze(0).to(device)
        self.inferer = inferer
        self.inverter = inverter
        self.cache: dict[Any, tuple[torch.Tensor, torch.Tensor | None, float]] = {}

    def run(self, key: Any, module: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None, float]:
        """``(output, expected entropy or None, seconds)`` of ``module`` in network space, computed once per key."""
        if key not in self.cache:
            start = time.perf_counter()
            with torch.no_grad():
                out = self.inferer(self.image, module)
            seconds = time.perf_counter() - start
            first, second = (out[0], out[1]) if isinstance(out, tuple | list) else (out, None)
            self.cache[key] = (first[0].float().cpu(), None if second is None else second[0].float().cpu(), seconds)
        return self.cache[key]

    def to_original(self, tensor: torch.Tensor) -> torch.Tensor:
        """Resample a network-space (channels, *spatial) map back to the input image's geometry."""
        inverted = self.inverter({"image": self.data["image"], "pred": MetaTensor(tensor)})["pred"]
        return inverted.as_tensor() if isinstance(inverted, MetaTensor) else torch.as_tensor(inverted)

    def ensemble(self, keys: Sequence[Any], modules: Sequence[nn.Module]) -> Prediction:
        """Mean softmax (Eq. 2) and mean member entropy of one-member ensembles, in the input geometry."""
        outputs = [self.run(k, m) for k, m in zip(keys, modules, strict=True)]
        probabilities = torch.stack([o[0] for o in outputs]).mean(0)
        expected_entropy = torch.stack([o[1] for o in outputs]).mean(0)
        both = self.to_original(torch.cat([probabilities, expected_entropy]))
        return Prediction(both[:-1], both[-1:], len(outputs), sum(o[2] for o in outputs))

    def single(self, key: Any, module: nn.Module) -> Prediction:
        """A module that outputs probabilities (or ``(probabilities, expected entropy)``) in one call."""
        probabilities, expected_entropy, seconds = self.run(key, module)
        if expected_entropy is None:
            return Prediction(self.to_original(probabilities), None, 1, seconds)
        both = self.to_original(torch.cat([probabilities, expected_entropy]))
        return Prediction(both[:-1], both[-1:], getattr(module, "num_members", 1), seconds)

    def temperature_scaled(self, logits_key: Any, network: nn.Module, temperature: float) -> Prediction:
        logits, _, seconds = self.run(logits_key, network)
        return Prediction(self.to_original(torch.softmax(logits / temperature, dim=0)), None, 1, seconds)


def predict_all(
    predictor: VolumePredictor, models: Models, settings: EvaluationSettings, temperature: float | None
) -> tuple[dict[str, Prediction], dict[str, dict[int, Prediction]]]:
    """Every available method's prediction for one volume, and the ensemble-size curves (``curve -> n ->
    prediction``) of the checkpoint ensembles and the deep ensemble."""
    predictions: dict[str, Prediction] = {}
    curves: dict[str, dict[int, Prediction]] = {}
    if models.vanilla is not None:
        predictions["vanilla"] = predictor.temperature_scaled("vanilla", models.vanilla, 1.0)
        predictions["ts_fixed"] = predictor.temperature_scaled("vanilla", models.vanilla, settings.fixed_temperature)
        if temperature is not None:
            predictions["ts_fitted"] = predictor.temperature_scaled("vanilla", models.vanilla, temperature)
    if models.swa is not None:
        predictions["swa"] = predictor.single("swa", models.swa)
    if models.mc_dropout is not None:
        predictions["mc_dropout"] = predictor.single("mc_dropout", models.mc_dropout)
    if models.deep_ensemble:
        curve = {
            k: predictor.ensemble([("deep_ensemble", i) for i in range(k)], models.deep_ensemble[:k])
            for k in range(1, len(models.deep_ensemble) + 1)
        }
        curves["deep_ensemble"] = curve
        predictions["deep_ensemble"] = curve[len(models.deep_ensemble)]
    up_to = max(settings.ensemble_size_max, settings.n)
    for suffix, bank in models.banks.items():
        for mode in ("single", "multi"):
            key = f"ckpt_{mode}{suffix}"
            members = bank.single if mode == "single" else bank.multi
            sizes = sorted(set(bank.sizes(mode, up_to)) | {models.sizes[key]})
            curve = {
                n: predictor.ensemble([(suffix, t) for t in members(n)], [bank.members[t] for t in members(n)])
                for n in sizes
            }
            curves[key] = curve
            predictions[key] = curve[models.sizes[key]]
    return predictions, curves


# ------------------------------------------------------------------------------------------------ the data


def _case_name(entry: Mapping[str, Any]) -> str:
    return str(entry.get("case") or Path(str(entry["image"])).name.split(".")[0])


def _check_reference(entry: Mapping[str, Any], data: Mapping[str, Any]) -> None:
    """Stop with a message naming the file when a case has no usable reference label."""
    name = _case_name(entry)
    if "label" not in entry or not entry["label"]:
        raise InputError(f"{name}: the datalist gives no reference label, so nothing can be measured.")
    if "label" not in data:
        raise InputError(f"{name}: reference label {entry['label']} could not be loaded.")
    label, image_shape = data["label"], tuple(int(s) for s in data["image"].meta["spatial_shape"])
    if tuple(label.shape[1:]) != image_shape:
        raise InputError(
            f"{name}: label {entry['label']} has shape {tuple(label.shape[1:])} but its image {entry['image']} has "
            f"{image_shape}; each image needs its own reference label in the same grid."
        )
    ValidateLabelsd("label", image_key=None)(data)


def labelled_cases(
    entries: Sequence[dict[str, Any]], split: str, preprocessing: Callable, messages: list[str]
) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """``(entry, preprocessed data)`` of every case of ``entries`` with a usable reference label, one at a time
    (a large test split is never held in memory); every other case is skipped with a message in ``messages``."""
    for entry in entries:
        try:
            for key in ("image", "label"):
                if entry.get(key) and not Path(entry[key]).exists():
                    raise InputError(f"{_case_name(entry)}: {key} file {entry[key]} does not exist.")
            data = preprocessing({k: v for k, v in entry.items() if k in ("image", "label") and v})
            _check_reference(entry, data)
        except (InputError, RuntimeError, ValueError, OSError) as e:
            while e.__cause__ is not None:  # MONAI wraps a transform's error in "applying transform ..."
                e = e.__cause__
            messages.append(f"{split} case {_case_name(entry)} skipped: {str(e).splitlines()[0]}")
            continue
        yield entry, data


# ----------------------------------------------------------------------------------------------- the evaluation


def fit_validation_temperature(
    cases: Sequence[tuple[dict, dict]], models: Models, inferer: Callable, inverter: Callable, device: torch.device
) -> float:
    """``tau`` minimising the NLL of the vanilla model on the validation voxels inside the foreground box of
    reference and prediction (the voxels the ECE is measured on)."""
    if models.vanilla is None:
        raise RuntimeError("the vanilla model is not available")
    if not cases:
        raise RuntimeError("the validation split has no case with a usable reference label")
    logits_all, labels_all = [], []
    for _, data in cases:
        predictor = VolumePredictor(data, inferer, inverter, device)
        logits = predictor.to_original(predictor.run("vanilla", models.vanilla)[0])
        label = data["label"].as_tensor()[0].long()
        box = foreground_box(label, logits.argmax(0)) or tuple(slice(None) for _ in label.shape)
        logits_all.append(logits[(slice(None), *box)].reshape(logits.shape[0], -1).T)
        labels_all.append(label[box].reshape(-1))
    logits, labels = torch.cat(logits_all), torch.cat(labels_all)
    if len(labels) > MAX_FIT_VOXELS:
        keep = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))[:MAX_FIT_VOXELS]
        logits, labels = logits[keep], labels[keep]
    return fit_temperature(logits, labels)


def _example_slices(maps: Mapping[str, dict[str, torch.Tensor]], label: torch.Tensor, reference: str | None) -> dict:
    """The axial slice to show for a volume (the one where ``reference``'s segmentation errs most, else the one
    with most reference foreground) and every method's maps on it, small enough to keep for every volume."""
    label = label.reshape(label.shape[-3:])
    if reference is not None and reference in maps:
        score = (maps[reference]["segmentation"] != label).sum((0, 1))
    else:
        score = (label > 0).sum((0, 1))
    k = int(score.argmax())
    slices = {"slice": k, "label": label[..., k].to(torch.uint8).numpy()}
    for method, m in maps.items():
        slices[method] = {
            name: (v[..., k].numpy().astype(np.uint8 if name == "segmentation" else np.float16))
            for name, v in m.items()
        }
    return slices


def evaluate(parser: ConfigParser, datalist: Path, runs: Mapping[str, RunOutcome], results_dir: Path) -> dict[str, Any]:
    """Evaluate all methods; write ``cases.csv``, ``summary.json`` and ``examples.npz`` into ``results_dir`` and
    return the summary. Methods whose checkpoints are missing are listed with the reason, the others evaluated."""
    settings = EvaluationSettings.from_parser(parser)
    set_determinism(seed=settings.seed)
    device = parser.get_parsed_content("device")
    preprocessing = parser.get_parsed_content("preprocessing")
    inferer = parser.get_parsed_content("inferer")
    inverter = parser.get_parsed_content("postprocessing#transforms#0")
    messages: list[str] = []
    models = load_models(parser, runs, settings, device)

    temperature = None
    if models.vanilla is not None:  # otherwise its error already stands for the temperature-scaled rows
        validation_entries = load_datalist(datalist, "validation", check_files=False, allow_empty=True)
        validation = list(labelled_cases(validation_entries, "validation", preprocessing, messages))
        try:
            temperature = fit_validation_temperature(validation, models, inferer, inverter, device)
            print(f"  temperature fitted on {len(validation)} validation volumes: tau = {temperature:.3f}", flush=True)
        except (RuntimeError, ValueError) as e:
            models.errors.setdefault("ts_fitted", f"no temperature could be fitted: {e}")
        del validation

    test = load_datalist(datalist, "test", check_files=False, allow_empty=True)
    if set(METHODS) <= set(models.errors):
        test = []  # nothing to run on the volumes; the reasons are in the summary
    rows: list[dict[str, Any]] = []
    reliability: dict[str, dict[str, CalibrationBins]] = defaultdict(dict)
    curves_out: dict[str, dict[str, dict[int, dict[str, list[float]]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(lambda: {"ece": [], "mean_dice": []}))
    )
    examples: dict[str, dict] = {}
    number = 0
    for number, (entry, data) in enumerate(labelled_cases(test, "test", preprocessing, messages), start=1):
        start = time.perf_counter()
        case, domain = _case_name(entry), str(entry.get("domain") or "test")
        predictor = VolumePredictor(data, inferer, inverter, device)
        predictions, curves = predict_all(predictor, models, settings, temperature)
        label = data["label"].as_tensor()
        spacing = [float(s) for s in data["label"].pixdim[:3]]
        maps = {}
        for method, prediction in predictions.items():
            row, bins, maps[method] = volume_metrics(prediction, label, spacing, settings)
            rows.append({"method": method, "case": case, "domain": domain, **row})
            if domain in reliability[method]:
                reliability[method][domain] += bins
            else:
                reliability[method][domain] = bins
        for curve, points in curves.items():
            for n, prediction in points.items():
                row, _, _ = volume_metrics(prediction, label, spacing, settings, full=False)
                for metric in ("ece", "mean_dice"):
                    curves_out[curve][domain][n][metric].append(row[metric])
        examples[case] = {"domain": domain, "image": entry["image"], **_example_slices(maps, label, "vanilla")}
        shown = " ".join(
            f"{r['method']} {r['mean_dice']:.3f}/{r['ece']:.2f}%"
            for r in rows[-len(predictions) :]
            if r["method"] in ("vanilla", "deep_ensemble", "ckpt_multi")
        )
        print(
            f"  [{number}/{len(test)}] {case} ({domain}) mean Dice/ECE: {shown} | {time.perf_counter() - start:.1f} s",
            flush=True,
        )
    if number == 0 and test:
        raise InputError(
            f"the test split of {datalist} has no case with a usable reference label ({len(messages)} skipped"
            + (f", e.g. {messages[-1]}" if messages else "")
            + "). Evaluation needs labelled volumes; to segment unlabelled images use configs/inference.json."
        )
    return _write_results(
        results_dir, settings, models, temperature, rows, reliability, curves_out, examples, messages, runs
    )


def _choose_examples(rows: Sequence[dict], count: int, failure_dice: float) -> list[tuple[str, str]]:
    """``(case, role)``: the best in-domain volume by mean Dice of the first method that has rows, and the
    ``count`` worst volumes of all domains (the paper's Fig. 3 shows one success and three failures); a volume is
    called a success or a failure by ``failure_dice``, else just the best or a worst one."""
    method = next((m for m in METHODS if any(r["method"] == m for r in rows)), None)
    scored = [
        (r["mean_dice"], r["case"], r["domain"])
        for r in rows
        if r["method"] == method and not math.isnan(r["mean_dice"])
    ]
    if not scored:
        return []
    first_domain = scored[0][2]
    best = max((s for s in scored if s[2] == first_domain), default=max(scored))
    worst = [s for s in sorted(scored) if s[1] != best[1]][:count]
    return [(best[1], "success" if best[0] >= failure_dice else "best")] + [
        (s[1], "failure" if s[0] < failure_dice else "worst") for s in worst
    ]


def _write_results(
    results_dir: Path,
    settings: EvaluationSettings,
    models: Models,
    temperature: float | None,
    rows: list[dict],
    reliability: Mapping[str, Mapping[str, CalibrationBins]],
    curves: Mapping,
    examples: Mapping[str, dict],
    messages: list[str],
    runs: Mapping[str, RunOutcome],
) -> dict[str, Any]:
    results_dir.mkdir(parents=True, exist_ok=True)
    fields = list(dict.fromkeys(k for row in rows for k in row))
    with open(results_dir / "cases.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    chosen = _choose_examples(rows, settings.failed_examples, settings.failure_dice)
    arrays: dict[str, np.ndarray] = {}
    example_info = []
    loader = LoadImage(image_only=True, ensure_channel_first=False)
    for j, (case, role) in enumerate(chosen):
        ex = examples[case]
        image = np.asarray(loader(ex["image"]))
        arrays[f"{j}/image"] = image[..., ex["slice"]].astype(np.float32)
        arrays[f"{j}/label"] = ex["label"]
        for method, maps in ex.items():
            if isinstance(maps, dict):
                for name, value in maps.items():
                    arrays[f"{j}/{method}/{name}"] = value
        dice = {r["method"]: r["mean_dice"] for r in rows if r["case"] == case}
        example_info.append(
            {"case": case, "domain": ex["domain"], "role": role, "slice": ex["slice"], "mean_dice": dice}
        )
    np.savez_compressed(results_dir / "examples.npz", **arrays)
    summary = {
        "settings": asdict(settings),
        "temperature": temperature,
        "methods": {
            key: {"label": label, "members": models.sizes.get(key), "error": models.errors.get(key)}
            for key, label in METHODS.items()
        },
        "domains": list(dict.fromkeys(r["domain"] for r in rows)),
        "reliability": {
            m: {d: {k: v.tolist() for k, v in asdict(b).items()} for d, b in per_domain.items()}
            for m, per_domain in reliability.items()
        },
        "ensemble_size": {
            c: {d: {str(n): v for n, v in per_n.items()} for d, per_n in per_d.items()} for c, per_d in curves.items()
        },
        "examples": example_info,
        "runs": {
            name: {
                "directory": str(o.directory),
                "action": o.action,
                "seconds": round(o.seconds, 1),
                "error": o.error,
                **o.record,
            }
            for name, o in runs.items()
        },
        "messages": messages,
    }
    (results_dir / "summary.json").write_text(json.dumps(summary, indent=1, default=float) + "\n")
    return summary


# ------------------------------------------------------------------------------------------------------ command line


def dataset_problem(datalist: Path) -> str | None:
    """Why ``datalist`` cannot be evaluated (checked before any training), or ``None``."""
    fix = (
        "The evaluation needs a datalist.json with labelled validation and test splits: create one with "
        "`python -m scripts.prepare_data synthetic|acdc|mnms|real --output DIR`. Images without reference labels "
        "cannot be evaluated; segment them with configs/inference.json."
    )
    if not datalist.is_file():
        return f"{datalist} does not exist. {fix}"
    try:
        test = load_datalist(datalist, "test", check_files=False, allow_empty=True)
    except (ValueError, KeyError) as e:
        return f"{e} {fix}"
    if not any(e.get("label") and Path(e["label"]).is_file() for e in test):
        return f"no case of the test split of {datalist} has a reference label file ({len(test)} cases). {fix}"
    return None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m scripts.evaluation", description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset_dir", required=True, type=Path, help="folder with datalist.json (labelled splits)")
    p.add_argument("--work_dir", required=True, type=Path, help="folder of the training runs and the raw results")
    p.add_argument("--report", type=Path, default=None, help="Markdown report to write (figures go to ./figures/)")
    p.add_argument("--paper", action="store_true", help="the paper's setting: configs/full_size.json, no small budget")
    p.add_argument(
        "--config_file",
        nargs="*",
        default=[],
        type=Path,
        help="extra config files merged last over training and evaluation (e.g. a tiny network)",
    )
    p.add_argument("--no_train", action="store_true", help="evaluate the runs that exist; train nothing")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Train what is missing, evaluate, write the report; 0 when every method was evaluated, 1 otherwise."""
    args = _parser().parse_args(argv)
    start = time.perf_counter()
    configs = BUNDLE_ROOT / "configs"
    paper = [configs / "full_size.json"] if args.paper else []
    extra = [f.resolve() for f in args.config_file]
    parser = load_config(
        [configs / "inference.json", configs / "evaluate.json", *paper, *extra], {"bundle_root": str(BUNDLE_ROOT)}
    )
    datalist = args.dataset_dir.resolve() / "datalist.json"
    problem = dataset_problem(datalist)
    if problem is not None:
        print(problem, file=sys.stderr)
        return 2
    settings = EvaluationSettings.from_parser(parser)
    budget = {} if args.paper else dict(parser.get("train_overrides", {}))
    poly = dict(parser.get("poly_schedule"))
    train_files = [configs / "train.json", *paper, *extra]
    print(f"== training runs in {args.work_dir} ({'paper setting' if args.paper else f'budget {budget}'})", flush=True)
    runs = {}
    for run in plan_runs(settings.seed, poly, settings.mc_dropout_p, settings.deep_ensemble_seeds):
        outcome = ensure_trained(
            run, args.work_dir, train_files, budget, args.dataset_dir, BUNDLE_ROOT, not args.no_train
        )
        runs[run.name] = outcome
        print(
            f"  {run.name}: {outcome.action}"
            + (f" in {outcome.seconds / 60:.1f} min" if outcome.seconds else "")
            + (f" -- {outcome.error.splitlines()[0]}" if outcome.error else ""),
            flush=True,
        )
    print("== evaluation", flush=True)
    try:
        summary = evaluate(parser, datalist, runs, args.work_dir.resolve() / "results")
    except InputError as e:
        print(f"evaluation stopped: {e}", file=sys.stderr)
        return 2
    summary["command"] = " ".join(["python -m scripts.evaluation", *(argv if argv is not None else sys.argv[1:])])
    summary["total_seconds"] = round(time.perf_counter() - start, 1)
    (args.work_dir.resolve() / "results" / "summary.json").write_text(
        json.dumps(summary, indent=1, default=float) + "\n"
    )
    for message in summary["messages"]:
        print(f"  note: {message}")
    failed = {k: v["error"] for k, v in summary["methods"].items() if v["error"]}
    for key, error in failed.items():
        print(f"  not evaluated: {METHODS[key]}: {error.splitlines()[0]}", file=sys.stderr)
    if len(failed) == len(METHODS):
        print("no method could be evaluated, so no report is written", file=sys.stderr)
    elif args.report is not None:
        report = write_report(args.work_dir.resolve() / "results", args.report)
        print(f"== report: {report}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
