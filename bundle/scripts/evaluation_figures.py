"""The report's figures: reliability diagrams, Dice and ECE against the ensemble size, risk-coverage curves, the
paper's Fig. 3 (image, prediction and uncertainty of each method on a success and on failures) and its Fig. 2 (the
weights' trajectory across the cycles). Each function draws from a :class:`~scripts.evaluation_results.Results`
and writes one PNG."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.cm import ScalarMappable  # noqa: E402
from matplotlib.colors import ListedColormap, Normalize  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.manifold import TSNE  # noqa: E402

from scripts.calibration import CalibrationBins  # noqa: E402
from scripts.evaluation_results import Results, domain_name  # noqa: E402
from scripts.failure_detection import aurc, risk_coverage  # noqa: E402
from scripts.schedule import posterior_epochs  # noqa: E402
from scripts.weight_trajectory import load_trajectory  # noqa: E402

__all__ = ["plot_ensemble_size", "plot_examples", "plot_reliability", "plot_risk_coverage", "plot_trajectory"]

LABEL_COLOURS = ListedColormap(["none", "tab:blue", "tab:green", "tab:red"])


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
                ax.set_ylabel(f"{domain_name(domain)}\naccuracy", fontsize=7)
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
                ax.set_title(domain_name(domain))
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
        ax.set_title(
            f"{info['role']}: {info['case']}\n{domain_name(info['domain'])}, slice {info['slice']}", fontsize=6
        )
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
