"""Accuracy of the fast ensemble path and of a half-precision bank against the exact n-member ensemble (issue #5).

For every test volume of a datalist, the exact ensemble (every member on the whole image, float32 weights) is the
reference; each variant is run through the bundle's own pieces (``configs/inference.json``: pre-processing, slice
inferer, ``FastEnsembleInferer``, inversion to the input geometry) and scored as the evaluation scores methods:
Dice of RV, MYO and LV per volume, and the paper's top-label ECE (100 bins, in the foreground box) per volume.
Reported: the mean Dice and mean ECE of each variant, their differences to the exact ensemble (the issue's bounds:
|dDice| <= 0.005, |dECE| <= 5 % relative), the members used and the box's share of the image::

    python tests/benchmarks/bench_fast_ensemble_accuracy.py --bank runs/performance/small/models/posterior \\
        --datalist runs/performance/data224/datalist.json --output runs/performance/bench_accuracy.json
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from common import ROOT, bundle_parser, write_json
from monai.data import MetaTensor
from monai.metrics import compute_dice
from monai.networks.utils import one_hot
from monai.transforms import LoadImage

from scripts.calibration import volume_calibration
from scripts.datalist import load_datalist
from scripts.ensemble import PosteriorEnsemble
from scripts.fast_ensemble import FastEnsembleInferer

BOUNDS = {"dice_abs": 0.005, "ece_rel": 0.05}


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bank", type=Path, required=True)
    parser.add_argument("--datalist", type=Path, required=True, help="datalist.json with a labelled test split")
    parser.add_argument("--configs", nargs="*", default=[], help="override files over inference.json")
    parser.add_argument("--n", type=int, default=30)
    parser.add_argument("--mode", default="multi", choices=["single", "multi", "all"])
    parser.add_argument("--limit", type=int, help="only the first volumes of the test split")
    parser.add_argument("--per_domain", type=int, help="only the first volumes of each domain of the test split")
    parser.add_argument("--tolerances", nargs="*", type=float, default=[],
                        help="more stopping tolerances to report besides the configured one")
    parser.add_argument("--skip", nargs="*", default=[], help="variants to leave out (e.g. fast_box_only when the "
                        "configured tolerance is 0 and it is the fast path itself)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=ROOT / "runs" / "performance" / "bench_accuracy.json")
    return parser.parse_args()


def score(probabilities: torch.Tensor, label: torch.Tensor) -> dict[str, float]:
    """Dice per structure and the paper's ECE (%) of one volume, (C, *spatial) against (1, *spatial)."""
    segmentation = probabilities.argmax(0)
    label = label.reshape(segmentation.shape).long()
    classes = probabilities.shape[0]
    dice = compute_dice(one_hot(segmentation[None, None], classes), one_hot(label[None, None], classes),
                        include_background=False, ignore_empty=True)[0].tolist()
    return {"dice": dice, "ece": 100.0 * volume_calibration(probabilities, label).ece()}


def aggregate(rows: list[dict[str, Any]]) -> dict[str, float]:
    dice = [d for r in rows for d in r["dice"] if not math.isnan(d)]
    return {"mean_dice": statistics.fmean(dice), "mean_ece": statistics.fmean(r["ece"] for r in rows)}


