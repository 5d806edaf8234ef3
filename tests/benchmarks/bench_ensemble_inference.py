"""Time per volume of checkpoint-ensemble inference, as ratios to one checkpoint's pass (issue #5).

One run measures, in interleaved rounds on the same preprocessed volume (10 slices of 224 x 224 at the bundle's
1.5 mm, 2 CPU threads by default):

* ``unit``: one checkpoint, already in memory, through the bundle's slice inferer (all slices in one batch);
* ``naive``: the ensemble of n members loaded from disk one after another (``torch.load`` + ``load_state_dict`` +
  a pass each), softmax averaged;
* ``exact``: the bundle's exact ensemble (``exact_ensemble: true``: every member on every window, weights in memory);
* ``fast``: the bundle's default path (``scripts.fast_ensemble``: heart box after a first pass, members until the
  mean settles) on the configured ensemble;
* ``bundle``: the bundle's whole inference per volume (``configs/inference.json``'s evaluator: read, pre-processing,
  fast ensemble, inversion, entropy, writing), the bank loaded once before;
* ``server``: one request to a MONAI Label server (a separate process on 127.0.0.1) running the app, through
  ``MONAILabelClient`` (read, inference, writing and returning the label, storing the entropy map);
* the ideas one by one, each against its own baseline: slices one at a time instead of batched,
  ``torch.inference_mode``, channels-last, bfloat16 autocast, ``torch.compile``, members batched with
  ``torch.func.vmap``, the box alone, the stopping rule alone, half-precision member weights.

It also measures, each in a fresh process, the peak resident memory of the fast, exact and naive paths, and the
time to load the bank once. Run it (a few minutes per round with the full-size network on 2 cores)::

    python tests/benchmarks/bench_ensemble_inference.py --bank runs/performance/full/models/posterior \\
        --configs full_size.json --rounds 3 --output runs/performance/bench_inference.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from common import ROOT, benchmark_volume, bundle_parser, interleaved, peak_rss_mb, summarise, write_json
from monai.inferers import SliceInferer
from torch.func import functional_call, vmap

from scripts.ensemble import PosteriorEnsemble
from scripts.fast_ensemble import FastEnsembleInferer, spread_order
from scripts.posterior_bank import PosteriorBank

APP = ROOT / "apps" / "cardiac_uncertainty"


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bank", type=Path, required=True, help="a trained bank with at least n checkpoints")
    parser.add_argument("--configs", nargs="*", default=["full_size.json"], help="override files over inference.json")
    parser.add_argument("--n", type=int, default=30)
    parser.add_argument("--mode", default="multi", choices=["single", "multi", "all"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "performance" / "bench_inference")
    parser.add_argument("--output", type=Path, default=ROOT / "runs" / "performance" / "bench_inference.json")
    parser.add_argument("--skip", nargs="*", default=[], help="variants to leave out (e.g. server compiled)")
    parser.add_argument("--memory_child", choices=["fast", "exact", "naive"], help=argparse.SUPPRESS)
    return parser.parse_args()


class Setup:
    """The bundle's pieces for the benchmark, parsed once (the bank loaded once, as a server process does)."""

    def __init__(self, args: argparse.Namespace, image: Path) -> None:
        overrides = {"bank_dir": str(args.bank), "n": args.n, "mode": args.mode}
        self.parser = bundle_parser(["inference.json", *args.configs], input_dir=str(image),
                                    output_dir=str(args.work / "bundle_output"), **overrides)
        self.exact_parser = bundle_parser(["inference.json", *args.configs], exact_ensemble=True, **overrides)
        start = time.perf_counter()
        self.ensemble: PosteriorEnsemble = self.parser.get_parsed_content("network")
        self.bank_load_s = time.perf_counter() - start
        self.device: torch.device = self.parser.get_parsed_content("device")
        self.fast: FastEnsembleInferer = self.parser.get_parsed_content("inferer")
        self.slice_inferer: SliceInferer = self.parser.get_parsed_content("slice_inferer")
        image = self.parser.get_parsed_content("preprocessing")({"image": str(image)})["image"]
        self.x = image[None].to(self.device)
        bank = PosteriorBank(args.bank)
        self.files = [bank.directory / c.file for c in bank.select(args.mode, args.n)]
        self.network = self.new_network()
        self.network.load_state_dict(torch.load(self.files[-1], map_location="cpu", weights_only=True), strict=False)
        self.order = spread_order([c.cycle for c in self.ensemble.checkpoints])

    def exact_ensemble(self) -> PosteriorEnsemble:
        return self.exact_parser.get_parsed_content("network")

    def new_network(self) -> torch.nn.Module:
        """A network of the configured architecture of its own (the ensemble's module is not touched)."""
        return copy.deepcopy(self.parser.get_parsed_content("network_def")).eval().to(self.device)

    def synced(self, run: Callable[[], Any]) -> Callable[[], Any]:
        """``run`` that returns only when the device has finished its work (what a timer must wait for)."""
        if self.device.type != "cuda":
            return run

        def wait() -> Any:
            out = run()
            torch.cuda.synchronize(self.device)
            return out

        return wait


