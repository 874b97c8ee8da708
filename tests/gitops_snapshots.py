"""FLOpsProjects as the real reconcile step and status code leave them, one per state a GitOps tool must
judge: the fixtures of the Argo CD health check (manifests/gitops/argocd/testdata) and of the Flux
healthCheckExprs. `python -m tests.gitops_snapshots` writes them; a unit test fails when they drift."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
from pathlib import Path
from typing import Any

import yaml

from flops_operator.adapters.kopf_status import problem_status
from flops_operator.credentials import MemoryCredentials
from flops_operator.models import FLOpsProjectStatus, Project, parse_project
from flops_operator.platforms.base import ServiceState
from flops_operator.platforms.fake import FakePlatform
from flops_operator.progress import TrainingProgress
from flops_operator.reconcile import reconcile
from flops_operator.status import deleting_status
from flops_operator.task_build import SourceVersion

TESTDATA = Path(__file__).resolve().parents[1] / "manifests" / "gitops" / "argocd" / "testdata"
NOW = "2026-11-30T12:00:00Z"
MANIFEST = {
    "apiVersion": "flops.oakestra.io/v1alpha1", "kind": "FLOpsProject",
    "metadata": {"name": "digits", "namespace": "team-a", "uid": "0b5e-gitops", "generation": 1},
    "spec": {"task": {"name": "digits-mlp"}, "training": {"rounds": 5}, "learners": {"replicas": 2}},
}
RUNNING = TrainingProgress(experiment_id="1", run_id="r1", run_status="RUNNING", round=2,
                           latest_metrics={"eval_accuracy": 0.81}, best_metrics={"eval_accuracy": 0.81},
                           best_round=2, last_round_seconds=12.5, learners_answered=2)
FINISHED = TrainingProgress(experiment_id="1", run_id="r1", run_status="FINISHED", round=5,
                            latest_metrics={"eval_accuracy": 0.93}, best_metrics={"eval_accuracy": 0.94},
                            best_round=4, last_round_seconds=12.0, learners_answered=2, model_name="digits",
                            model_version="3", model_alias="champion", model_uri="models:/digits/3", promoted=True)
FAILED = TrainingProgress(experiment_id="1", run_id="r1", run_status="FAILED", round=2)


class Steered:
    def __init__(self) -> None:
        self.progress: TrainingProgress | None = None

    async def fetch(self, project: Project, tracking_url: str, login=None) -> TrainingProgress | None:
        return self.progress

    async def request_stop(self, project: Project, tracking_url: str, run_id: str, reason: str,
                           login=None) -> bool:
        return False  # as an MLflow that cannot be written: the services stay until the drain bound

    async def request_learners(self, project: Project, tracking_url: str, run_id: str, count: int,
                               login=None) -> bool:
        return False  # as an MLflow that cannot be written

    async def allow_address(self, project: Project, tracking_url: str, via: str, login=None) -> bool:
        return True  # as a server that answers at its public address


COMMIT = "0123456789abcdef0123456789abcdef01234567"
SOURCE_MANIFEST = copy.deepcopy(MANIFEST)
SOURCE_MANIFEST["spec"]["task"] = {"source": {"git": {"url": "https://git.example.com/team/wine.git",
                                                      "path": "tasks/wine"}}}


class AtCommit:
    """A Git source whose branch is at COMMIT."""

    async def version(self, project: Project, credentials) -> SourceVersion:
        return SourceVersion(commit=COMMIT)


class World:
    """One project on the in-memory platform, reconciled as an adapter would."""

    def __init__(self, start_state: ServiceState = ServiceState.running, manifest: dict | None = None) -> None:
        self.platform, self.mlflow = FakePlatform(start_state=start_state), Steered()
        self.manifest = manifest or MANIFEST
        self.status = FLOpsProjectStatus()

    async def step(self, times: int = 1, now: str = NOW) -> FLOpsProjectStatus:
        for _ in range(times):
            result = await reconcile(self.manifest, self.status, platform=self.platform,
                                     credentials=MemoryCredentials(), progress_source=self.mlflow, control=self.mlflow, now=now,
                                     sources=AtCommit())
            self.status = result.status
        return self.status


def _object(status: FLOpsProjectStatus | None, manifest: dict = MANIFEST, **metadata: Any) -> dict:
    out = copy.deepcopy(manifest)
    out["metadata"].update(metadata)
    if status is not None:
        out["status"] = status.to_wire()
    return out


async def _snapshots() -> dict[str, dict]:
    ref = parse_project(MANIFEST).ref
    out: dict[str, dict] = {"no_status": _object(None)}
    # What the kopf adapter writes when the platform cannot be reached before anything was created.
    out["pending_platform_unavailable"] = _object(problem_status(
        FLOpsProjectStatus(), 1, stalled=False, reason="PlatformUnavailable",
        message="platform oakestra unavailable, retrying: connection refused", now=NOW))

    provisioning = World(ServiceState.starting)
    out["provisioning"] = _object(await provisioning.step())

    building = World(ServiceState.running, manifest=SOURCE_MANIFEST)
    await building.step()
    building.platform.say(ref, "builder", "flops-build: step=deps environment 3f2a9c: cache hit (4.2s)")
    out["building"] = _object(await building.step(), SOURCE_MANIFEST)
    building.platform.say(ref, "builder", 'FLOPS-BUILD-ERROR {"step":"requirements","field":"requirements.txt",'
                                          '"message":"no matching distribution for wine-utils==9.9"}')
    building.platform.fail(ref, "builder", "exit code 1")
    out["failed_build"] = _object(await building.step(), SOURCE_MANIFEST)

    stalled = World(ServiceState.starting)
    await stalled.step()
    stalled.platform.fail(ref, "artifact-store", "vsftpd: 500 OOPS: could not bind listening IPv4 socket")
    out["stalled_stack"] = _object(await stalled.step())

    world = World()
    await world.step(4)
    world.mlflow.progress = RUNNING
    training = await world.step()
    out["training"] = _object(training)
    out["platform_unavailable"] = _object(problem_status(
        training, 1, stalled=False, reason="PlatformUnavailable",
        message="platform oakestra unavailable, retrying: connection refused", now=NOW))
    out["deleting"] = _object(deleting_status(training, 1, now=NOW, message="removing services"),
                              deletionTimestamp=NOW)

    pausing = World()
    await pausing.step(4)
    pausing.mlflow.progress = RUNNING
    await pausing.step()
    pausing.manifest = copy.deepcopy(MANIFEST)
    pausing.manifest["metadata"]["generation"] = 2
    pausing.manifest["spec"]["suspend"] = True
    pausing.mlflow.progress = dataclasses.replace(RUNNING, run_status="KILLED", checkpoint_round=2)
    out["suspended"] = _object(await pausing.step(2), pausing.manifest)

    world.mlflow.progress = FINISHED
    world.platform.complete(ref, "aggregator")
    completed = await world.step(2)
    out["completed"] = _object(completed)
    out["completed_stale_generation"] = _object(completed, generation=2)

    failing = World()
    await failing.step(4)
    failing.mlflow.progress = FAILED
    failing.platform.fail(ref, "aggregator", "exit code 1")
    out["failed_training"] = _object(await failing.step(2))

    bounded = copy.deepcopy(MANIFEST)
    bounded["spec"]["training"] = {"rounds": 5, "activeDeadlineSeconds": 600}
    late = World(manifest=bounded)
    await late.step(4)
    late.mlflow.progress = RUNNING
    await late.step()
    out["failed_deadline_exceeded"] = _object(await late.step(2, now="2026-11-30T12:10:01Z"), bounded)

    invalid = copy.deepcopy(MANIFEST)
    invalid["spec"]["training"] = {"rounds": 5, "minTrainLearners": 3}
    out["failed_invalid_spec"] = _object(await World(manifest=invalid).step(), invalid)
    return out


def snapshots() -> dict[str, dict]:
    return asyncio.run(_snapshots())


def as_yaml(obj: dict) -> str:
    return yaml.safe_dump(obj, sort_keys=False, width=120)


def main() -> None:
    TESTDATA.mkdir(parents=True, exist_ok=True)
    for name, obj in snapshots().items():
        (TESTDATA / f"{name}.yaml").write_text(as_yaml(obj))


if __name__ == "__main__":
    main()
