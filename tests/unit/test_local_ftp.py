"""The local artifact store: the pyftpdlib child process with MLflow's FTP operations."""

from __future__ import annotations

import ftplib
import io
import sys

import pytest

from flops_operator.platforms.base import ServiceState
from flops_operator.platforms.local.commands import FTP_MODULE
from flops_operator.platforms.local.ports import PortAllocator, port_is_free
from flops_operator.platforms.local.probes import TcpProbe
from flops_operator.platforms.local.process import Launch, ManagedProcess


@pytest.fixture
async def ftp(tmp_path):
    port = PortAllocator().allocate()
    launch = Launch(argv=[sys.executable, "-m", FTP_MODULE, "--port", str(port), "--root", str(tmp_path / "root"),
                          "--user", "mlflow"],
                    env={"FTP_PASS": "pw-123", "PATH": "/usr/bin:/bin"}, cwd=tmp_path,
                    log_path=tmp_path / "ftp.log", one_shot=False, probe=TcpProbe("127.0.0.1", port))
    proc = ManagedProcess(launch)
    proc.start()
    assert await proc.wait_for(ServiceState.running, ServiceState.failed) is ServiceState.running
    yield port, tmp_path / "root"
    await proc.stop()
    assert port_is_free(port)


def test_the_project_user_can_do_what_mlflow_does(ftp):
    port, root = ftp
    with ftplib.FTP() as client:
        client.connect("127.0.0.1", port)
        client.login("mlflow", "pw-123")
        client.mkd("/artifacts")
        client.mkd("/artifacts/1")
        client.cwd("/artifacts/1")
        client.storbinary("STOR model.bin", io.BytesIO(b"weights"))
        assert client.nlst() == ["model.bin"]
        client.voidcmd("TYPE I")  # as MLflow does before SIZE
        assert client.size("model.bin") == 7
        out = io.BytesIO()
        client.retrbinary("RETR model.bin", out.write)
        assert out.getvalue() == b"weights"
    assert (root / "artifacts" / "1" / "model.bin").read_bytes() == b"weights"


def test_a_wrong_password_is_refused_and_the_root_is_a_jail(ftp):
    port, root = ftp
    with ftplib.FTP() as client:
        client.connect("127.0.0.1", port)
        with pytest.raises(ftplib.error_perm):
            client.login("mlflow", "wrong")
    with ftplib.FTP() as client:
        client.connect("127.0.0.1", port)
        client.login("mlflow", "pw-123")
        client.cwd("/../..")
        assert client.pwd() == "/"
        assert client.nlst() == []


def test_the_password_must_come_from_the_environment(tmp_path):
    import subprocess

    done = subprocess.run([sys.executable, "-m", FTP_MODULE, "--port", "1", "--root", str(tmp_path), "--user", "u"],
                          env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "FTP_PASS" in done.stderr
