"""The report of the comparison: the paper's tables, failure detection, figures, cost and a discussion, all
computed from the evaluation's results folder (``cases.csv``, ``summary.json``, ``examples.npz``).

    python -m scripts.evaluation_report --results runs/evaluation/synthetic/results --report docs/results.md

re-renders the report without evaluating again. Figures go to ``<report folder>/figures/<report name>_*.png``.
Every number in the text is computed here from the results; nothing is written by hand.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.cm import ScalarMappable  # noqa: E402
from matplotlib.colors import ListedColormap, Normalize  # noqa: E402
from scipy.stats import wilcoxon  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.manifold import TSNE  # noqa: E402

from scripts.calibration import CalibrationBins  # noqa: E402
from scripts.failure_detection import aurc, failure_auroc, risk_coverage  # noqa: E402
from scripts.schedule import posterior_epochs  # noqa: E402
from scripts.weight_trajectory import load_trajectory  # noqa: E402

__all__ = ["write_report"]

STRUCTURES = ("RV", "MYO", "LV")
PAPER_METHODS = ("vanilla", "ts_fitted", "swa", "mc_dropout", "deep_ensemble", "ckpt_single", "ckpt_multi")
BASELINES = ("vanilla", "ts_fixed", "ts_fitted", "swa", "mc_dropout")
DOMAIN_NAMES = {
    "in_domain": "In-domain (ID)",
    "vendor_b": "Vendor B (OOD)",
    "vendor_c": "Vendor C (OOD)",
    "acdc": "ACDC (ID)",
    "mnms_vendor_A": "M&Ms vendor A (OOD)",
    "mnms_vendor_B": "M&Ms vendor B (OOD)",
    "mnms_vendor_C": "M&Ms vendor C (OOD)",
    "mnms_vendor_D": "M&Ms vendor D (OOD)",
}
DECIMALS = {"ece": 2, "mean_dice": 3}  # the precision of the tables, also used to call one value lower
LABEL_COLOURS = ListedColormap(["none", "tab:blue", "tab:green", "tab:red"])


class Results:
    """The evaluation's results folder, read once, with the lookups the tables need."""

    def __init__(self, results_dir: str | Path) -> None:
        self.dir = Path(results_dir)
        self.summary = json.loads((self.dir / "summary.json").read_text())
        with open(self.dir / "cases.csv") as f:
            self.rows = [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(f)]
        self.domains: list[str] = self.summary["domains"]
        self.methods = [m for m in self.summary["methods"] if any(r["method"] == m for r in self.rows)]
        self.settings = self.summary["settings"]

    def label(self, method: str) -> str:
        info = self.summary["methods"][method]
        label = info["label"]
        if method == "ts_fixed":
            label = f"Temp. scaling (τ = {self.settings['fixed_temperature']:g})"
        elif method == "ts_fitted" and self.summary.get("temperature"):
            label = f"Temp. scaling (τ fitted = {self.summary['temperature']:.2f})"
        elif method.startswith(("ckpt", "deep")) and info.get("members"):
            label = (
                f"{label[:-1]}, n = {info['members']})" if label.endswith(")") else f"{label} (n = {info['members']})"
            )
        return label

    def values(self, method: str, metric: str, domain: str | None = None) -> np.ndarray:
        return np.array(
            [r[metric] for r in self.rows if r["method"] == method and (domain is None or r["domain"] == domain)],
            dtype=float,
        )

    def mean(self, method: str, metric: str, domain: str | None = None) -> float:
        v = self.values(method, metric, domain)
        v = v[np.isfinite(v)]
        return float(v.mean()) if v.size else math.nan


def _number(value: str) -> Any:
    """CSV cells back to numbers; an empty cell (a metric a method does not have) is NaN."""
    if value == "":
        return math.nan
    try:
        return float(value)
    except ValueError:
        return value


def _domain(name: str) -> str:
    return DOMAIN_NAMES.get(name, name)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _bold_best(cells: dict[str, tuple[float, str]], best: Callable, digits: int) -> dict[str, str]:
    """Bold the best cell(s) of a column, comparing the values at the precision they are shown with."""
    finite = [round(v, digits) for v, _ in cells.values() if math.isfinite(v)]
    if not finite:
        return {m: text for m, (_, text) in cells.items()}
    target = best(finite)
    return {
        m: f"**{text}**" if math.isfinite(v) and round(v, digits) == target else text for m, (v, text) in cells.items()
    }