def main() -> None:
    args = _arguments()
    torch.set_num_threads(args.threads)
    overrides = {"bank_dir": str(args.bank), "n": args.n, "mode": args.mode}
    parser = bundle_parser(["inference.json", *args.configs], **overrides)
    preprocessing = parser.get_parsed_content("preprocessing")
    inverter = parser.get_parsed_content("postprocessing#transforms#0")
    slice_inferer = parser.get_parsed_content("slice_inferer")
    configured: FastEnsembleInferer = parser.get_parsed_content("inferer")
    configured_ensemble: PosteriorEnsemble = parser.get_parsed_content("network")
    exact = bundle_parser(["inference.json", *args.configs], ensemble_weights_dtype="float32", **overrides
                          ).get_parsed_content("network")
    half = bundle_parser(["inference.json", *args.configs], ensemble_weights_dtype="float16", **overrides
                         ).get_parsed_content("network")

    def fast(**changes: Any) -> FastEnsembleInferer:
        settings = {"crop_margin": configured.crop_margin, "foreground_threshold": configured.foreground_threshold,
                    "tolerance": configured.tolerance, "min_members": configured.min_members}
        return FastEnsembleInferer(slice_inferer, **{**settings, **changes})

    variants: dict[str, tuple[Callable[..., Any], PosteriorEnsemble]] = {
        "exact": (slice_inferer, exact),
        "half_precision_bank": (slice_inferer, half),
        "fast": (configured, configured_ensemble),
        "fast_box_only": (fast(tolerance=0.0), configured_ensemble),
        "fast_stop_only": (fast(crop_margin=None), configured_ensemble),
    }
    for tolerance in args.tolerances:
        variants[f"fast_tolerance_{tolerance:g}"] = (fast(tolerance=tolerance), configured_ensemble)
    variants = {name: v for name, v in variants.items() if name not in args.skip}

    cases = load_datalist(args.datalist, "test")[: args.limit]
    if args.per_domain:
        domains = [c.get("domain", "") for c in cases]
        cases = [c for i, c in enumerate(cases) if domains[: i + 1].count(domains[i]) <= args.per_domain]
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    for k, case in enumerate(cases):
        data = preprocessing({"image": case["image"]})
        label = torch.as_tensor(LoadImage(image_only=True)(case["label"]))
        for name, (inferer, ensemble) in variants.items():
            start = time.perf_counter()
            with torch.no_grad():
                probabilities = inferer(data["image"][None], ensemble)[0]
            seconds = time.perf_counter() - start
            inverted = inverter({"image": data["image"], "pred": MetaTensor(probabilities)})["pred"]
            row = {"case": Path(case["image"]).name, "domain": case.get("domain", ""), "seconds": seconds,
                   **score(torch.as_tensor(inverted), label)}
            if isinstance(inferer, FastEnsembleInferer) and inferer.last_run() is not None:
                run = inferer.last_run()
                row["members"] = len(run.members)
                shape = data["image"].shape[1:3]
                row["box_fraction"] = 1.0 if run.box is None else math.prod(
                    (s.stop - s.start) / n for s, n in zip(run.box[:2], shape, strict=True))
            rows[name].append(row)
        print(f"{k + 1}/{len(cases)} {rows['exact'][-1]['case']}: " + ", ".join(
            f"{name} ece {r[-1]['ece']:.2f} members {r[-1].get('members', '-')}" for name, r in rows.items()),
            flush=True)

    reference = aggregate(rows["exact"])
    summary = {}
    for name, variant_rows in rows.items():
        result = aggregate(variant_rows)
        result["dice_delta"] = result["mean_dice"] - reference["mean_dice"]
        result["ece_delta_rel"] = (result["mean_ece"] - reference["mean_ece"]) / reference["mean_ece"]
        result["within_bounds"] = (abs(result["dice_delta"]) <= BOUNDS["dice_abs"]
                                   and abs(result["ece_delta_rel"]) <= BOUNDS["ece_rel"])
        result["max_volume_dice_delta"] = max(
            abs(statistics.fmean(d for d in v["dice"] if not math.isnan(d))
                - statistics.fmean(d for d in e["dice"] if not math.isnan(d)))
            for v, e in zip(variant_rows, rows["exact"], strict=True))
        result["seconds_ratio_to_exact"] = (statistics.fmean(r["seconds"] for r in variant_rows)
                                            / statistics.fmean(r["seconds"] for r in rows["exact"]))
        if "members" in variant_rows[0]:
            result["mean_members"] = statistics.fmean(r["members"] for r in variant_rows)
            result["max_members"] = max(r["members"] for r in variant_rows)
            result["mean_box_fraction"] = statistics.fmean(r["box_fraction"] for r in variant_rows)
        for domain in sorted({r["domain"] for r in variant_rows}):
            part, ref = [r for r in variant_rows if r["domain"] == domain], [
                r for r in rows["exact"] if r["domain"] == domain]
            a, b = aggregate(part), aggregate(ref)
            result[f"domain_{domain}"] = {**a, "dice_delta": a["mean_dice"] - b["mean_dice"],
                                          "ece_delta_rel": (a["mean_ece"] - b["mean_ece"]) / b["mean_ece"]}
        summary[name] = result
    write_json(args.output, {"bank": str(args.bank), "configs": args.configs, "n": args.n, "mode": args.mode,
                             "volumes": len(cases), "bounds": BOUNDS, "summary": summary, "rows": rows})
    for name, result in summary.items():
        print(f"{name:24s} Dice {result['mean_dice']:.4f} ({result['dice_delta']:+.4f})  "
              f"ECE {result['mean_ece']:.3f} % "
              f"({100 * result['ece_delta_rel']:+.1f} %)  members {result.get('mean_members', args.n):.1f}  "
              f"time x{result['seconds_ratio_to_exact']:.2f} of exact  {'ok' if result['within_bounds'] else 'OUT'}")


if __name__ == "__main__":
    main()
