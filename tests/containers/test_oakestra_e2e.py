"""The Oakestra example end to end in containers: the operator (kopf over kmock, as the lifecycle tests run
it) reconciles manifests/examples/digits-oakestra.yaml through the Oakestra driver against the emulator,
whose container worker runs every service from the images `make images` built, on this module's network.

The emulator's two clusters carry the example's cluster names; their workers' public address is
127.0.0.1, where the worker relays the published ports (the MLflow UI/API, the model server), so the
operator's progress reader and health checks reach them as they would reach an Oakestra worker.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from flops_operator.platforms.oakestra.names import app_name, service_name
from flops_operator.progress_mlflow import MlflowProgress
from tests.integration.conftest import Cluster, _run_cluster, eventually, oakestra_case
from tests.oakestra_emulator import Cluster as OakestraCluster
from tests.oakestra_emulator import emulator_in_thread
from tests.oakestra_emulator.podman import labelled, podman_sync
from tests.oakestra_emulator.worker import ContainerWorker, container_name

from .conftest import Scene, serving_example

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = yaml.safe_load((ROOT / "manifests" / "examples" / "digits-oakestra.yaml").read_text())
CLUSTERS = sorted({EXAMPLE["spec"]["aggregator"]["placement"]["cluster"],
                   EXAMPLE["spec"]["learners"]["placement"]["cluster"]})
TRAINING_BOUND = 1800.0
"""Seconds a whole training may take here before the test gives up (against hangs; rounds take ~20 s)."""
STEP_BOUND = 600.0


class World:
    def __init__(self, scene: Scene, emu: Any, worker: ContainerWorker, cluster: Cluster):
        self.scene, self.emu, self.worker, self.cluster = scene, emu, worker, cluster

    def diagnosis(self, namespace: str, name: str) -> str:
        """What to read when a step does not come: the status, the worker's story, the containers' logs."""
        try:
            status = json.dumps(self.cluster.get(namespace, name).get("status"), indent=1)[-3000:]
        except Exception as exc:  # the object may be gone already
            status = repr(exc)
        logs = "\n".join(f"--- {p.name} ---\n{p.read_text()[-1500:]}"
                         for p in sorted(self.scene.log_dir.glob("*.log")))
        return (f"\nstatus: {status}\nworker: {json.dumps(self.worker.snapshot(), indent=1)[-4000:]}\n"
                f"removed containers' logs:\n{logs[-6000:]}")

    def project_containers(self, ref) -> list[str]:
        return [entry for entry in labelled(self.scene.label) if entry.startswith("container ")
                and app_name(ref) in entry]


@pytest.fixture(scope="module")
def world(scene: Scene) -> Iterator[World]:
    worker = ContainerWorker(scene.network, label=scene.label, log_dir=scene.log_dir)
    clusters = [OakestraCluster(name, publicip="127.0.0.1") for name in CLUSTERS]
    with ExitStack() as stack:
        emu = stack.enter_context(emulator_in_thread(worker=worker, clusters=clusters))
        case = oakestra_case(stack, emu, service_subnet=str(scene.network.subnet))
        # The real progress reader: MLflow's REST API through the tracking server's published port.
        for cluster in _run_cluster(case, progress=MlflowProgress(), resync_seconds=2.0):
            yield World(scene, emu, worker, cluster)


def example(**changes: Any) -> dict:
    spec = json.loads(json.dumps(EXAMPLE["spec"]))
    for path, value in changes.items():
        node = spec
        *parents, leaf = path.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return spec


def condition(obj: dict, type_: str) -> dict:
    return next(c for c in obj["status"]["conditions"] if c["type"] == type_)


def wait(world: World, ns: str, name: str, check, what: str, timeout: float = STEP_BOUND) -> Any:
    try:
        return eventually(lambda: check(world.cluster.get(ns, name)), what=what, timeout=timeout)
    except AssertionError as exc:
        raise AssertionError(f"{exc}{world.diagnosis(ns, name)}") from None


def delete_and_verify_nothing_left(world: World, ns: str, name: str, ref) -> None:
    world.cluster.delete(ns, name)
    eventually(lambda: world.cluster.gone(ns, name), what=f"{ns}/{name} deleted", timeout=STEP_BOUND)
    assert not [a for a in world.emu.apps() if a["application_name"] == app_name(ref)]
    eventually(lambda: not world.project_containers(ref), what="the project's containers removed", timeout=60)


def host_status(url: str, host: str | None, login: tuple[str, str]) -> int:
    request = urllib.request.Request(url, headers={"Authorization": "Basic " + base64.b64encode(
        ":".join(login).encode()).decode(), **({"Host": host} if host else {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as rsp:
            return rsp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_oakestra_example_trains_registers_and_serves_in_containers(world: World, tmp_path: Path):
    ns, name = world.cluster.namespace(), "digits"
    ref = world.cluster.ref(world.cluster.create(ns, name, example(**{"serving.enabled": True})))

    def finished(obj):
        status = obj.get("status") or {}
        if status.get("phase") == "Failed":
            raise RuntimeError(f"the project failed: {status.get('message')}{world.diagnosis(ns, name)}")
        return (status.get("phase") == "Completed" and condition(obj, "Ready")["status"] == "True"
                and condition(obj, "ModelServerReady")["status"] == "True" and obj)
    obj = wait(world, ns, name, finished, "Completed, Ready, model served", timeout=TRAINING_BOUND)
    status = obj["status"]
    assert status["training"]["progress"] == f"{EXAMPLE['spec']['training']['rounds']}/" \
                                             f"{EXAMPLE['spec']['training']['rounds']}"
    assert status["training"]["bestMetrics"]["eval_accuracy"] >= 0.90, status["training"]
    model = status["model"]
    assert model["name"] == EXAMPLE["spec"]["registry"]["modelName"] and model["version"]
    assert model["alias"] == EXAMPLE["spec"]["registry"]["alias"]
    assert condition(obj, "ModelRegistered")["status"] == "True"
    components = {c["name"]: c for c in status["components"]}
    assert set(components) == {"backend-store", "artifact-store", "tracking-server", "model-server"}

    # The model server answers a prediction for the logged input example, through its published port.
    tracking = status["mlflow"]["trackingUri"]
    # The tracking server takes logins: the project's read-only one, from its credentials Secret.
    secret = world.cluster.core.read_namespaced_secret(f"{name}-flops-credentials", ns)
    reader = ("flops-reader", base64.b64decode(secret.data["mlflow-reader-password"]).decode())
    payload = serving_example(tracking, model["name"], model["alias"], tmp_path, login=reader)
    request = urllib.request.Request(f"http://{components['model-server']['externalAddress']}/invocations",
                                     data=payload, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as rsp:
        predictions = json.loads(rsp.read())["predictions"]
    assert len(predictions) == len(json.loads(payload)["inputs"])
    # The plan lists only the service address: MLflow answers at the public one because the operator announced it,
    # and still refuses any other Host.
    search = f"{tracking}/api/2.0/mlflow/experiments/search?max_results=1"
    assert host_status(search, None, reader) == 200
    assert host_status(search, "evil.example", reader) == 403

    delete_and_verify_nothing_left(world, ns, name, ref)
    logs = "".join(p.read_text() for p in world.scene.log_dir.glob("*.log") if app_name(ref) in p.name
                   and service_name("tracking-server") in p.name)
    assert logs.count("restarting mlflow server") == 1, logs[-3000:]


def test_a_killed_aggregator_container_shows_in_status(world: World):
    ns, name = world.cluster.namespace(), "killed"
    # Many rounds: the aggregator is still training when it is killed.
    ref = world.cluster.ref(world.cluster.create(ns, name, example(**{"training.rounds": 50})))

    def training(obj):
        status = obj.get("status") or {}
        return status.get("phase") == "Training" and status["training"]["round"] >= 1 and obj
    wait(world, ns, name, training, "training under way (round 1 logged)", timeout=TRAINING_BOUND)

    app = next(a for a in world.emu.apps() if a["application_name"] == app_name(ref))
    job = world.emu.job(service_name("aggregator"), app["applicationID"])
    podman_sync("kill", "-s", "KILL", container_name(job, job["instance_list"][0]["instance_number"]))

    def failed(obj):
        status = obj.get("status") or {}
        return status.get("phase") == "Failed" and obj
    obj = wait(world, ns, name, failed, "phase Failed after the aggregator was killed")
    message = obj["status"]["message"]
    assert message.startswith("aggregator failed: instance 0 DEAD: stopped before finishing its run"), message
    complete = condition(obj, "TrainingComplete")
    assert (complete["status"], complete["reason"]) == ("False", "Failed") and "DEAD" in complete["message"]
    assert condition(obj, "Stalled")["status"] == "True"
    # The training's services go; the tracking stack stays for the runs' record.
    eventually(lambda: not any("aggregator" in c or "learner" in c for c in world.project_containers(ref)),
               what="aggregator and learner containers removed", timeout=STEP_BOUND)

    delete_and_verify_nothing_left(world, ns, name, ref)