def _metric_table(
    results: Results,
    methods: Sequence[str],
    metric: str,
    fmt: Callable[[np.ndarray], tuple[float, str]],
    best: Callable,
    digits: int,
    per_structure: bool,
) -> str:
    columns = [(d, s) for d in results.domains for s in (STRUCTURES if per_structure else (None,))]
    header = ["Method", *[f"{_domain(d)} {s}" if s else _domain(d) for d, s in columns]]
    body = {m: [] for m in methods}
    for d, s in columns:
        key = f"{metric}_{s}" if s else metric
        cells = _bold_best({m: fmt(results.values(m, key, d)) for m in methods}, best, digits)
        for m in methods:
            body[m].append(cells[m])
    return _table(header, [[results.label(m), *body[m]] for m in methods])


def _mean_sd(values: np.ndarray, digits: int = 3) -> tuple[float, str]:
    finite = values[np.isfinite(values)]
    if not finite.size:
        return math.nan, "n/a"
    missing = values.size - finite.size
    text = f"{finite.mean():.{digits}f} ± {finite.std():.{digits}f}" + (f" ({missing} n/a)" if missing else "")
    return float(finite.mean()), text


def _mean_only(values: np.ndarray) -> tuple[float, str]:
    finite = values[np.isfinite(values)]
    return (float(finite.mean()), f"{finite.mean():.2f}") if finite.size else (math.nan, "n/a")


# ------------------------------------------------------------------------------------------------------- figures


