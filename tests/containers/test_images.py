"""Smoke tests of each built image, started with exactly what the Oakestra plan renders for it (the SLA the
driver would send: command, environment, memory and CPU limits) at addresses of this module's network:
each does its first step, and the FL images go on to a whole (one-round) training."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import kubernetes.client
import pytest
import yaml
from mlflow.tracking import MlflowClient

from flops_operator.credentials import generate
from flops_operator.models import GROUP, PLURAL, VERSION, parse_project
from flops_operator.plan.desired import credential_names, desired
from flops_operator.platforms.oakestra import OakestraConfig, sla
from tests.integration.conftest import eventually, free_port, kubernetes_in_thread
from tests.oakestra_emulator.podman import podman_sync
from tests.oakestra_emulator.worker import env_file_text, podman_run_args

from .conftest import OPERATOR_IMAGE, Scene, serving_example

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "manifests" / "examples" / "digits-oakestra.yaml"
BOUND = 600.0
"""Seconds any one step may take before the test gives up (a bound against hangs, not a timing claim)."""


def project() -> Any:
    manifest = yaml.safe_load(EXAMPLE.read_text())
    manifest["metadata"]["uid"] = "smoke-0000-4000-8000-000000000001"
    spec = manifest["spec"]
    spec["learners"]["replicas"] = 1
    spec["training"].update(rounds=1, minAvailableLearners=1)
    spec["serving"] = {"enabled": True}
    return parse_project(manifest)


class Renderer:
    """What the driver would put into each service's SLA, at addresses this module chooses."""

    def __init__(self, scene: Scene):
        self.scene = scene
        self.project = project()
        self.config = OakestraConfig(url="http://unused", password="unused", service_subnet=str(scene.network.subnet))
        self.secrets = {name: generate(name) for name in credential_names(self.project.spec)}
        self.services = {s.name: s for s in desired(self.project, training_done=False)}
        self.services.update({s.name: s for s in desired(self.project, training_done=True, model_registered=True)})
        hosts = list(scene.network.subnet.hosts())[10:]
        self.addresses = {name: str(hosts[i]) for i, name in enumerate(sorted(self.services))}
        self.peers: dict[str, sla.Peer] = {}

    def microservice(self, name: str) -> dict:
        service = self.services[name]
        ms = sla.microservice(self.project.ref, service, rr_ip=self.addresses[name], peers=self.peers,
                              secrets={k: self.secrets[k] for k in service.secrets}, workdir=self.config.workdir,
                              port_range=self.config.host_port_range, image=self.config.image(service.image))
        self.peers[name] = sla.Peer(self.addresses[name], {p.name: p.container_port for p in service.ports})
        return ms

    def url(self, name: str, path: str = "") -> str:
        port = self.services[name].ports[0].container_port
        return f"http://{self.addresses[name]}:{port}{path}"


def start(scene: Scene, name: str, ms: dict) -> str:
    """Run one rendered microservice as the node engine would; returns the container's name."""
    container = f"{scene.label.split('=')[1]}-{name}"
    with tempfile.NamedTemporaryFile("w", suffix=".env") as env:
        env.write(env_file_text(ms, 0))
        env.flush()
        podman_sync(*podman_run_args(ms, 0, name=container, network=scene.network.name, label=scene.label),
                    "--env-file", env.name, ms["code"])
    return container


def logs(container: str) -> str:
    done = podman_sync("logs", container, check=False)
    return done.out + done.err


def state(container: str) -> dict:
    return json.loads(podman_sync("inspect", container).out)[0]["State"]


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as rsp:
            return rsp.status == 200
    except OSError:
        return False


def wait_healthy(container: str, url: str) -> None:
    def up():
        if not state(container)["Running"]:
            raise RuntimeError(f"{container} stopped: {logs(container)[-3000:]}")
        return http_ok(url)
    eventually(up, what=f"{container} answering {url}", timeout=BOUND)


@pytest.fixture(scope="module")
def rendered(scene: Scene) -> Renderer:
    return Renderer(scene)


