"""What the posterior checkpoint export costs in training (issue #5: at most 3 % of the training time).

The same training (``configs/train.json`` with the given overrides) runs with the bundle's
``PosteriorCheckpointSaver`` and without it (the handler left out of the trainer), in interleaved rounds, in this
process. Two measures: the difference of the trainers' run times (the issue's "against the same run without it",
noisy on a shared machine; the order alternates between rounds), and the time spent inside the saver's handlers
in the runs with it (exact, and what the difference estimates)::

    python tests/benchmarks/bench_training_overhead.py --dataset_dir runs/performance/data224 --rounds 2
    python tests/benchmarks/bench_training_overhead.py --dataset_dir runs/performance/data224 --rounds 2 \\
        --configs full_size.json --overrides '{"volumes_per_batch": 2, "epoch_length": 4}'
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from common import ROOT, bundle_parser, write_json
from monai.utils import set_determinism

from scripts.posterior_sampling import PosteriorCheckpointSaver


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset_dir", type=Path, required=True)
    parser.add_argument("--configs", nargs="*", default=[], help="override files over train.json")
    parser.add_argument("--overrides", type=json.loads, default={}, help="more overrides, as a JSON object")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--num_cycles", type=int, default=1)
    parser.add_argument("--gamma", type=float, default=0.8, help="0.8: the last 20 %% of the epochs are posterior")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "performance" / "bench_training")
    parser.add_argument("--output", type=Path, default=ROOT / "runs" / "performance" / "bench_training.json")
    return parser.parse_args()


def _timed(method: Callable[..., Any], spent: list[float]) -> Callable[..., Any]:
    @functools.wraps(method)
    def run(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            spent.append(time.perf_counter() - start)

    return run


def train_once(args: argparse.Namespace, export: bool, work: Path) -> dict[str, Any]:
    """One training run; its trainer time, and the time inside the saver's handlers when it runs."""
    shutil.rmtree(work, ignore_errors=True)
    overrides = {"dataset_dir": str(args.dataset_dir), "ckpt_dir": str(work / "models"),
                 "output_dir": str(work / "eval"), "epochs": args.epochs, "num_cycles": args.num_cycles,
                 "gamma": args.gamma, "val_interval": args.epochs + 1, **args.overrides}
    if not export:
        overrides["train#trainer#train_handlers"] = (
            "$[h for h in @train#handlers if type(h).__name__ != 'PosteriorCheckpointSaver']")
    parser = bundle_parser(["train.json", *args.configs], **overrides)
    spent: list[float] = []
    for handler in parser.get_parsed_content("train#handlers"):  # before the trainer attaches them
        if isinstance(handler, PosteriorCheckpointSaver):
            handler.started = _timed(handler.started, spent)
            handler.epoch_completed = _timed(handler.epoch_completed, spent)
    set_determinism(seed=0)
    trainer = parser.get_parsed_content("train#trainer")
    trainer.run()
    samples = len(list((work / "models" / "posterior").glob("epoch_*.pt")))
    return {"trainer_s": trainer.state.times["COMPLETED"], "export_s": sum(spent), "samples": samples,
            "iterations": trainer.state.iteration}


def main() -> None:
    args = _arguments()
    torch.set_num_threads(args.threads)
    runs: dict[str, list[dict[str, Any]]] = {"with_export": [], "without_export": []}
    for r in range(args.rounds):
        for name in list(runs)[:: 1 if r % 2 == 0 else -1]:  # A B, B A, ...: the process warming up favours neither
            result = train_once(args, name == "with_export", args.work / name)
            runs[name].append(result)
            print(f"round {r + 1}/{args.rounds} {name}: {json.dumps(result)}", flush=True)
    with_s = statistics.median(x["trainer_s"] for x in runs["with_export"])
    without_s = statistics.median(x["trainer_s"] for x in runs["without_export"])
    export_s = statistics.median(x["export_s"] for x in runs["with_export"])
    summary = {
        "trainer_with_export_s": with_s,
        "trainer_without_export_s": without_s,
        "overhead_by_difference": (with_s - without_s) / without_s,
        "export_s": export_s,
        "overhead_by_handler_time": export_s / (with_s - export_s),
        "samples": runs["with_export"][0]["samples"],
        "seconds_per_sample": export_s / max(1, runs["with_export"][0]["samples"]),
        "iterations": runs["with_export"][0]["iterations"],
    }
    write_json(args.output, {"configs": args.configs, "overrides": args.overrides, "epochs": args.epochs,
                             "num_cycles": args.num_cycles, "gamma": args.gamma, "runs": runs, "summary": summary})
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
