"""The report of the comparison: the paper's tables, failure detection, cost and a discussion, with the figures of
:mod:`scripts.evaluation_figures`, all computed from the evaluation's results folder (``cases.csv``,
``summary.json``, ``examples.npz``).

    python -m scripts.evaluation_report --results runs/evaluation/synthetic/results --report docs/results.md

re-renders the report without evaluating again. Figures go to ``<report folder>/figures/<report name>_*.png``.
Every number in the text is computed here from the results; nothing is written by hand.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from scipy.stats import wilcoxon

from scripts.evaluation_figures import (
    plot_ensemble_size,
    plot_examples,
    plot_reliability,
    plot_risk_coverage,
    plot_trajectory,
)
from scripts.evaluation_results import STRUCTURES, Results, domain_name
from scripts.failure_detection import aurc, failure_auroc

__all__ = ["write_report"]

PAPER_METHODS = ("vanilla", "ts_fitted", "swa", "mc_dropout", "deep_ensemble", "ckpt_single", "ckpt_multi")
BASELINES = ("vanilla", "ts_fixed", "ts_fitted", "swa", "mc_dropout")
DECIMALS = {"ece": 2, "mean_dice": 3}  # the precision of the tables, also used to call one value lower


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
    header = ["Method", *[f"{domain_name(d)} {s}" if s else domain_name(d) for d, s in columns]]
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
        f"{domain_name(d)} {fmt.format(results.mean(a, metric, d))} vs {fmt.format(results.mean(b, metric, d))}"
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
            f"{domain_name(d)}: {results.label(r[0])} ({ece(r[0], d):.2f}%), "
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
        + ", ".join(f"{n} volumes in {domain_name(d)}" for d, n in n_volumes.items())
        + ". Differences in ECE of a few tenths of a percent are within the spread between volumes; the paired "
        "counts and Wilcoxon p-values above say which ones are consistent across volumes. The data are synthetic and "
        "the training budget is the one listed under Setting, far below the paper's 1200 epochs of 250 iterations: "
        "its posterior samples lie close together (a few iterations apart), which limits what the checkpoint "
        "ensembles can gain over one model, and the runs of the other methods are as short."
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
        + ", ".join(f"{domain_name(d)} {n}" for d, n in counts.items())
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
        f"* Ensemble size n = {settings['n']} (`evaluate.json`'s `n` unless overridden; reduced to what a bank holds): "
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
