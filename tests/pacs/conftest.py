"""A real Orthanc (Debian packages ``orthanc`` and ``orthanc-dicomweb``) for the PACS tests: on
loopback, free ports, its own storage folder, stopped at the end; and a simulated study of a
real BraTS case (``mrimaster.imaging.simulate``) to store in it."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
PAT1 = "brats-mini/deepmedic-brats2015/test/brats_2013_pat0001_1"  # FLAIR + T1-Gd
PATIENT_ID = "PACS0001"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Orthanc:
    """One Orthanc process; ``stop()`` then ``start()`` keeps its storage (a restart)."""

    def __init__(self, folder: Path, users: dict[str, str] | None = None) -> None:
        self.folder = folder
        self.port = _free_port()
        self.auth = next(iter(users.items())) if users else None
        config = {"Name": "MRIMasterTest", "StorageDirectory": str(folder / "db"),
                  "IndexDirectory": str(folder / "db"), "HttpPort": self.port,
                  "DicomPort": _free_port(), "DicomServerEnabled": False,
                  "RemoteAccessAllowed": False, "AuthenticationEnabled": bool(users),
                  "RegisteredUsers": users or {}, "Plugins": [str(PLUGIN)],
                  "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
                  "StableAge": 1, "HttpRequestTimeout": 60}
        folder.mkdir(parents=True, exist_ok=True)
        self.config = folder / "orthanc.json"
        self.config.write_text(json.dumps(config))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def dicomweb(self) -> str:
        return f"{self.root}/dicom-web"

    def rest(self, method: str, path: str, **kw: Any) -> Any:
        r = requests.request(method, self.root + path, auth=self.auth, timeout=30, **kw)
        r.raise_for_status()
        return r.json() if r.content else None

    def start(self) -> None:
        log = (self.folder / "orthanc.log").open("ab")
        self.proc = subprocess.Popen(["Orthanc", str(self.config)], stdout=log, stderr=log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited: see {self.folder / 'orthanc.log'}")
            try:
                self.rest("GET", "/system")
                return
            except requests.RequestException:
                time.sleep(0.1)
        raise RuntimeError("Orthanc did not start within 30 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def upload(self, folder: Path) -> int:
        files = [p for p in sorted(folder.rglob("*")) if p.is_file()]
        for p in files:
            self.rest("POST", "/instances", data=p.read_bytes())
        return len(files)

    def study_id(self, study_uid: str) -> str:
        found = self.rest("POST", "/tools/lookup", data=study_uid)
        return str(next(f["ID"] for f in found if f["Type"] == "Study"))

    def modalities(self, study_uid: str) -> dict[str, int]:
        """Per series modality, its number of instances in the study."""
        out: dict[str, int] = {}
        for s in self.rest("GET", f"/studies/{self.study_id(study_uid)}/series"):
            m = s["MainDicomTags"]["Modality"]
            out[m] = out.get(m, 0) + len(s["Instances"])
        return out


@pytest.fixture(scope="session")
def orthanc_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if shutil.which("Orthanc") is None or not PLUGIN.is_file():
        pytest.fail("Orthanc tests: apt-get install orthanc orthanc-dicomweb "
                    "(./mrimaster.sh test does it)")
    started: list[Orthanc] = []

    def make(users: dict[str, str] | None = None) -> Orthanc:
        server = Orthanc(tmp_path_factory.mktemp("orthanc"), users)
        server.start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def simulated_study(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DICOM study of a real BraTS case (FLAIR, T1-Gd, a localizer and a DWI), patient
    :data:`PATIENT_ID`."""
    from mrimaster.imaging.simulate import StudyInfo, build_study

    src = data_root / PAT1
    out = tmp_path_factory.mktemp("study")
    build_study({"flair": src / "Flair_subtrMeanDivStd.nii.gz",
                 "t1ce": src / "T1c_subtrMeanDivStd.nii.gz"}, out, seed=5,
                study=StudyInfo(patient_id=PATIENT_ID, accession="ACC42", uid_seed=5))
    return out


def study_uid_of(folder: Path) -> str:
    import pydicom

    first = next(p for p in sorted(folder.rglob("*")) if p.is_file())
    return str(pydicom.dcmread(first, stop_before_pixels=True).StudyInstanceUID)