@pytest.fixture(scope="module")
def tracking(scene: Scene, rendered: Renderer) -> Iterator[str]:
    """Backend store (MariaDB) + artifact store (vsftpd) + tracking server, as the plan renders them."""
    for name in ("backend-store", "artifact-store"):
        start(scene, name, rendered.microservice(name))
    ms = rendered.microservice("tracking-server")
    container = start(scene, "tracking-server", ms)
    wait_healthy(container, rendered.url("tracking-server", "/health"))
    # The server takes logins (MLflow basic auth): this test's clients are its admin.
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    os.environ.update(MLFLOW_TRACKING_USERNAME="admin", MLFLOW_TRACKING_PASSWORD=rendered.secrets["mlflow-admin-password"])
    try:
        yield rendered.url("tracking-server")
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def test_stores_have_no_command_so_their_images_set_themselves_up(rendered: Renderer):
    # Oakestra's `cmd` replaces the image's entrypoint: a command here would skip the MARIADB_*/FTP_* set-up.
    assert rendered.microservice("backend-store")["cmd"] == []
    ftp = rendered.microservice("artifact-store")
    assert ftp["cmd"] == [] and len(ftp["port"].split(";")) == 11  # control port + 10 passive ports


def test_tracking_server_with_mysql_backend_and_ftp_artifacts(scene: Scene, rendered: Renderer, tracking: str,
                                                              tmp_path: Path):
    client = MlflowClient(tracking)
    experiment = client.create_experiment("smoke")
    run = client.create_run(experiment)
    artifact = tmp_path / "hello.txt"
    artifact.write_text("through the tracking server into vsftpd")
    client.log_artifact(run.info.run_id, str(artifact))
    client.set_terminated(run.info.run_id)
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["hello.txt"]
    stored = podman_sync("exec", f"{scene.label.split('=')[1]}-artifact-store", "find", "/srv/ftp/data",
                         "-name", "hello.txt").out
    assert "hello.txt" in stored, "the artifact did not land in the FTP store"
    # The job runner is off: a dozen worker processes otherwise (and ~2 GB, past the planned limit).
    processes = podman_sync("top", f"{scene.label.split('=')[1]}-tracking-server", "pid").out.split()[1:]
    assert 1 <= len(processes) <= 6, processes
    memory = json.loads(podman_sync("inspect", f"{scene.label.split('=')[1]}-tracking-server").out)[0]
    assert memory["HostConfig"]["Memory"] == rendered.services["tracking-server"].memory_mb * 1024 * 1024


@pytest.fixture(scope="module")
def trained(scene: Scene, rendered: Renderer, tracking: str) -> dict:
    """The aggregator and one learner, with their rendered environments, train one round to the end."""
    aggregator = start(scene, "aggregator", rendered.microservice("aggregator"))
    learner = start(scene, "learner-0", rendered.microservice("learner-0"))

    def done():
        current = state(aggregator)
        return current["Status"] == "exited" and current
    final = eventually(done, what="the aggregator container finishing its run", timeout=BOUND)
    return {"exit": final["ExitCode"], "logs": logs(aggregator), "learner": logs(learner),
            "learner_state": state(learner)}


def test_aggregator_and_learner_train_in_their_work_directory(trained: dict, tracking: str):
    assert trained["exit"] == 0, trained["logs"][-3000:] + "\n--- learner ---\n" + trained["learner"][-3000:]
    assert "SuperLink ready" in trained["logs"] and "completed" in trained["logs"]
    assert "partition 0/1" in trained["learner"]
    client = MlflowClient(tracking)
    (version,) = client.search_model_versions("name='digits-mlp'")
    assert client.get_model_version_by_alias("digits-mlp", "champion").version == version.version


