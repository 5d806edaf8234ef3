"""Record the absolute GPU figures of issue #5 into ``docs/performance.md``, on a machine with a CUDA GPU.

It runs, from the repository root, with a Python that has a CUDA build of torch and the project's other
dependencies (``pip install -e .`` without the CPU torch pin):

1. a small synthetic dataset at a realistic field of view (224 x 224 at 1.2 to 1.8 mm), if missing;
2. training time per epoch of the paper's setting (``configs/full_size.json``: the 20.6 M-parameter 2D nnU-Net,
   250 iterations of 20 slices per epoch), with and without the posterior checkpoint export
   (``bench_training_overhead.py``);
3. a 30-checkpoint bank of the full-size network, trained briefly (60 epochs of 8 iterations, 3 cycles, the
   last half of each cycle posterior), so that the fast path meets a heart and members that disagree as trained
   members do;
4. time per volume for n = 30 (one checkpoint, naive, exact, the bundle's fast path, the whole bundle pipeline and
   the MONAI Label server) and the memory, with ``bench_ensemble_inference.py``;

then writes the figures between the ``gpu-figures`` markers of ``docs/performance.md``. About 10 minutes on one
recent GPU. ``--smoke`` runs every step on whatever device there is with the tiny test configuration (a check of
the script itself, not figures)::

    python tests/benchmarks/gpu_figures.py              # on the GPU machine
    python tests/benchmarks/gpu_figures.py --smoke      # anywhere, a minute or two
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
DOC = ROOT / "docs" / "performance.md"
START, END = "<!-- gpu-figures:start -->", "<!-- gpu-figures:end -->"
TINY = ROOT / "tests" / "bundle" / "tiny.json"


def _run(cmd: list[str], cwd: Path = ROOT) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=cwd, check=True)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "gpu_figures")
    parser.add_argument("--smoke", action="store_true", help="tiny configuration on any device: checks the script")
    parser.add_argument("--doc", type=Path, default=DOC)
    return parser.parse_args()


def main() -> None:
    args = _arguments()
    if not args.smoke and not torch.cuda.is_available():
        sys.exit("no CUDA device: these are the GPU figures (use --smoke to check the script on a CPU).")
    work = args.work.resolve()
    data = work / "data"
    python = sys.executable
    if not (data / "datalist.json").is_file():
        sizes = ["--n_train", "4", "--n_val", "1", "--n_test", "1", "--matrix", "64" if args.smoke else "224"]
        _run([python, "-m", "scripts.prepare_data", "synthetic", "--output", str(data), *sizes], cwd=ROOT / "bundle")
    configs = [str(TINY)] if args.smoke else ["full_size.json"]
    paper = {} if args.smoke else {"volumes_per_batch": 5, "slices_per_volume": 4, "epoch_length": 250,
                                   "num_workers": 8}
    _run([python, str(HERE / "bench_training_overhead.py"), "--dataset_dir", str(data), "--configs", *configs,
          "--overrides", json.dumps(paper), "--epochs", "2" if args.smoke else "3", "--gamma", "0.5",
          "--rounds", "1", "--work", str(work / "training"), "--output", str(work / "training.json")])

    bank = work / "bank"
    if not (bank / "models" / "posterior" / "manifest.json").is_file():
        schedule = ["--epochs", "8", "--num_cycles", "2", "--gamma", "0.5"] if args.smoke else [
            "--epochs", "60", "--num_cycles", "3", "--gamma", "0.5", "--epoch_length", "8", "--num_workers", "8"]
        files = str([str(ROOT / "bundle" / "configs" / "train.json"),
                     *[c if Path(c).is_file() else str(ROOT / "bundle" / "configs" / c) for c in configs]])
        _run([python, "-m", "monai.bundle", "run", "--config_file", files, "--bundle_root", str(ROOT / "bundle"),
              "--dataset_dir", str(data), "--ckpt_dir", str(bank / "models"), "--output_dir", str(bank / "eval"),
              "--val_interval", "1000", *schedule], cwd=ROOT / "bundle")
    n = ["--n", "4", "--mode", "all"] if args.smoke else ["--n", "30", "--mode", "multi"]
    _run([python, str(HERE / "bench_ensemble_inference.py"), "--bank", str(bank / "models" / "posterior"),
          "--configs", *configs, *n, "--rounds", "1" if args.smoke else "3", "--skip", "compiled",
          "--work", str(work / "inference"), "--output", str(work / "inference.json")])
    write_doc(args.doc, json.loads((work / "training.json").read_text()),
              json.loads((work / "inference.json").read_text()), args.smoke)


def write_doc(doc: Path, training: dict[str, Any], inference: dict[str, Any], smoke: bool) -> None:
    """Replace the text between the markers of ``doc`` with the figures."""
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    summary, facts, memory = inference["summary"], inference["facts"], inference["memory"]
    t = training["summary"]
    rows = [("one checkpoint (unit)", "unit"), ("naive, 30 checkpoints read from disk", "naive"),
            ("exact ensemble (bundle, exact_ensemble: true)", "exact"), ("fast ensemble (bundle default)", "fast"),
            ("bundle inference, whole pipeline per volume", "bundle"), ("MONAI Label server, one request", "server")]
    lines = [
        START,
        f"Recorded {datetime.date.today().isoformat()} on {device} (torch {torch.__version__})"
        + (" -- SMOKE RUN, tiny configuration: not figures" if smoke else "") + ".",
        "",
        f"Time per volume ({inference['volume'][-1]} slices of {inference['volume'][2]} x {inference['volume'][3]}, "
        f"n = {inference['members']}):",
        "",
        "| path | seconds | x one checkpoint |",
        "|---|---|---|",
        *[f"| {label} | {summary[key]['median_s']:.3f} | {summary[key]['ratio']:.2f} |" for label, key in rows
          if key in summary],
        "",
        f"Fast path: {facts.get('fast_members')} members, box {facts.get('fast_box')}; bank loaded once in "
        f"{inference['bank_load_s']:.1f} s. Peak GPU memory: "
        + ", ".join(f"{k} {v.get('peak_cuda_mb', float('nan')):.0f} MB" for k, v in memory.items()) + ".",
        "",
        f"Training, per epoch of {t['iterations'] // training['epochs']} iterations: "
        f"{t['trainer_with_export_s'] / training['epochs']:.1f} s with the posterior export, "
        f"{t['trainer_without_export_s'] / training['epochs']:.1f} s without; the export took {t['export_s']:.2f} s "
        f"for {t['samples']} samples ({100 * t['overhead_by_handler_time']:.2f} % of the training time).",
        END,
    ]
    text = doc.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{doc} has no {START} ... {END} section to fill.")
    before, rest = text.split(START, 1)
    doc.write_text(before + "\n".join(lines) + rest.split(END, 1)[1])
    print(f"figures written to {doc}")


if __name__ == "__main__":
    main()
