"""The tracking server learns the public address it is published at (Oakestra: the worker's IP and host port,
known only once it runs): the real entrypoint with the command and environment the plan renders, the operator's
real MlflowControl.allow_address. Before, MLflow refuses that Host; after, it answers there, and still refuses
any other Host (its DNS-rebinding guard stays on)."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest
from tenacity import retry, retry_if_result, stop_after_delay, wait_fixed

from flops_operator.credentials import generate
from flops_operator.models.project import Project, ProjectRef
from flops_operator.models.spec import FLOpsProjectSpec
from flops_operator.plan.desired import credential_names, desired
from flops_operator.plan.render import render_service
from flops_operator.control_mlflow import MlflowControl
from flops_runtime.proc import stop_tree

from .conftest import free_port, outside_address, venv_script

pytestmark = pytest.mark.e2e

BOUND_SECONDS = 600  # a bound for hangs (2 shared cores may be busy), not a timing claim


def project() -> Project:
    spec = FLOpsProjectSpec.model_validate({"task": {"name": "digits-mlp"}, "learners": {"replicas": 1}})
    return Project(ProjectRef("team-h", "hosts", "uid-hosts"), 1, spec)


class ServiceAddress:
    """render.Resolver as Oakestra's: the service address is its own (here loopback), bound on every address."""

    def __init__(self, port: int, secrets: dict[str, str], workdir: Path):
        self.port, self.secrets, self.dir = port, secrets, workdir

    def address(self, service: str, port: str) -> str:
        return "192.0.2.1:1"  # the stores' addresses: the test gives SQLite and a directory instead

    def host(self, service: str) -> str:
        assert service == "tracking-server"
        return "127.0.0.1"

    def own_port(self, port: str) -> int:
        return self.port

    def bind(self) -> str:
        return "0.0.0.0"

    def secret(self, name: str) -> str:
        return self.secrets[name]

    def workdir(self) -> str:
        return str(self.dir)


def answer(url: str, host: str | None = None, login: tuple[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if host:
        request.add_header("Host", host)
    if login:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(login).encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def test_the_tracking_server_answers_at_its_announced_public_address_and_no_other(tmp_path):
    p = project()
    tracking = next(s for s in desired(p, training_done=False) if s.name == "tracking-server")
    secrets = {name: generate(name) for name in credential_names(p.spec) if name in tracking.secrets}
    port = free_port()
    command, env = render_service(tracking, ServiceAddress(port, secrets, tmp_path / "work"))
    env["MLFLOW_BACKEND_STORE_URI"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env["MLFLOW_ARTIFACTS_DESTINATION"] = str(tmp_path / "artifacts")
    assert env.get("FLOPS_ALLOWED_HOSTS_TAG") == "flops.allowed-hosts"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("FLOPS_", "MLFLOW_"))}
    log = tmp_path / "tracking.log"
    with log.open("wb") as out:
        server = subprocess.Popen([venv_script(command[0]), *command[1:]], env={**base, **env}, stdout=out,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    outside = outside_address()
    if outside is None:
        pytest.fail("this machine has no address but loopback: nothing can stand in for a public one")
    public = f"{outside}:{port}"
    reader = ("flops-reader", secrets["mlflow-reader-password"])
    api = f"http://{public}/api/2.0/mlflow/experiments/get-by-name?experiment_name=team-h/hosts"

    @retry(retry=retry_if_result(lambda code: code == 0), stop=stop_after_delay(BOUND_SECONDS), wait=wait_fixed(0.5))
    def status_when_up(host: str | None) -> int:
        assert server.poll() is None, log.read_text()[-3000:]
        return answer(api, host, reader)[0]

    try:
        refused = status_when_up(None)
        assert refused == 403 and "Invalid Host header" in answer(api, None, reader)[1]
        # As the operator does it: through the service address, with the aggregator's login.
        writer = ("flops-aggregator", secrets["mlflow-aggregator-password"])
        control = MlflowControl()

        async def announce() -> bool:
            try:
                return await control.allow_address(p, f"http://{public}", f"127.0.0.1:{port}", login=writer)
            finally:
                await control.close()
        assert asyncio.run(announce())

        @retry(retry=retry_if_result(lambda code: code != 200), stop=stop_after_delay(BOUND_SECONDS),
               wait=wait_fixed(0.5))
        def allowed() -> int:
            return status_when_up(None)
        assert allowed() == 200
        assert status_when_up(f"evil.example:{port}") == 403
        assert status_when_up(f"127.0.0.1:{port}") == 200
        assert "restarting mlflow server" in log.read_text()

        # Announced already: nothing is written again, and MLflow is not restarted again.
        assert asyncio.run(announce())
        assert log.read_text().count("restarting mlflow server") == 1

        children = psutil.Process(server.pid).children(recursive=True)
        assert children, "the entrypoint supervises MLflow"
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=120) in (0, 128 + signal.SIGTERM)
        gone, alive = psutil.wait_procs(children, timeout=30)
        assert not alive, alive
    finally:
        stop_tree(server)
