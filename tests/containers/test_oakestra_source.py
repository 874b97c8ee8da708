"""The Oakestra example with the task's own code (manifests/examples/wine-oakestra.yaml), end to end in containers.

The operator (kopf over kmock) resolves the example's branch on a Git server, then the emulator's container worker
runs the builder image, unprivileged, on this module's network: it fetches the commit with the project's Git login,
appends the task's layers to the learner and aggregator images in a real registry (CNCF distribution, with a login)
and pushes them. The worker then pulls those images, as Oakestra's node engine pulls, and the training runs on
them to Completed with the model registered. Git server and registry listen on the network's host address, where
the containers reach them.
"""

from __future__ import annotations

import base64
import json
import secrets
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Iterator

import kubernetes
import pytest
import yaml

from flops_operator.credentials import OPT_IN_LABEL
from flops_operator.plan import images
from flops_operator.platforms.oakestra.names import app_name, service_name
from flops_operator.progress_mlflow import MlflowProgress
from tests.gitserver import GitServer
from tests.integration.conftest import _run_cluster, eventually, oakestra_case
from tests.oakestra_emulator import Cluster as OakestraCluster
from tests.oakestra_emulator import emulator_in_thread
from tests.oakestra_emulator.worker import ContainerWorker
from tests.registry import bases_storage, start_registry

from .conftest import Scene

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = yaml.safe_load((ROOT / "manifests" / "examples" / "wine-oakestra.yaml").read_text())
WINE = ROOT / "manifests" / "examples" / "tasks" / "wine"
TRAINING_BOUND = 480.0
"""Seconds the build and the training may take here before the test gives up (against hangs; about a minute
here), below pytest's own timeout so that a hang ends with the diagnosis."""


class World:
    def __init__(self, scene, emu, worker, cluster, git: GitServer, registry) -> None:
        self.scene, self.emu, self.worker, self.cluster, self.git, self.registry = (
            scene, emu, worker, cluster, git, registry)

    def diagnosis(self, namespace: str, name: str) -> str:
        try:
            status = json.dumps(self.cluster.get(namespace, name).get("status"), indent=1)[-3000:]
        except Exception as exc:  # the object may be gone already
            status = repr(exc)
        logs = "\n".join(f"--- {p.name} ---\n{p.read_text()[-1500:]}" for p in sorted(self.scene.log_dir.glob("*.log")))
        return (f"\nstatus: {status}\nworker: {json.dumps(self.worker.snapshot(), indent=1)[-3000:]}\n"
                f"registry: {self.registry.log_tail(10)}\nremoved containers' logs:\n{logs[-6000:]}")


@pytest.fixture(scope="module")
def world(scene: Scene, tmp_path_factory) -> Iterator[World]:
    host = str(scene.network.host_address)
    workdir = tmp_path_factory.mktemp("oakestra-source")
    # The learner and aggregator images as the operator's build registry holds them: <registry>/flops/<name>.
    storage, _ = bases_storage({f"flops/{n}": images.image(n) for n in ("learner", "aggregator")}, workdir)
    login = ("pusher", secrets.token_urlsafe(12))
    registry = start_registry(workdir / "registry", auth=login, address=host, storage=storage)
    git = GitServer(workdir / "git", username="flops", password=secrets.token_urlsafe(12), host=host).start()
    worker = ContainerWorker(scene.network, label=scene.label, log_dir=scene.log_dir,
                             registries={registry.host: login})
    clusters = [OakestraCluster(name, publicip="127.0.0.1") for name in ("edge-a", "edge-b")]
    try:
        with ExitStack() as stack:
            emu = stack.enter_context(emulator_in_thread(worker=worker, clusters=clusters))
            case = oakestra_case(stack, emu, service_subnet=str(scene.network.subnet),
                                 build_registry=f"{registry.host}/flops", build_registry_username=login[0],
                                 build_registry_password=login[1], build_registry_insecure=True)
            for cluster in _run_cluster(case, progress=MlflowProgress(), resync_seconds=2.0):
                yield World(scene, emu, worker, cluster, git, registry)
    finally:
        git.stop()
        registry.stop()


def wait(world: World, ns: str, name: str, check, what: str) -> Any:
    try:
        return eventually(lambda: check(world.cluster.get(ns, name)), what=what, timeout=TRAINING_BOUND)
    except AssertionError as exc:
        raise AssertionError(f"{exc}{world.diagnosis(ns, name)}") from None


def test_the_oakestra_example_trains_the_tasks_own_code_from_git(world: World):
    files = {f"tasks/wine/{p.name}": p.read_text() for p in WINE.iterdir() if p.is_file()}
    commit = world.git.commit("models", files, "wine task")
    ns, name = world.cluster.namespace(), "wine"
    world.cluster.core.create_namespaced_secret(ns, kubernetes.client.V1Secret(
        # data, not stringData: kmock stores what it is sent (the API server would encode stringData).
        metadata=kubernetes.client.V1ObjectMeta(name="git-login", labels={OPT_IN_LABEL: "true"}),
        data={k: base64.b64encode(v.encode()).decode() for k, v in world.git.credentials.items()}))
    spec = json.loads(json.dumps(EXAMPLE["spec"]))
    spec["task"]["source"]["git"].update(url=world.git.url("models"), path="tasks/wine",
                                         credentialsSecret={"name": "git-login"}, insecure=True)  # an http server
    ref = world.cluster.ref(world.cluster.create(ns, name, spec))

    seen_building = []

    def finished(obj):
        status = obj.get("status") or {}
        if status.get("phase") == "Building":
            seen_building.append(status.get("message"))
        if status.get("phase") == "Failed":
            raise RuntimeError(f"the project failed: {status.get('message')}{world.diagnosis(ns, name)}")
        return status.get("phase") == "Completed" and obj
    obj = wait(world, ns, name, finished, "Completed, built from the Git source")
    status = obj["status"]
    assert seen_building, "phase Building was shown while the builder ran"
    task = status["task"]
    assert task["commit"] == commit and task["buildPhase"] == "Built"
    target = f"{world.registry.host}/flops/projects/{ns}/{name}"
    assert task["image"].startswith(f"{target}/learner:") and "@sha256:" in task["image"]
    assert task["aggregatorImage"].startswith(f"{target}/aggregator:") and "@sha256:" in task["aggregatorImage"]
    assert task["cache"]["images"] == "built"
    assert status["training"]["bestMetrics"]["eval_accuracy"] >= 0.8, status["training"]
    assert status["model"]["version"] and status["model"]["name"] == EXAMPLE["spec"]["registry"]["modelName"]
    # The builder is gone; the training ran on the pushed images, which the worker pulled.
    assert "builder" not in {c["name"] for c in status["components"]}
    pulled = [e for e in world.worker.snapshot()["events"] if "pulled" in e]
    assert any(f"{target}/learner@" in e for e in pulled) and any(f"{target}/aggregator@" in e for e in pulled)
    builder_logs = "".join(p.read_text() for p in world.scene.log_dir.glob("*.log")
                           if service_name("builder") in p.name)
    assert "FLOPS-BUILD-RESULT" in builder_logs and world.git.password not in builder_logs

    world.cluster.delete(ns, name)
    eventually(lambda: world.cluster.gone(ns, name), what=f"{ns}/{name} deleted", timeout=600)
    assert not [a for a in world.emu.apps() if a["application_name"] == app_name(ref)]
