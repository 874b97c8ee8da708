"""Reusable end-to-end fixtures: free loopback ports and a real MLflow tracking server.

`mlflow_server` starts `mlflow server` (SQLite backend, local artifacts served by the server) on a free
loopback port in a temp dir and stops it (and its workers) afterwards.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass
import urllib.request
from pathlib import Path

import pytest
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_fixed

from flops_runtime.proc import stop_tree

MLFLOW_STARTUP_SECONDS = 600  # a bound for hangs (2 shared cores may be busy)


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (bind to port 0, read it back)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def outside_address() -> str | None:
    """An address of this machine other than loopback: connections to it do not come from loopback (the stand-in
    for a worker's public IP)."""
    import psutil

    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family == socket.AF_INET and not address.address.startswith("127."):
                return address.address
    return None


def venv_script(name: str) -> str:
    """A console script installed next to the running interpreter (the project's venv)."""
    return str(Path(sys.executable).parent / name)


@dataclass(frozen=True)
class MlflowServer:
    uri: str
    backend_db: Path
    artifacts: Path
    log: Path


@pytest.fixture
def free_port_factory():
    return free_port


@pytest.fixture
def mlflow_server(tmp_path_factory) -> MlflowServer:
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    server = MlflowServer(uri=f"http://127.0.0.1:{port}", backend_db=root / "mlflow.db",
                          artifacts=root / "artifacts", log=root / "server.log")
    with server.log.open("wb") as out:
        process = subprocess.Popen(
            [venv_script("mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
             "--backend-store-uri", f"sqlite:///{server.backend_db}",
             "--artifacts-destination", str(server.artifacts), "--serve-artifacts", "--workers", "1"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            # The job runner (a dozen huey worker processes, ~2 GB) serves features no test uses.
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        )
    try:
        @retry(retry=retry_if_exception_type(OSError), wait=wait_fixed(0.5),
               stop=stop_after_delay(MLFLOW_STARTUP_SECONDS), reraise=True)
        def healthy() -> None:
            if process.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {server.log.read_text()[-2000:]}")
            with urllib.request.urlopen(f"{server.uri}/health", timeout=2) as answer:
                if answer.status != 200:
                    raise OSError(f"mlflow server not healthy yet: HTTP {answer.status}")

        healthy()
        yield server
    finally:
        stop_tree(process, timeout=10)
