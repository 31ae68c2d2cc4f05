"""A real Orthanc (Debian ``orthanc`` and ``orthanc-dicomweb``) on localhost, one per test session.

It stores into a temporary folder, answers DICOMweb on a free HTTP port and DIMSE on a free DICOM port, and
is stopped after the session. The tests skip only when the ``Orthanc`` binary is not installed.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

PLUGIN_FOLDERS = ("/usr/share/orthanc/plugins", "/usr/lib/orthanc", "/usr/local/share/orthanc/plugins")
PLUGIN = "libOrthancDicomWeb.so"
AE_TITLE = "ORTHANC"
START_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Orthanc:
    """A running Orthanc: where to reach it."""

    http_port: int
    dicom_port: int

    @property
    def rest(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"dicomweb://127.0.0.1:{self.http_port}/dicom-web"

    @property
    def dicom_url(self) -> str:
        return f"dicom://{AE_TITLE}@127.0.0.1:{self.dicom_port}"

    def get(self, path: str) -> requests.Response:
        response = requests.get(f"{self.rest}{path}", timeout=30)
        response.raise_for_status()
        return response

    def store(self, files: list[Path]) -> None:
        """Store files through Orthanc's REST API (not through medmdm)."""
        for path in files:
            requests.post(f"{self.rest}/instances", data=path.read_bytes(), timeout=30).raise_for_status()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _plugin() -> Path:
    for folder in PLUGIN_FOLDERS:
        found = sorted(Path(folder).glob(f"{PLUGIN}*")) if Path(folder).is_dir() else []
        if found:
            return found[0]
    raise FileNotFoundError(f"{PLUGIN} is in none of {', '.join(PLUGIN_FOLDERS)} (Debian orthanc-dicomweb)")


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    """Orthanc with the DICOMweb plugin, its storage in a temporary folder, stopped after the session."""
    binary = shutil.which("Orthanc")
    if binary is None:
        pytest.skip("the Orthanc binary is not installed (apt-get install orthanc orthanc-dicomweb)")
    folder = tmp_path_factory.mktemp("orthanc")
    server = Orthanc(_free_port(), _free_port())
    config = {
        "Name": "medmdm-tests",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "storage"),
        "HttpPort": server.http_port,
        "DicomPort": server.dicom_port,
        "DicomAet": AE_TITLE,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomAlwaysAllowFind": True,
        "DicomAlwaysAllowGet": True,
        "DicomAlwaysAllowStore": True,
        "Plugins": [str(_plugin())],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    (folder / "orthanc.json").write_text(json.dumps(config))
    log_path = folder / "orthanc.log"
    with log_path.open("w") as log:
        process = subprocess.Popen([binary, str(folder / "orthanc.json")], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                server.get("/dicom-web/studies")
                break
            except requests.RequestException:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"Orthanc did not start: {log_path.read_text()[-2000:]}") from None
                time.sleep(0.1)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