def naive(setup: Setup) -> torch.Tensor:
    """Each checkpoint read from disk and run in turn: what a script without the bundle would do."""
    network = setup.new_network()
    mean = 0.0
    for file in setup.files:
        network.load_state_dict(torch.load(file, map_location="cpu", weights_only=True), strict=False)
        with torch.no_grad():
            mean = mean + torch.softmax(setup.slice_inferer(setup.x, network), 1)
    return mean / len(setup.files)


def variants(setup: Setup, skip: list[str]) -> tuple[dict[str, Callable[[], Any]], dict[str, Any]]:
    """The timed variants, and facts about them (members used, box, compile time)."""
    facts: dict[str, Any] = {}
    x, network, inferer = setup.x, setup.network, setup.slice_inferer

    def no_grad(run: Callable[[], Any]) -> Callable[[], Any]:
        def wrapped() -> Any:
            with torch.no_grad():
                return run()

        return wrapped

    def fast_with(**changes: Any) -> Callable[[], Any]:
        fast = FastEnsembleInferer(inferer, **{
            "crop_margin": setup.fast.crop_margin, "foreground_threshold": setup.fast.foreground_threshold,
            "tolerance": setup.fast.tolerance, "min_members": setup.fast.min_members, **changes})
        return no_grad(lambda: fast(x, setup.ensemble))

    def record_fast() -> None:
        with torch.no_grad():
            setup.fast(x, setup.ensemble)
        run = setup.fast.last_run()
        facts["fast_members"] = len(run.members)
        facts["fast_box"] = None if run.box is None else [[s.start, s.stop] for s in run.box[:2]]

    timed: dict[str, Callable[[], Any]] = {
        "unit": no_grad(lambda: inferer(x, network)),
        "fast": record_fast,
        "bundle": setup.parser.get_parsed_content("evaluator").run,
    }
    if "naive" not in skip:
        timed["naive"] = lambda: naive(setup)
    if "exact" not in skip:
        exact = setup.exact_ensemble()
        timed["exact"] = no_grad(lambda: inferer(x, exact))
    if "ideas" in skip:
        return timed, facts
    one_by_one = SliceInferer(roi_size=inferer.orig_roi_size, sw_batch_size=1, spatial_dim=2, overlap=inferer.overlap,
                              mode=inferer.mode)
    timed["unit_slices_one_by_one"] = no_grad(lambda: one_by_one(x, network))

    def inference_mode() -> None:
        with torch.inference_mode():
            inferer(x, network)

    timed["unit_inference_mode"] = inference_mode
    channels_last = setup.new_network().to(memory_format=torch.channels_last)
    channels_last.load_state_dict(network.state_dict())
    timed["unit_channels_last"] = no_grad(
        lambda: inferer(x, lambda s: channels_last(s.contiguous(memory_format=torch.channels_last))))

    def bfloat16() -> None:
        with torch.no_grad(), torch.autocast(setup.device.type, dtype=torch.bfloat16):
            inferer(x, network)

    timed["unit_bfloat16"] = bfloat16
    if "compiled" not in skip:
        compiled = torch.compile(network)
        start = time.perf_counter()
        with torch.no_grad():
            inferer(x, compiled)
        facts["compile_s"] = time.perf_counter() - start
        timed["unit_compiled"] = no_grad(lambda: inferer(x, compiled))
    members = setup.order[:4]
    stacked = {key: getattr(setup.ensemble, f"member_{j}")[members].float()
               for j, key in enumerate(setup.ensemble.keys)}
    batch = x[0].permute(3, 0, 1, 2)  # (slices, 1, H, W): the volume's slices, as the slice inferer batches them
    timed["members_4_vmap"] = no_grad(
        lambda: vmap(lambda w: torch.softmax(functional_call(setup.ensemble.network, w, (batch,)), 1))(stacked))
    timed["members_4_in_turn"] = no_grad(lambda: [setup.ensemble.member_probabilities(batch, i) for i in members])
    timed["fast_box_only"] = fast_with(tolerance=0.0)
    timed["fast_stop_only"] = fast_with(crop_margin=None)
    if setup.ensemble.member_0.dtype != torch.float32:
        full_precision = setup.exact_ensemble()  # the same members kept in float32
        fast = setup.fast
        timed["fast_float32_weights"] = no_grad(lambda: fast(x, full_precision))
    return timed, facts


