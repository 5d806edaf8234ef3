"""Real parts for the MONAI Label app tests: a tiny trained bundle, MONAI Label servers as processes, Orthanc.

Every server is a process started here on 127.0.0.1 with a free port and stopped at teardown by killing its process
group (the server's training and scoring sub-processes go with it). Orthanc and Chromium come from Debian through the
project's own setup (``python3 dev.py system``); under ``CI=true`` they are installed when missing, elsewhere the
tests that need them are skipped with the command that enables them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
import requests
from bundle_runs import TINY, copy_bundle
from monailabel.client import MONAILabelClient

from scripts.dicom_series import write_mr_series

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "apps" / "cardiac_uncertainty"
for path in (ROOT, APP):  # dev.py, and the app's own package ``lib`` for the tests of its parts
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
import dev  # noqa: E402  (the project's setup: the same install function as `python3 dev.py system`)

DCMQI_BIN = next(Path(p) / "dcmqi" / "bin" for p in sys.path if (Path(p) / "dcmqi" / "bin").is_dir())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Process:
    """A started server: its process (leader of its own process group) and the file that holds its output."""

    process: subprocess.Popen
    log: Path

    @classmethod
    def start(cls, cmd: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> Process:
        with open(log, "wb") as out:
            process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                       start_new_session=True)
        return cls(process, log)

    def tail(self, chars: int = 6000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def wait_http(self, url: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.process.args[0]} exited ({self.process.returncode}):\n{self.tail()}")
            try:
                if requests.get(url, timeout=5).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.3)
        self.stop()
        raise TimeoutError(f"{url} did not answer within {timeout} s:\n{self.tail()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        try:  # children left behind by a leader that exited first (a training or scoring sub-process)
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@dataclass
class LabelServer:
    """A MONAI Label server running the app; ``model_dir`` holds the banks it stages and publishes."""

    url: str
    process: Process
    model_dir: Path

    def client(self, tmp: Path) -> MONAILabelClient:
        return MONAILabelClient(self.url, tmpdir=str(tmp))


@pytest.fixture(scope="session")
def start_label_server(tmp_path_factory) -> Iterator[Callable[..., LabelServer]]:
    """Start the app on ``studies`` (a folder, or a DICOMweb URL) serving ``bundle`` with the tiny overrides."""
    started: list[Process] = []

    def start(studies: str | Path, bundle: Path, env: dict[str, str] | None = None, timeout: float = 180
              ) -> LabelServer:
        work = tmp_path_factory.mktemp("label_server")
        app = shutil.copytree(APP, work / "app", ignore=shutil.ignore_patterns("__pycache__", "logs", "model", "bin"))
        port = free_port()
        environment = {
            **os.environ,
            "PATH": os.pathsep.join([str(DCMQI_BIN), os.environ.get("PATH", "")]),
            "OMP_NUM_THREADS": "2",
            "MONAI_LABEL_SESSION_PATH": str(work / "sessions"),
            # scoring runs when a test asks for it, not in a background process racing with the test's requests
            "MONAI_LABEL_AUTO_UPDATE_SCORING": "false",
            **(env or {}),
        }
        cmd = [sys.executable, "-m", "monailabel.main", "start_server", "--app", str(app), "--studies", str(studies),
               "--conf", "bundle_path", str(bundle), "--conf", "bundle_overrides", str(TINY),
               "--conf", "model_dir", str(work / "model"), "--host", "127.0.0.1", "--port", str(port)]
        process = Process.start(cmd, work / "server.log", env=environment, cwd=work)
        started.append(process)
        url = f"http://127.0.0.1:{port}"
        process.wait_http(f"{url}/info/", timeout)
        return LabelServer(url, process, work / "model")

    yield start
    for process in started:
        process.stop()


@dataclass
class Studies:
    """A local datastore folder of the tiny dataset's test images, and each image's reference label."""

    folder: Path
    references: dict[str, Path]


def make_studies(datalist: Path, folder: Path) -> Studies:
    folder.mkdir(parents=True)
    references = {}
    for case in json.loads(datalist.read_text())["test"]:
        image = datalist.parent / case["image"]
        image_id = image.name.removesuffix(".nii.gz")
        shutil.copy(image, folder / image.name)
        references[image_id] = datalist.parent / case["label"]
    return Studies(folder, references)


@pytest.fixture(scope="session")
def studies(tmp_path_factory, tiny_data) -> Studies:
    return make_studies(tiny_data, tmp_path_factory.mktemp("studies") / "images")


@pytest.fixture(scope="session")
def tiny_overrides() -> Path:
    """The override file that makes the bundle tiny (merged over its configs, as in the bundle tests)."""
    return TINY


@pytest.fixture
def untrained_bundle(tmp_path) -> Path:
    """The bundle as cloned (configs and scripts, an empty ``models/``), copied elsewhere."""
    return copy_bundle(tmp_path / "bundle")


@pytest.fixture
def fresh_studies(tmp_path, tiny_data) -> Studies:
    """A datastore folder of its own, for a test that changes labels or banks of its own server."""
    return make_studies(tiny_data, tmp_path / "images")


@pytest.fixture(scope="session")
def server(start_label_server, studies, trained_bundle) -> LabelServer:
    return start_label_server(studies.folder, trained_bundle[0])


@pytest.fixture(scope="session")
def client(server, tmp_path_factory) -> MONAILabelClient:
    return server.client(tmp_path_factory.mktemp("client"))


@pytest.fixture(scope="session")
def system_packages() -> None:
    """Orthanc with its DICOMweb plugin, and Chromium, installed by the project's setup when missing."""
    missing = [name for name, path in dev.SYSTEM_PACKAGES.items() if not Path(path).exists()]
    if missing and os.environ.get("CI") != "true":
        pytest.skip(f"{', '.join(missing)} not installed: run `python3 dev.py system` (apt-get) to enable these tests")
    dev.ensure_system_packages()