def test_model_server_serves_the_registered_model(scene: Scene, rendered: Renderer, trained: dict, tracking: str,
                                                  tmp_path: Path):
    assert trained["exit"] == 0
    container = start(scene, "model-server", rendered.microservice("model-server"))
    wait_healthy(container, rendered.url("model-server", "/ping"))
    payload = serving_example(tracking, "digits-mlp", "champion", tmp_path)
    request = urllib.request.Request(rendered.url("model-server", "/invocations"), data=payload,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as rsp:
        answer = json.loads(rsp.read())
    rows = len(json.loads(payload)["inputs"])
    assert len(answer["predictions"]) == rows


def test_operator_image_is_slim_and_serves_projects(scene: Scene, tmp_path: Path):
    for module in ("torch", "flwr", "mlflow", "psutil"):
        found = podman_sync("run", "--rm", "--no-healthcheck", "--label", scene.label, "--entrypoint", "python3",
                            OPERATOR_IMAGE, "-c", f"import {module}", check=False)
        assert found.code != 0, f"the operator image carries {module}"
    with kubernetes_in_thread() as (url, _):
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "kmock",
            "clusters": [{"name": "kmock", "cluster": {"server": url}}],
            "users": [{"name": "tester", "user": {"token": "not-checked"}}],
            "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "tester"}}]}))
        kubeconfig.chmod(0o644)
        liveness = free_port()
        name = f"{scene.label.split('=')[1]}-operator"
        # The host's loopback: where this test's Kubernetes API (kmock) listens.
        podman_sync("run", "-d", "--name", name, "--label", scene.label, "--network", "host", "--no-healthcheck",
                    "-v", f"{kubeconfig}:/var/lib/flops/kubeconfig:ro", "-e", "KUBECONFIG=/var/lib/flops/kubeconfig",
                    OPERATOR_IMAGE, "--platform", "fake", "-A", "--metrics-port", "0",
                    "--liveness", f"http://127.0.0.1:{liveness}/healthz", "--resync-seconds", "1")
        try:
            api = kubernetes.client.ApiClient(kubernetes.client.Configuration(host=url))
            custom = kubernetes.client.CustomObjectsApi(api)
            custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, {
                "apiVersion": f"{GROUP}/{VERSION}", "kind": "FLOpsProject",
                "metadata": {"name": "digits", "namespace": "default"},
                "spec": {"platform": "oakestra", "task": {"name": "digits-mlp"}}})

            def ready():
                obj = custom.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "digits")
                conditions = {c["type"]: c["status"] for c in (obj.get("status") or {}).get("conditions", [])}
                return conditions.get("Ready") == "True"
            eventually(ready, what=f"the project Ready under the operator image; its log: {logs(name)[-3000:]}",
                       timeout=BOUND)
            assert http_ok(f"http://127.0.0.1:{liveness}/healthz")
            api.close()
        finally:
            podman_sync("kill", "-s", str(int(signal.SIGTERM)), name, check=False)
            deadline = time.monotonic() + 60
            while state(name)["Running"] and time.monotonic() < deadline:
                time.sleep(0.5)
            final = state(name)
            output = logs(name)
            podman_sync("rm", "-f", name, check=False)
        assert final["ExitCode"] == 0, output
        assert "Traceback" not in output, output


def test_make_images_built_every_image_the_plan_names_non_root_labelled_with_a_health_check(built_images):
    for image in built_images:
        inspected = json.loads(podman_sync("image", "inspect", image).out)[0]
        config = inspected["Config"]
        labels = config.get("Labels") or {}
        assert labels.get("org.opencontainers.image.version") and labels.get("org.opencontainers.image.title"), image
        assert (inspected.get("Healthcheck") or {}).get("Test"), f"{image} has no health check"
        user = config.get("User") or "root"
        if "artifact-store" not in image:  # vsftpd's master must start as root (artifact_store_image/README.md)
            assert user.split(":")[0] not in ("", "0", "root"), f"{image} runs as {user!r}"
        env = dict(item.split("=", 1) for item in config.get("Env") or [])
        assert not any(k for k in env if "PASSWORD" in k or k in ("FTP_PASS", "MLFLOW_TRACKING_PASSWORD")), image
