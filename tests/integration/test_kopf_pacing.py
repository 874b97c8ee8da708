"""Over real HTTP with a 30 s resync: a project that waits on a service moves on within seconds of the
service becoming ready, and a finished round shows in status within 5 s (the pacing, not the resync)."""

from __future__ import annotations

import time
from contextlib import ExitStack
from typing import Iterator

import pytest

from flops_operator.platforms.base import ServiceState
from flops_operator.platforms.fake import FakePlatform
from flops_operator.progress import TrainingProgress

from .conftest import Cluster, PlatformCase, _run_cluster, eventually

RESYNC = 30.0
SOON = 5.0


@pytest.fixture(scope="module")
def slow_world() -> Iterator[tuple[Cluster, FakePlatform]]:
    fake = FakePlatform(start_state=ServiceState.starting)
    case = PlatformCase(
        name=fake.name, spec_platform="local", factories={"local": lambda: fake},
        services=lambda ref: set(fake.projects.get(ref.uid, {})), complete=fake.complete,
        set_failing=lambda value: setattr(fake, "failing", value),
        observations=lambda ref: sum(1 for call in list(fake.calls) if call[:2] == ("observe", ref.key)))
    with ExitStack():
        for cluster in _run_cluster(case, resync_seconds=RESYNC):
            yield cluster, fake


def seconds_until(check, what: str) -> float:
    started = time.monotonic()
    eventually(check, what=what, timeout=RESYNC * 3)
    return time.monotonic() - started


def test_each_dependency_wave_goes_within_seconds_and_a_round_shows_within_5_s(slow_world) -> None:
    cluster, fake = slow_world
    ns, name = cluster.namespace(), "paced"
    ref = cluster.ref(cluster.create(ns, name, {
        "task": {"name": "digits-mlp"}, "training": {"rounds": 3}, "learners": {"replicas": 1}}))
    eventually(lambda: "artifact-store" in fake.services(ref), what="the artifact store created")

    waves = []
    for ready, next_wave in (("artifact-store", "tracking-server"), ("tracking-server", "aggregator"),
                             ("aggregator", "learner-0")):
        fake.set_state(ref, ready, ServiceState.running)
        waves.append(seconds_until(lambda: next_wave in fake.services(ref), f"{next_wave} created"))
    fake.set_state(ref, "learner-0", ServiceState.running)
    eventually(lambda: cluster.get(ns, name)["status"]["training"].get("learnersRunning") == 1,
               what="training with its learner")
    assert max(waves) < SOON, f"dependency waves took {waves} s; the resync is {RESYNC} s"

    cluster.progress.by_project[f"{ns}/{name}"] = TrainingProgress(
        experiment_id="1", run_id="r1", run_status="RUNNING", round=1, last_round_seconds=10.0)
    shown = seconds_until(lambda: cluster.get(ns, name)["status"]["training"]["progress"] == "1/3",
                          "round 1/3 in status")
    assert shown < SOON, f"a finished round took {shown:.1f} s to show in status"
    status = cluster.get(ns, name)["status"]["training"]
    assert (status["progressPercentage"], status["estimatedRemainingSeconds"], status["eta"]) == (33, 20, "20s")