@dataclass
class Orthanc:
    url: str
    process: Process

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    def upload(self, files: list[Path]) -> None:
        for file in files:
            response = requests.post(f"{self.url}/instances", data=file.read_bytes(),
                                     headers={"Content-Type": "application/dicom"}, timeout=30)
            response.raise_for_status()


@pytest.fixture(scope="session")
def orthanc(system_packages, tmp_path_factory) -> Iterator[Orthanc]:
    """Orthanc with its DICOMweb plugin, on a free loopback port, with its database in a temporary folder.

    Orthanc 1.10 has no bind-address option: ``RemoteAccessAllowed: false`` makes it refuse every client but the
    loopback, and its DICOM listener is off (instances are uploaded over HTTP)."""
    folder = tmp_path_factory.mktemp("orthanc")
    port = free_port()
    config = {
        "Name": "cardiac-uncertainty-tests",
        "StorageDirectory": str(folder / "db"),
        "IndexDirectory": str(folder / "db"),
        "HttpPort": port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomServerEnabled": False,
        "DicomPort": free_port(),
        "Plugins": [dev.SYSTEM_PACKAGES["orthanc-dicomweb"]],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "WadoRoot": "/wado",
                     "StudiesMetadata": "Full", "SeriesMetadata": "Full"},
    }
    (folder / "orthanc.json").write_text(json.dumps(config, indent=1))
    process = Process.start([dev.SYSTEM_PACKAGES["orthanc"], str(folder / "orthanc.json")], folder / "orthanc.log")
    url = f"http://127.0.0.1:{port}"
    try:
        process.wait_http(f"{url}/system", timeout=60)
        yield Orthanc(url, process)
    finally:
        process.stop()


@dataclass
class DicomwebStudy:
    """An MR series in Orthanc and a MONAI Label server whose datastore is Orthanc's DICOMweb service."""

    orthanc: Orthanc
    server: LabelServer
    study_uid: str
    series_uid: str
    image: Path
    reference: Path


@pytest.fixture(scope="session")
def dicomweb_study(orthanc, start_label_server, trained_bundle, studies, tmp_path_factory) -> DicomwebStudy:
    image_id = sorted(studies.references)[0]
    image = studies.folder / f"{image_id}.nii.gz"
    files = write_mr_series(image, tmp_path_factory.mktemp("series"), patient_id="SYN-001",
                            patient_name="Synthetic^Heart", study_description="Cardiac MRI (synthetic)",
                            series_description="SA cine (synthetic)")
    orthanc.upload(files)
    first = pydicom.dcmread(files[0], stop_before_pixels=True)
    env = {
        "MONAI_LABEL_DICOMWEB_SEARCH_FILTER": json.dumps({"Modality": "MR"}),
        "MONAI_LABEL_DICOMWEB_CACHE_PATH": str(tmp_path_factory.mktemp("dicomweb_cache")),
    }
    server = start_label_server(orthanc.dicomweb, trained_bundle[0], env=env)
    return DicomwebStudy(orthanc, server, str(first.StudyInstanceUID), str(first.SeriesInstanceUID), image,
                         studies.references[image_id])