def plot_reliability(results: Results, path: Path, merge: int = 5) -> Path:
    """Reliability diagrams (accuracy against confidence of the pooled foreground-box voxels) per method and
    domain; the 100 bins of the ECE are merged ``merge`` at a time for legibility."""
    methods = [m for m in results.methods if not m.endswith("_Tc")]
    fig, axes = plt.subplots(
        len(results.domains),
        len(methods),
        figsize=(2.1 * len(methods), 2.2 * len(results.domains)),
        squeeze=False,
        sharex=True,
        sharey=True,
    )
    for i, domain in enumerate(results.domains):
        for j, method in enumerate(methods):
            ax = axes[i, j]
            raw = results.summary["reliability"][method][domain]
            pooled = CalibrationBins(
                *(torch.tensor(raw[k], dtype=torch.float64) for k in ("count", "confidence_sum", "correct_sum"))
            )
            coarse = pooled.coarsen(merge)
            centres = (np.arange(coarse.n_bins) + 0.5) / coarse.n_bins
            accuracy, confidence = coarse.accuracy().numpy(), coarse.mean_confidence().numpy()
            ok = coarse.count.numpy() > 0
            ax.bar(centres[ok], accuracy[ok], width=1 / coarse.n_bins, color="tab:blue", edgecolor="white", lw=0.3)
            gap = confidence - accuracy
            ax.bar(
                centres[ok],
                np.abs(gap)[ok],
                bottom=np.minimum(accuracy, confidence)[ok],
                width=1 / coarse.n_bins,
                facecolor="none",
                edgecolor="tab:red",
                hatch="////",
                lw=0,
            )
            ax.plot([0, 1], [0, 1], "k--", lw=0.8)
            ax.text(0.04, 0.9, f"pooled ECE {100 * pooled.ece():.2f}%", fontsize=7, transform=ax.transAxes)
            ax.set_xlim(0.2, 1)
            ax.set_ylim(0, 1)
            if i == 0:
                ax.set_title(results.label(method), fontsize=7)
            if j == 0:
                ax.set_ylabel(f"{_domain(domain)}\naccuracy", fontsize=7)
            if i == len(results.domains) - 1:
                ax.set_xlabel("confidence", fontsize=7)
            ax.tick_params(labelsize=6)
    fig.suptitle(
        "Reliability of the top-label confidence, voxels in the foreground boxes pooled per domain "
        "(blue: accuracy, hatched red: gap to the bin's mean confidence)",
        fontsize=8,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def plot_ensemble_size(results: Results, path: Path) -> Path:
    """ECE and mean Dice of the checkpoint ensembles and the deep ensemble against their number of members."""
    styles = {
        "ckpt_single": ("Ckpt. ens. single (T)", "tab:orange", "-"),
        "ckpt_multi": ("Ckpt. ens. multi (T)", "tab:red", "-"),
        "ckpt_single_Tc": ("Ckpt. ens. single (Tc)", "tab:orange", ":"),
        "ckpt_multi_Tc": ("Ckpt. ens. multi (Tc)", "tab:red", ":"),
        "deep_ensemble": ("Deep ensemble", "tab:purple", "-"),
    }
    curves = results.summary["ensemble_size"]
    fig, axes = plt.subplots(2, len(results.domains), figsize=(3.6 * len(results.domains), 5.6), squeeze=False)
    for j, domain in enumerate(results.domains):
        for i, metric in enumerate(("ece", "mean_dice")):
            ax = axes[i, j]
            for curve, (label, colour, line) in styles.items():
                if curve not in curves or domain not in curves[curve]:
                    continue
                points = sorted((int(n), v[metric]) for n, v in curves[curve][domain].items())
                n = [p[0] for p in points]
                mean = [np.nanmean(p[1]) for p in points]
                ax.plot(n, mean, line, color=colour, marker="o", ms=3, label=label)
            if "vanilla" in results.methods:
                ax.axhline(results.mean("vanilla", metric, domain), color="grey", lw=0.8, ls="--", label="Vanilla")
            ax.set_xlabel("members n")
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.set_ylabel("ECE (%)" if metric == "ece" else "mean Dice (RV, MYO, LV)")
            if i == 0:
                ax.set_title(_domain(domain))
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def plot_risk_coverage(results: Results, methods: Sequence[str], path: Path) -> Path:
    """Risk (1 - mean Dice) of the most certain volumes against the fraction kept, all test volumes pooled."""
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for method in methods:
        u, dice = results.values(method, "uncertainty"), results.values(method, "mean_dice")
        ok = np.isfinite(u) & np.isfinite(dice)
        coverage, risk = risk_coverage(u[ok], 1 - dice[ok])
        ax.plot(coverage, risk, label=f"{results.label(method)} (AURC {aurc(u[ok], 1 - dice[ok]):.3f})")
    ax.set_xlabel("coverage (fraction of volumes kept, most certain first)")
    ax.set_ylabel("risk (mean 1 - Dice of the kept volumes)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def _crop(label: np.ndarray, margin: float = 0.35) -> tuple[slice, slice]:
    """A square around the reference heart, ``margin`` of its size added on every side."""
    if not (label > 0).any():
        return slice(None), slice(None)
    rows, cols = np.nonzero(label > 0)
    extent = max(rows.ptp(), cols.ptp())
    size = int(extent * (0.5 + margin)) + 4
    rc, cc = (rows.min() + rows.max()) // 2, (cols.min() + cols.max()) // 2
    return slice(max(rc - size, 0), rc + size + 1), slice(max(cc - size, 0), cc + size + 1)


def plot_examples(results: Results, methods: Sequence[str], path: Path, vmax: float = 1.0) -> Path | None:
    """Fig. 3 of the paper: per example volume (the best in-domain one and the worst ones), the image with the
    reference, and per method the prediction, the entropy map and (ensembles) the mutual-information map."""
    examples = results.summary["examples"]
    if not examples:
        return None
    arrays = np.load(results.dir / "examples.npz")
    rows_per = 3
    fig, axes = plt.subplots(
        rows_per * len(examples),
        len(methods) + 1,
        figsize=(1.55 * (len(methods) + 1), 1.6 * rows_per * len(examples)),
        squeeze=False,
    )
    for e, info in enumerate(examples):
        label = arrays[f"{e}/label"]
        image = arrays[f"{e}/image"]
        crop = _crop(label)
        top = rows_per * e
        ax = axes[top, 0]
        ax.imshow(image[crop], cmap="gray")
        ax.imshow(label[crop], cmap=LABEL_COLOURS, vmin=0, vmax=3, alpha=0.45, interpolation="nearest")
        ax.set_title(f"{info['role']}: {info['case']}\n{_domain(info['domain'])}, slice {info['slice']}", fontsize=6)
        axes[top + 1, 0].imshow(image[crop], cmap="gray")
        axes[top + 1, 0].set_title("image", fontsize=6)
        axes[top + 2, 0].axis("off")
        for j, method in enumerate(methods, start=1):
            key = f"{e}/{method}"
            if f"{key}/segmentation" not in arrays:
                for r in range(rows_per):
                    axes[top + r, j].axis("off")
                continue
            seg = arrays[f"{key}/segmentation"]
            ax = axes[top, j]
            ax.imshow(image[crop], cmap="gray")
            ax.imshow(seg[crop], cmap=LABEL_COLOURS, vmin=0, vmax=3, alpha=0.45, interpolation="nearest")
            dice = info["mean_dice"].get(method, math.nan)
            ax.set_title(f"{results.label(method)}\nDice {dice:.3f}", fontsize=5.5)
            error = (seg != label)[crop]
            for r, name in ((1, "entropy"), (2, "mutual_information")):
                ax = axes[top + r, j]
                if f"{key}/{name}" not in arrays:
                    ax.axis("off")
                    continue
                ax.imshow(arrays[f"{key}/{name}"][crop].astype(np.float32), cmap="inferno", vmin=0, vmax=vmax)
                ax.contour(error, levels=[0.5], colors="cyan", linewidths=0.4)
                ax.set_title("entropy" if name == "entropy" else "mutual information", fontsize=5.5)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(
        f"Prediction (RV blue, MYO green, LV red), entropy and mutual information (bits, 0 to {vmax:g}, "
        "brighter = more uncertain); cyan: contour of the voxels the prediction gets wrong",
        fontsize=7,
    )
    fig.tight_layout(rect=(0, 0, 0.95, 0.985))
    fig.colorbar(ScalarMappable(Normalize(0, vmax), "inferno"), cax=fig.add_axes((0.96, 0.35, 0.01, 0.3)), label="bits")
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path


def plot_trajectory(results: Results, path: Path) -> tuple[Path, str] | None:
    """Fig. 2 of the paper: the recorded layer's weights after every epoch of the cyclic run, projected on their
    first two principal components (a), and a t-SNE embedding of the posterior samples (b)."""
    run = results.summary["runs"].get("cyclic", {})
    if not run.get("directory"):
        return None
    try:
        epochs, weights, parameter = load_trajectory(Path(run["directory"]) / "trajectory")
    except FileNotFoundError:
        return None
    manifest = json.loads((Path(run["directory"]) / "posterior" / "manifest.json").read_text())
    total, cycles, gamma = manifest["total_epochs"], manifest["num_cycles"], manifest["gamma"]
    posterior = {t: c for c, cycle in enumerate(posterior_epochs(total, cycles, gamma)) for t in cycle}
    cycle_of = epochs // (total // cycles)
    colours = plt.get_cmap("tab10")
    xy = PCA(n_components=2).fit(weights)
    points = xy.transform(weights)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4))
    ax = axes[0]
    ax.plot(points[:, 0], points[:, 1], color="lightgrey", lw=0.8, zorder=1)
    for c in range(cycles):
        sel = cycle_of == c
        ax.scatter(points[sel, 0], points[sel, 1], s=8, color=colours(c), label=f"cycle {c + 1}", zorder=2)
        post = np.array([t in posterior for t in epochs]) & sel
        ax.scatter(points[post, 0], points[post, 1], s=30, facecolors="none", edgecolors=colours(c), zorder=3)
    ax.annotate("start", points[0], fontsize=7)
    ax.set_title(
        f"(a) all {len(epochs)} epochs, PCA ({100 * xy.explained_variance_ratio_[:2].sum():.0f}% of variance);"
        "\nrings: posterior samples",
        fontsize=8,
    )
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.legend(fontsize=7)
    post_index = np.array([i for i, t in enumerate(epochs) if t in posterior])
    ax = axes[1]
    if post_index.size >= 6:
        perplexity = min(30.0, (post_index.size - 1) / 3)
        embedded = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=0).fit_transform(
            weights[post_index]
        )
        for c in range(cycles):
            sel = cycle_of[post_index] == c
            ax.scatter(embedded[sel, 0], embedded[sel, 1], s=14, color=colours(c), label=f"cycle {c + 1}")
        ax.set_title(f"(b) t-SNE of the {post_index.size} posterior samples", fontsize=8)
        ax.legend(fontsize=7)
    else:
        ax.axis("off")
        ax.text(
            0.5,
            0.5,
            f"(b) only {post_index.size} posterior samples:\ntoo few for a t-SNE embedding",
            ha="center",
            va="center",
            fontsize=8,
        )
    fig.suptitle(f"Weights of {parameter} ({weights.shape[1]} values) during cyclic training", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path, parameter


# ----------------------------------------------------------------------------------------------------- the text


def _failure_table(results: Results, methods: Sequence[str]) -> str:
    threshold = results.settings["failure_dice"]
    rows = []
    for m in methods:
        dice, u, mi, ueo = (results.values(m, k) for k in ("mean_dice", "uncertainty", "mutual_information", "overlap"))
        ok = np.isfinite(dice) & np.isfinite(u)
        risk = 1 - dice[ok]
        failed = int((dice[ok] < threshold).sum())
        mi_ok = ok & np.isfinite(mi)
        rows.append(
            [
                results.label(m),
                f"{aurc(u[ok], risk):.4f}",
                f"{aurc(mi[mi_ok], 1 - dice[mi_ok]):.4f}" if mi_ok.sum() == ok.sum() and ok.any() else "—",
                f"{aurc(risk, risk):.4f}",
                _auroc_text(failure_auroc(u[ok], dice[ok], threshold), failed, int(ok.sum())),
                f"{np.nanmean(ueo):.3f}",
            ]
        )
    header = [
        "Method",
        "AURC ↓ (entropy score)",
        "AURC ↓ (MI score)",
        "AURC of an oracle ranking",
        f"AUROC ↑ (flag Dice < {threshold:g})",
        f"UEO Dice ↑ (entropy > {results.settings['overlap_threshold']:g} bit)",
    ]
    return _table(header, rows)


def _auroc_text(value: float, failed: int, total: int) -> str:
    if math.isnan(value):
        return f"n/a ({failed} of {total} volumes below the threshold)"
    return f"{value:.3f} ({failed} of {total} failed)"


def _cost_table(results: Results, methods: Sequence[str]) -> str:
    runs = results.summary["runs"]

    def train_minutes(names: Sequence[str]) -> str:
        seconds = [runs.get(n, {}).get("train_seconds") for n in names]
        if any(s is None for s in seconds):
            return "n/a"
        resumed = any(runs[n].get("resumed") for n in names)
        return f"{'≥ ' if resumed else ''}{sum(seconds) / 60:.1f}"

    seeds = results.settings["deep_ensemble_seeds"]
    sources = {
        "mc_dropout": ["mc_dropout"],
        "deep_ensemble": [f"deep_ensemble_seed{s}" for s in seeds],
        "ckpt_single_Tc": ["cyclic_Tc"],
        "ckpt_multi_Tc": ["cyclic_Tc"],
    }
    rows = []
    for m in methods:
        names = sources.get(m, ["cyclic"])
        passes = results.values(m, "forward_passes")
        seconds = results.values(m, "seconds")
        rows.append(
            [
                results.label(m),
                str(len(names)),
                train_minutes(names),
                f"{np.nanmean(passes):g}",
                f"{np.nanmean(seconds):.2f}",
            ]
        )
    header = [
        "Method",
        "training runs",
        "training time (min, measured)",
        "forward passes per volume",
        "inference time per volume (s, measured)",
    ]
    return _table(header, rows)


def _paired(results: Results, a: str, b: str, metric: str) -> tuple[int, int, float]:
    """``a`` against ``b`` on the same volumes: in how many ``a`` is lower, of how many, and the paired Wilcoxon
    p-value (NaN when it cannot be computed)."""
    va, vb = results.values(a, metric), results.values(b, metric)
    ok = np.isfinite(va) & np.isfinite(vb)
    va, vb = va[ok].round(DECIMALS[metric] + 2), vb[ok].round(DECIMALS[metric] + 2)  # float noise is no difference
    p = float(wilcoxon(va, vb).pvalue) if va.size > 1 and np.any(va != vb) else math.nan
    return int((va < vb).sum()), int(va.size), p


def _compare(results: Results, a: str, b: str, metric: str) -> str:
    lower, total, p = _paired(results, a, b, metric)
    return f"{lower} of {total} volumes, paired Wilcoxon p = {p:.2g}"


def _pairs(results: Results, a: str, b: str, metric: str, domains: Sequence[str], fmt: str) -> str:
    """``domain a-value vs b-value`` for each domain, e.g. ``Vendor B (OOD) 2.10% vs 2.50%``."""
    return ", ".join(
        f"{_domain(d)} {fmt.format(results.mean(a, metric, d))} vs {fmt.format(results.mean(b, metric, d))}"
        for d in domains
    )


def _pooled_aurc(results: Results, method: str) -> tuple[float, float]:
    """AURC of the volume entropy score against 1 - mean Dice over all test volumes, and the AURC of an oracle
    that ranks the same volumes by their true risk."""
    u, dice = results.values(method, "uncertainty"), results.values(method, "mean_dice")
    ok = np.isfinite(u) & np.isfinite(dice)
    risk = 1 - dice[ok]
    return aurc(u[ok], risk), aurc(risk, risk)


def _discussion(results: Results) -> list[str]:
    """The paper's claims, each checked against these results, with the numbers."""
    have = set(results.methods)
    domains, ood = results.domains, results.domains[1:]
    text = []

    def ece(m: str, d: str) -> float:
        return results.mean(m, "ece", d)

    def wins(a: str, b: str, ds: Sequence[str], metric: str = "ece") -> list[str]:
        """The domains where ``a``'s mean is lower than ``b``'s at the precision the tables show."""
        digits = DECIMALS[metric]
        return [d for d in ds if round(results.mean(a, metric, d), digits) < round(results.mean(b, metric, d), digits)]

    ranking = {d: sorted((m for m in have if not m.endswith("_Tc")), key=lambda m: ece(m, d)) for d in domains}
    text.append(
        "**Which method is best calibrated.** "
        + "; ".join(
            f"{_domain(d)}: {results.label(r[0])} ({ece(r[0], d):.2f}%), "
            f"then {results.label(r[1])} ({ece(r[1], d):.2f}%)"
            for d, r in ranking.items()
            if len(r) > 1
        )
        + "."
    )
    for ens in ("ckpt_single", "ckpt_multi"):
        if ens not in have:
            continue
        beaten = {b: wins(ens, b, domains) for b in BASELINES if b in have}
        parts = [f"{results.label(b)} in {len(w)} of {len(domains)} domains" for b, w in beaten.items()]
        won = sum(map(len, beaten.values()))
        verdict = "holds" if won == len(domains) * len(beaten) else "does not hold" if won == 0 else "holds in part"
        text.append(
            f"**Paper: {results.label(ens)} is better calibrated than the single-model baselines and MC-Dropout** — "
            f"{verdict} here: lower ECE than "
            + ", ".join(parts)
            + (
                f"; against Vanilla over all test volumes: lower in {_compare(results, ens, 'vanilla', 'ece')}."
                if "vanilla" in have
                else "."
            )
        )
        if "deep_ensemble" in have:
            w = wins(ens, "deep_ensemble", domains)
            text.append(
                f"**Paper: {results.label(ens)} is at least as well calibrated as the deep ensemble** (which costs "
                f"{len(results.settings['deep_ensemble_seeds'])} trainings) — lower ECE in {len(w)} of {len(domains)} "
                f"domains ({_pairs(results, ens, 'deep_ensemble', 'ece', domains, '{:.2f}%')}); "
                f"per volume: lower in {_compare(results, ens, 'deep_ensemble', 'ece')}."
            )
    if {"vanilla", "ts_fixed"} <= have:
        w = wins("ts_fixed", "vanilla", domains)
        text.append(
            f"**Paper: temperature scaling (τ = {results.settings['fixed_temperature']:g}) improves on "
            f"Vanilla slightly** — lower ECE in {len(w)} of {len(domains)} domains"
            + (
                f"; the temperature fitted on the validation split is {results.summary['temperature']:.2f}, "
                f"with lower ECE than Vanilla in {len(wins('ts_fitted', 'vanilla', domains))} of {len(domains)} "
                "domains."
                if "ts_fitted" in have
                else "."
            )
        )
    if {"vanilla", "mc_dropout"} <= have:
        w = wins("mc_dropout", "vanilla", domains, "mean_dice")
        text.append(
            f"**Paper: MC-Dropout lowers Dice slightly** — mean Dice below Vanilla's in {len(w)} of "
            f"{len(domains)} domains ({_pairs(results, 'mc_dropout', 'vanilla', 'mean_dice', domains, '{:.3f}')})."
        )
    if {"ckpt_single", "ckpt_multi"} <= have and ood:
        w = wins("ckpt_multi", "ckpt_single", ood)
        text.append(
            f"**Paper: the multi-modal ensemble is better calibrated than the single-modal one out of domain** "
            f"— lower ECE in {len(w)} of {len(ood)} shifted domains "
            f"({_pairs(results, 'ckpt_multi', 'ckpt_single', 'ece', ood, '{:.2f}%')})."
        )
    for mode in ("single", "multi"):
        t, tc = f"ckpt_{mode}", f"ckpt_{mode}_Tc"
        if {t, tc} <= have:
            mean_t = np.mean([ece(t, d) for d in domains])
            mean_tc = np.mean([ece(tc, d) for d in domains])
            lower, total, p = _paired(results, t, tc, "ece")
            better = "T (Eq. 4 as printed)" if mean_t < mean_tc else "Tc (per cycle)"
            verdict = f"{better} calibrates better here" if p < 0.05 else "neither form is consistently better here"
            text.append(
                f"**Denominator of Eq. 4, {mode}-modal ensemble:** mean ECE over the domains {mean_t:.2f}% with "
                f"T, {mean_tc:.2f}% with Tc; per volume, T is lower in {lower} of {total} volumes (paired Wilcoxon "
                f"p = {p:.2g}), so {verdict}."
            )
    scored = [m for m in have if not m.endswith("_Tc")]
    if scored:
        aurcs = {m: _pooled_aurc(results, m) for m in scored}
        best = min(scored, key=lambda m: aurcs[m][0])
        best_ranking = min(scored, key=lambda m: aurcs[m][0] - aurcs[m][1])
        text.append(
            f"**Failure detection (beyond the paper):** the lowest AURC of the volume entropy score is "
            f"{results.label(best)}'s ({aurcs[best][0]:.4f}); AURC also rewards better segmentations, and the "
            f"lowest excess over an oracle ranking of the same volumes (the quality of the ranking alone) is "
            f"{results.label(best_ranking)}'s ({aurcs[best_ranking][0] - aurcs[best_ranking][1]:.4f})."
        )
    n_volumes = {d: int(results.values(results.methods[0], "ece", d).size) for d in domains}
    text.append(
        "**How far to trust this.** "
        + ", ".join(f"{n} volumes in {_domain(d)}" for d, n in n_volumes.items())
        + ". Differences in ECE of a few tenths of a percent are within the spread between volumes; the paired "
        "counts and Wilcoxon p-values above say which ones are consistent across volumes. The data are synthetic and "
        "the training budget is the one listed under Setting: a short budget leaves few posterior samples per cycle, "
        "which limits what the checkpoint ensembles can gain."
    )
    return text


def write_report(results_dir: str | Path, report_path: str | Path) -> Path:
    """Write the Markdown report and its figures from an evaluation's results folder; return the report path."""
    results = Results(results_dir)
    report_path = Path(report_path).resolve()
    figures = report_path.parent / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    stem = report_path.stem
    summary, settings = results.summary, results.settings
    paper = [m for m in PAPER_METHODS if m in results.methods]
    rows_all = [m for m in summary["methods"] if m in results.methods]
    dice_rows = [m for m in rows_all if not m.startswith("ts_")]

    def rel(p: Path) -> str:
        return p.relative_to(report_path.parent).as_posix()

    out = ["# Results: checkpoint ensembles against the baselines", ""]
    out.append(
        f"Written by `scripts/evaluation_report.py` on {datetime.date.today().isoformat()} from `{results.dir}` "
        f"(per-volume values: `cases.csv`). Command: `{summary.get('command', 'python -m scripts.evaluation')}`"
        + (f", {summary['total_seconds'] / 60:.1f} min in all." if summary.get("total_seconds") else ".")
    )
    out += ["", "## Setting", ""]
    counts = {d: int(results.values(rows_all[0], "ece", d).size) for d in results.domains}
    out.append(
        "* Test volumes: "
        + ", ".join(f"{_domain(d)} {n}" for d, n in counts.items())
        + ". The validation split is used only to fit the temperature; the in-domain test split plays the role "
        "of the paper's ACDC validation column."
    )
    runs = summary["runs"]
    out.append(
        "* Training runs: `configs/train.json`"
        + (
            " with `configs/full_size.json`"
            if any("full_size" in f for r in runs.values() for f in r.get("config_files", []))
            else ""
        )
        + " and these overrides, each in its own folder:"
    )
    out += [
        "",
        _table(
            ["run", "overrides", "this evaluation", "training time (min)"],
            [
                [
                    f"`{name}`",
                    f"`{json.dumps(r.get('overrides', {}))}`",
                    r["action"] + (f": {r['error'].splitlines()[0]}" if r.get("error") else ""),
                    f"{r['train_seconds'] / 60:.1f}" if r.get("train_seconds") is not None else "n/a",
                ]
                for name, r in runs.items()
            ],
        ),
        "",
    ]
    out.append(
        f"* Ensemble size n = {settings['n']} (from `inference.json`, reduced to what a bank holds): "
        + ", ".join(f"{results.label(m)}" for m in rows_all if m.startswith(("ckpt", "deep")))
        + ". "
        f"MC-Dropout: p = {settings['mc_dropout_p']:g}, {settings['mc_dropout_samples']} passes with only the "
        "dropout modules in training mode. SWA: equal-weight average of the last cycle's posterior checkpoints "
        "(`torch.optim.swa_utils.AveragedModel`); the network uses instance normalisation, which keeps no "
        "running statistics, so no batch-norm update is needed."
    )
    out.append(
        f"* ECE: {settings['ece_bins']} equal-width bins of the top-label confidence, voxels inside the bounding "
        "box of the foreground of reference and prediction, per volume, then averaged (the paper's definition)."
    )
    failed_methods = {m: v["error"] for m, v in summary["methods"].items() if v.get("error")}
    if failed_methods or summary["messages"]:
        out += ["", "**Not evaluated / skipped:**", ""]
        out += [
            f"* {v['label']}: {err.splitlines()[0]}" for m, v in summary["methods"].items() if (err := v.get("error"))
        ]
        out += [f"* {msg}" for msg in summary["messages"]]

    out += ["", "## Table 1: Dice per structure (mean ± sd over volumes)", ""]
    out.append(_metric_table(results, dice_rows, "dice", _mean_sd, max, 3, per_structure=True))
    ts_gap = max(
        (
            abs(results.mean(t, "mean_dice", d) - results.mean("vanilla", "mean_dice", d))
            for t in ("ts_fixed", "ts_fitted")
            if t in results.methods and "vanilla" in results.methods
            for d in results.domains
        ),
        default=math.nan,
    )
    out += [
        "",
        "Temperature scaling divides the logits by one positive number, which leaves the argmax, and so the "
        "segmentation, of Vanilla unchanged in the network's grid; it is left out here as in the paper (after "
        f"resampling to the image grid its mean Dice differs from Vanilla's by at most {ts_gap:.4f}).",
        "",
    ]
    out += ["### HD95 (mm, mean ± sd; n/a where a structure is missing from the prediction or the reference)", ""]
    out.append(_metric_table(results, dice_rows, "hd95", lambda v: _mean_sd(v, 2), min, 2, per_structure=True))
    out += ["", "## Table 2: ECE (%)", ""]
    out.append(_metric_table(results, rows_all, "ece", _mean_only, min, 2, per_structure=False))
    reliability = plot_reliability(results, figures / f"{stem}_reliability.png")
    out += [
        "",
        f"![Reliability diagrams]({rel(reliability)})",
        "",
        "The diagrams pool the voxels of all volumes of a domain (20 bins of the 100 merged five at a time), so "
        "their ECE is that of the pooled voxels, not Table 2's mean of per-volume ECEs.",
        "",
    ]
    sizes = plot_ensemble_size(results, figures / f"{stem}_ensemble_size.png")
    out += [
        "## ECE and Dice against the number of members",
        "",
        f"![ECE and Dice against n]({rel(sizes)})",
        "",
        "Single-modal: the last n checkpoints of the last cycle; multi-modal: the last n / M of each of the M cycles; "
        "deep ensemble: the first n of its seeds. The dashed grey line is Vanilla.",
        "",
    ]
    out += [
        "## Failure detection (beyond the paper)",
        "",
        "Per volume, the uncertainty score is the mean entropy (bits) inside the bounding box of the predicted heart "
        "(for ensembles also the mean mutual information); the risk is 1 - mean Dice. All test volumes pooled.",
        "",
    ]
    out.append(_failure_table(results, rows_all))
    rc = plot_risk_coverage(results, paper, figures / f"{stem}_risk_coverage.png")
    out += ["", f"![Risk-coverage curves]({rel(rc)})", ""]
    examples = plot_examples(results, paper, figures / f"{stem}_examples.png")
    if examples is not None:
        out += [
            "## Predictions and uncertainty maps (like the paper's Fig. 3)",
            "",
            f"![Examples]({rel(examples)})",
            "",
            "Rows per volume: prediction, entropy (total uncertainty), mutual information (the epistemic part, "
            "only for methods with several members). Volumes: the in-domain test volume with the best Vanilla "
            "Dice, then the test volumes with the worst; the slice is the one where Vanilla errs most.",
            "",
        ]
    trajectory = plot_trajectory(results, figures / f"{stem}_weight_trajectory.png")
    if trajectory is not None:
        out += [
            "## Weight trajectory across the cycles (like the paper's Fig. 2)",
            "",
            f"![Weight trajectory]({rel(trajectory[0])})",
            "",
            f"The weights of `{trajectory[1]}` (the last decoder convolution) recorded after every epoch of the "
            "`cyclic` run (`record_trajectory` in `train.json`). PCA keeps global distances (the moves between "
            "modes); t-SNE shows the local structure of the posterior samples. The paper plots t-SNE of its last "
            "decoder layer.",
            "",
        ]
    out += [
        "## Cost",
        "",
        _cost_table(results, rows_all),
        "",
        "A forward pass is one pass of the network over all slices of a volume. Inference times are measured in "
        "this evaluation on this machine, per volume, network passes only; training times are those of the runs "
        "(reused runs keep the time of the session that trained them; ≥ marks a run resumed after an "
        "interruption, whose earlier part is not counted).",
        "",
    ]
    out += ["## Discussion", ""]
    out += [f"* {line}" for line in _discussion(results)]
    report_path.write_text("\n".join(out) + "\n")
    return report_path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m scripts.evaluation_report", description=__doc__.split("\n\n")[0])
    p.add_argument("--results", required=True, type=Path, help="the evaluation's results folder")
    p.add_argument("--report", required=True, type=Path, help="Markdown file to write")
    return p


if __name__ == "__main__":
    args = _parser().parse_args()
    print(write_report(args.results, args.report))
