"""Command line that prepares a dataset and writes its ``datalist.json``.

Run from the bundle folder (``cd bundle && python -m scripts.prepare_data ...``) or anywhere with
``PYTHONPATH=bundle``::

    python -m scripts.prepare_data synthetic --output data/synthetic --preview docs/figures/synthetic_domains.png
    python -m scripts.prepare_data acdc --acdc_dir /data/ACDC/database --output data/acdc
    python -m scripts.prepare_data mnms --mnms_dir "/data/M&Ms/OpenDataset" --output data/mnms --vendors A B
    python -m scripts.prepare_data real --acdc_dir /data/ACDC/database --mnms_dir "/data/M&Ms/OpenDataset" \
        --output data/real

``real`` is the paper's setting: ACDC for training, validation and in-domain test, M&Ms vendors for the
shifted test. ``--preview`` draws a mid-ventricular slice of one subject per domain with its label contours.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from scripts.datalist import LABEL_NAMES, SPLITS, load_datalist, write_datalist
from scripts.real_data import acdc_datalist, extract_mnms
from scripts.synthetic import DOMAINS, Difficulty, generate_synthetic_dataset

LABEL_COLOURS = {1: "tab:blue", 2: "tab:green", 3: "tab:red"}


def plot_preview(datalist: str | Path, png: str | Path) -> Path:
    """Save a figure with one column per domain: a mid-ventricular slice at ED (plain and with label
    contours) and at ES (with contours), taken from the first subject of each domain in the datalist."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    entries = [e for split in SPLITS for e in load_datalist(datalist, split, allow_empty=True)]
    subjects: dict[str, dict[str, dict[str, str]]] = {}
    for e in entries:
        first = subjects.setdefault(e["domain"], {})
        if not first or next(iter(first.values()))["subject"] == e["subject"]:
            first[e["phase"]] = e
    fig, axes = plt.subplots(3, len(subjects), figsize=(3.2 * len(subjects), 9.6), squeeze=False)
    for column, (domain, phases) in enumerate(subjects.items()):
        ed = nib.load(phases["ED"]["label"]).get_fdata()
        lv_slices = np.flatnonzero((ed == 3).any(axis=(0, 1)))
        k = int(lv_slices[len(lv_slices) // 2]) if len(lv_slices) else ed.shape[2] // 2
        spacing = nib.load(phases["ED"]["image"]).header.get_zooms()[:3]
        for row, (phase, contours) in enumerate((("ED", False), ("ED", True), ("ES", True))):
            ax = axes[row, column]
            ax.axis("off")
            if phase not in phases:
                continue
            image = nib.load(phases[phase]["image"]).get_fdata()[:, :, k]
            low, high = np.percentile(image, [0.5, 99.5])
            ax.imshow(image, cmap="gray", vmin=low, vmax=high, interpolation="nearest")
            if contours:
                label = nib.load(phases[phase]["label"]).get_fdata()[:, :, k]
                for value, colour in LABEL_COLOURS.items():
                    if (label == value).any():
                        ax.contour(label == value, levels=[0.5], colors=colour, linewidths=0.8)
            title = f"{domain}\n{spacing[0]:.2f} mm, slice {k + 1}/{ed.shape[2]}, {phase}"
            ax.set_title(title if row == 0 else f"{phase} with labels", fontsize=9)
    handles = [Line2D([], [], color=c, label=LABEL_NAMES[v]) for v, c in LABEL_COLOURS.items()]
    fig.legend(handles=handles, loc="lower center", ncol=3, frameon=False)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def parse_difficulty(settings: Sequence[str]) -> Difficulty:
    """A :class:`~scripts.synthetic.Difficulty` from ``KEY=VALUE`` strings, e.g. ``annotator_jitter_px=0.5``."""
    types = {f.name: f.type for f in dataclasses.fields(Difficulty)}
    values: dict[str, object] = {}
    for setting in settings:
        key, _, value = setting.partition("=")
        if key not in types or not value:
            raise SystemExit(f"--difficulty takes KEY=VALUE with KEY one of {sorted(types)}; got {setting!r}.")
        kind = {"float": float, "int": int, "bool": lambda v: v.lower() in ("1", "true", "yes")}[types[key]]
        values[key] = kind(value)
    return Difficulty(**values)


def summarise(datalist: Path) -> str:
    """One line per split: number of frames per domain."""
    lines = [f"wrote {datalist}"]
    for split in SPLITS:
        counts = Counter(e["domain"] for e in load_datalist(datalist, split, allow_empty=True))
        per_domain = ", ".join(f"{d}: {n}" for d, n in counts.items())
        lines.append(f"  {split:<10} {sum(counts.values()):4d} frames  {per_domain}")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m scripts.prepare_data", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--output", required=True, type=Path, help="folder for datalist.json (and extracted files)")
        sub.add_argument("--preview", type=Path, help="also save a PNG of one mid-ventricular slice per domain")
        return sub

    synthetic = add("synthetic", "generate the synthetic dataset (in-domain and shifted vendor styles)")
    synthetic.add_argument("--n_train", type=int, default=24, help="training subjects (2 frames each)")
    synthetic.add_argument("--n_val", type=int, default=6, help="validation subjects")
    synthetic.add_argument("--n_test", type=int, default=8, help="test subjects per domain")
    synthetic.add_argument("--shifted_domains", nargs="*", default=["vendor_b", "vendor_c"],
                           choices=[d for d in DOMAINS if d != "in_domain"])
    synthetic.add_argument("--matrix", type=int, default=128, help="in-plane matrix size")
    synthetic.add_argument("--seed", type=int, default=0)
    synthetic.add_argument("--difficulty", nargs="*", default=[], metavar="KEY=VALUE",
                           help="override fields of scripts.synthetic.Difficulty, e.g. annotator_jitter_px=0.5")
    for name, help_text in (
        ("acdc", "ACDC split by subject into training/validation/test"),
        ("real", "ACDC (training/validation/test) plus M&Ms vendors (test), the paper's setting"),
    ):
        sub = add(name, help_text)
        sub.add_argument("--acdc_dir", required=True, type=Path, help="folder containing ACDC's training/ (testing/)")
        sub.add_argument("--fractions", nargs=3, type=float, default=[0.7, 0.1, 0.2],
                         metavar=("TRAIN", "VAL", "TEST"), help="fractions of ACDC subjects per split")
        sub.add_argument("--seed", type=int, default=0, help="seed of the subject split")
        if name == "real":
            sub.add_argument("--mnms_dir", required=True, type=Path, help="folder of the unpacked M&Ms OpenDataset")
            sub.add_argument("--vendors", nargs="+", default=["A", "B"], help="M&Ms vendors to test on (A B C D)")
    mnms = add("mnms", "extract the ED/ES frames of M&Ms subjects (test split, labels remapped)")
    mnms.add_argument("--mnms_dir", required=True, type=Path, help="folder of the unpacked M&Ms OpenDataset")
    mnms.add_argument("--vendors", nargs="+", default=["A", "B"], help="M&Ms vendors to keep (A B C D)")
    return parser


def main(argv: Sequence[str] | None = None) -> Path:
    """Run the command line; return the path of the datalist written."""
    args = _parser().parse_args(argv)
    start = time.perf_counter()
    output = args.output.resolve()
    if args.command == "synthetic":
        datalist = generate_synthetic_dataset(
            output, args.n_train, args.n_val, args.n_test, args.shifted_domains, args.matrix, args.seed,
            parse_difficulty(args.difficulty),
        )
    else:
        splits: dict[str, list] = {split: [] for split in SPLITS}
        if args.command in ("acdc", "real"):
            splits = acdc_datalist(args.acdc_dir, args.fractions, args.seed)
        if args.command in ("mnms", "real"):
            splits["test"] += extract_mnms(args.mnms_dir, output / "mnms", args.vendors)
        datalist = write_datalist(output / "datalist.json", splits, f"prepare_data {args.command}")
    print(summarise(datalist))
    print(f"  in {time.perf_counter() - start:.1f} s")
    if args.preview:
        print(f"preview: {plot_preview(datalist, args.preview)}")
    return datalist


if __name__ == "__main__":
    main()