class Server:
    """The MONAI Label app serving the bank, as a process on a free loopback port."""

    def __init__(self, args: argparse.Namespace, image: Path, work: Path) -> None:
        shutil.rmtree(work, ignore_errors=True)
        app = shutil.copytree(APP, work / "app", ignore=shutil.ignore_patterns("__pycache__", "logs", "model", "bin"))
        studies = work / "studies"
        studies.mkdir()
        shutil.copy(image, studies / image.name)
        self.image_id = image.name.removesuffix(".nii.gz")
        overrides = work / "bank.json"
        overrides.write_text(json.dumps({"bank_dir": str(args.bank.resolve()), "n": args.n, "mode": args.mode}))
        configs = [str(Path(c) if Path(c).is_file() else ROOT / "bundle" / "configs" / c) for c in args.configs]
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MONAI_LABEL_SESSION_PATH": str(work / "sessions"),
               "MONAI_LABEL_AUTO_UPDATE_SCORING": "false"}
        cmd = [sys.executable, "-m", "monailabel.main", "start_server", "--app", str(app), "--studies", str(studies),
               "--conf", "bundle_path", str(ROOT / "bundle"), "--conf", "bundle_overrides",
               ",".join([*configs, str(overrides)]), "--conf", "model_dir", str(work / "model"),
               "--host", "127.0.0.1", "--port", str(port)]
        self.log = open(work / "server.log", "wb")  # noqa: SIM115 - open for the server's lifetime
        self.process = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                        start_new_session=True)
        from monailabel.client import MONAILabelClient

        self.client = MONAILabelClient(self.url, tmpdir=str(work / "client"))
        (work / "client").mkdir()
        deadline = time.monotonic() + 300
        while True:
            try:
                self.client.info()
                break
            except Exception:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the server did not start; see {work / 'server.log'}") from None
                time.sleep(1)

    def infer(self) -> dict[str, Any]:
        label, params = self.client.infer("segmentation_uncertainty", self.image_id, {})
        Path(label).unlink(missing_ok=True)
        return params

    def stop(self) -> None:
        os.killpg(self.process.pid, 15)
        self.process.wait(timeout=30)
        self.log.close()


def memory_child(args: argparse.Namespace, image: Path) -> None:
    """In a fresh process: the peak resident memory of one path on the volume, bank loading included."""
    torch.set_num_threads(args.threads)
    setup_parser = bundle_parser(["inference.json", *args.configs], bank_dir=str(args.bank), n=args.n, mode=args.mode,
                                 exact_ensemble=args.memory_child == "exact")
    x = setup_parser.get_parsed_content("preprocessing")({"image": str(image)})["image"][None]
    baseline = peak_rss_mb()
    with torch.no_grad():
        if args.memory_child == "naive":
            device = setup_parser.get_parsed_content("device")
            network = setup_parser.get_parsed_content("network_def").eval().to(device)
            inferer = setup_parser.get_parsed_content("slice_inferer")
            x = x.to(device)
            bank = PosteriorBank(args.bank)
            for c in bank.select(args.mode, args.n):
                network.load_state_dict(torch.load(bank.directory / c.file, weights_only=True), strict=False)
                inferer(x, network)
        else:
            ensemble = setup_parser.get_parsed_content("network")
            setup_parser.get_parsed_content("inferer")(x.to(setup_parser.get_parsed_content("device")), ensemble)
    memory = {"peak_rss_mb": peak_rss_mb(), "before_bank_mb": baseline}
    if torch.cuda.is_available():
        memory["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(memory))


def measure_memory(args: argparse.Namespace, path: str) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--bank", str(args.bank), "--configs", *args.configs, "--n", str(args.n),
           "--mode", args.mode, "--threads", str(args.threads), "--work", str(args.work), "--memory_child", path]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=3600)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    args = _arguments()
    image, _ = benchmark_volume(args.work)
    if args.memory_child:
        memory_child(args, image)
        return
    torch.set_num_threads(args.threads)
    setup = Setup(args, image)
    print(f"bank loaded in {setup.bank_load_s:.1f} s: {setup.ensemble.num_members} members "
          f"({setup.ensemble.member_0.dtype}), input {tuple(setup.x.shape)}")
    timed, facts = variants(setup, args.skip)
    timed = {name: setup.synced(run) for name, run in timed.items()}
    server = None
    if "server" not in args.skip:
        server = Server(args, image, Path(tempfile.mkdtemp(prefix="bench_server_")))
        start = time.perf_counter()
        facts["server_members"] = len(server.infer()["checkpoints"])
        facts["server_first_request_s"] = time.perf_counter() - start
        timed["server"] = server.infer
    for run in timed.values():  # warm-up: allocator, oneDNN kernels, the server's first request
        run()
    try:
        seconds = interleaved(timed, args.rounds)
    finally:
        if server is not None:
            server.stop()
    memory = {path: measure_memory(args, path) for path in ("fast", "exact", "naive") if path not in args.skip}
    results = {
        "volume": list(setup.x.shape), "threads": args.threads, "configs": args.configs, "bank": str(args.bank),
        "members": setup.ensemble.num_members, "weights_dtype": str(setup.ensemble.member_0.dtype),
        "bank_load_s": setup.bank_load_s, "seconds": seconds, "summary": summarise(seconds, "unit"),
        "facts": facts, "memory": memory,
    }
    write_json(args.output, results)
    for name, row in results["summary"].items():
        print(f"{name:28s} {row['median_s']:8.2f} s  x{row['ratio']:6.2f} of one checkpoint")
    print(json.dumps({"facts": facts, "memory": memory}, indent=1))


if __name__ == "__main__":
    main()
