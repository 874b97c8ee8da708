"""Learners that come and go while a training runs, through the real entrypoints on loopback (round mode fast, the
spec's default): a learner that joins late trains in the following rounds; a replaced learner's new key is admitted
and its old one refused; with fewer learners than the minimum, a round waits out the round timeout and the training
then fails instead of hanging."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from tenacity import retry, retry_if_result, stop_after_delay, wait_fixed

from flops_runtime.proc import stop_tree
from flops_operator.models.project import Project, ProjectRef
from flops_operator.models.spec import FLOpsProjectSpec
from flops_aggregator.contract import AggregatorEnv
from flops_learner.contract import LearnerAdmission
from flops_operator.plan.desired import aggregator_config, learner_env
from tests.projects import LoopbackPki, with_training

from .conftest import free_port, venv_script

pytestmark = pytest.mark.e2e

# Far more rounds than these tests let happen: the training must still be under way when a learner comes or goes.
ROUNDS = 1000
ROUND_TIMEOUT_SECONDS = 10
# Bounds for hangs only: starting a learner takes most of a minute on a loaded machine, and Flower's SuperLink
# marks a silent SuperNode offline only after two missed 30 s heartbeats.
WAIT_BOUND_SECONDS = 300
EXIT_BOUND_SECONDS = 60


def project(uid: str, min_learners: int, replicas: int = 2) -> Project:
    spec = FLOpsProjectSpec.model_validate({
        "task": {"name": "digits-mlp"},
        "training": {"rounds": ROUNDS, "minTrainLearners": min_learners, "minEvaluateLearners": min_learners,
                     "minAvailableLearners": min_learners},
        "learners": {"replicas": replicas},
        "registry": {"modelName": f"digits-{uid}"},
    })
    return Project(ProjectRef("team-m", uid, uid), 1, spec)


class Federation:
    def __init__(self, p: Project, tmp_path: Path, tracking_uri: str, admitted: int | None = None):
        self.project, self.tmp_path, self.superlink = p, tmp_path, f"127.0.0.1:{free_port()}"
        self.processes: dict[str, subprocess.Popen] = {}
        self.client = MlflowClient(tracking_uri)
        self.pki = LoopbackPki()
        config = with_training(aggregator_config(p), round_timeout_seconds=ROUND_TIMEOUT_SECONDS)
        if admitted is not None:  # an aggregator started before the project's learners were scaled
            config = config.model_copy(update={"num_learners": admitted})
        self.start("aggregator", [venv_script("flops-aggregator")], AggregatorEnv(
            config=config, superlink_address=self.superlink, workdir=str(tmp_path / "aggregator"),
            tracking_uri=tracking_uri, admission=self.pki.aggregator()).to_env())
        # The learners here give up after 3 s without an aggregator (so that they leave promptly at the end): started
        # before its SuperLink answers, a loaded machine's slow start-up would look like an aggregator gone.
        self.wait_for_log("aggregator", "SuperLink ready")

    def start(self, name: str, command: list[str], env: dict[str, str]) -> None:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("FLOPS_", "MLFLOW_"))}
        with (self.tmp_path / f"{name}.log").open("wb") as log:
            self.processes[name] = subprocess.Popen(command, env={**base, **env}, stdout=log,
                                                    stderr=subprocess.STDOUT, start_new_session=True)

    def start_learner(self, i: int, name: str | None = None, admission: LearnerAdmission | None = None) -> None:
        name = name or f"learner-{i}"
        self.start(name, [venv_script("flops-learner")], learner_env(
            self.project, i, superlink=self.superlink, clientappio_address=f"127.0.0.1:{free_port()}",
            workdir=str(self.tmp_path / name), max_wait_seconds=3,
            admission=admission or self.pki.learner(i)).to_env())

    def learners_per_round(self) -> list[int]:
        """num_train_learners of each reported round so far."""
        experiment = self.client.get_experiment_by_name(f"team-m/{self.project.ref.name}")
        runs = self.client.search_runs([experiment.experiment_id]) if experiment else []
        if not runs:
            return []
        history = self.client.get_metric_history(runs[0].info.run_id, "num_train_learners")
        return [int(m.value) for m in sorted(history, key=lambda m: m.step)]

    def wait_for_round(self, learners: int) -> list[int]:
        """Rounds reported until one had `learners` training learners."""

        @retry(retry=retry_if_result(lambda seen: learners not in seen), wait=wait_fixed(1),
               stop=stop_after_delay(WAIT_BOUND_SECONDS))
        def poll() -> list[int]:
            assert self.processes["aggregator"].poll() is None, self.log("aggregator")
            return self.learners_per_round()

        return poll()

    def wait_for_round_after(self, rounds: int, learners: int) -> list[int]:
        """Rounds reported until one after the first `rounds` had `learners` training learners."""

        @retry(retry=retry_if_result(lambda seen: learners not in seen[rounds:]), wait=wait_fixed(1),
               stop=stop_after_delay(WAIT_BOUND_SECONDS))
        def poll() -> list[int]:
            assert self.processes["aggregator"].poll() is None, self.log("aggregator")
            return self.learners_per_round()

        return poll()

    def run_id(self) -> str:
        experiment = self.client.get_experiment_by_name(f"team-m/{self.project.ref.name}")
        (run,) = self.client.search_runs([experiment.experiment_id])
        return run.info.run_id

    def wait_for_log(self, name: str, text: str) -> None:
        @retry(retry=retry_if_result(lambda found: not found), wait=wait_fixed(1),
               stop=stop_after_delay(WAIT_BOUND_SECONDS))
        def poll() -> bool:
            assert self.processes["aggregator"].poll() is None, self.log("aggregator")
            return text in (self.tmp_path / f"{name}.log").read_text(errors="replace")

        poll()

    def log(self, name: str) -> str:
        return (self.tmp_path / f"{name}.log").read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        for proc in self.processes.values():
            stop_tree(proc, timeout=10)


def test_a_learner_that_joins_late_trains_in_the_following_rounds(mlflow_server, tmp_path):
    federation = Federation(project("late-join", min_learners=1), tmp_path, mlflow_server.uri)
    try:
        federation.start_learner(0)
        federation.wait_for_round(learners=1)
        federation.start_learner(1)
        seen = federation.wait_for_round(learners=2)
        aggregator = federation.processes["aggregator"]
        aggregator.send_signal(signal.SIGTERM)
        assert aggregator.wait(timeout=EXIT_BOUND_SECONDS) == 128 + signal.SIGTERM, federation.log("aggregator")
    finally:
        federation.stop()
    # Alone first; from the round the late learner joined, both train (it is never left out again).
    assert seen[0] == 1 and seen[-1] == 2
    assert seen == sorted(seen), seen


def test_learners_scaled_while_training_are_admitted_and_removed_as_the_run_asks(mlflow_server, tmp_path):
    """spec.learners.replicas 2 -> 3 -> 2 while training: the operator sets the run's flops.learners tag
    (ProgressSource.request_learners); the aggregator registers the new learner's key, which then trains, and
    unregisters it again."""
    federation = Federation(project("scaled", min_learners=1, replicas=3), tmp_path, mlflow_server.uri, admitted=2)
    try:
        federation.start_learner(0)
        federation.start_learner(1)
        federation.wait_for_round(learners=2)
        federation.start_learner(2)
        federation.client.set_tag(federation.run_id(), "flops.learners", "3")
        federation.wait_for_log("aggregator", "learner-2 (node")
        seen = federation.wait_for_round(learners=3)
        federation.client.set_tag(federation.run_id(), "flops.learners", "2")
        federation.wait_for_log("aggregator", "/v1/control/unregister-node")
        aggregator = federation.processes["aggregator"]
        aggregator.send_signal(signal.SIGTERM)
        assert aggregator.wait(timeout=EXIT_BOUND_SECONDS) == 128 + signal.SIGTERM, federation.log("aggregator")
    finally:
        federation.stop()
    # The admitted two trained (whether the second made round 1 is start-up timing: one learner is enough to
    # start), then the third from its first round on; none was left out again.
    assert 2 in seen and seen[-1] == 3 and seen == sorted(seen), seen
    log = (tmp_path / "aggregator.log").read_text(errors="replace")
    admitted = [line.split("admitted learners: ")[1] for line in log.splitlines() if "admitted learners:" in line]
    # Each of the first two as it presented its certificate (learner-2 waited: above the count), then 3 once the
    # count took it in, then the first 2 again, under the node ids they were registered with first.
    assert len(admitted) == 4, admitted
    both = admitted[1]
    assert both.startswith("learner-0 (node ") and ", learner-1 (node " in both, admitted
    assert admitted[2].startswith(both + ", learner-2 (node ") and admitted[3] == both, admitted
    learner_2 = (tmp_path / "learner-2.log").read_text(errors="replace")
    # Presented before the count took it in (waiting) or after (admitted): either way its key was registered once.
    assert re.search(r"enrollment at 127\.0\.0\.1:\d+: (admitted|waiting) \(learner-2 ", learner_2), learner_2[-3000:]


def test_a_replaced_learner_trains_with_its_new_key_and_the_old_key_is_refused(mlflow_server, tmp_path):
    """As the operator replaces a learner (spec.learners.resources): a new key and a certificate issued later; the
    running aggregator unregisters the old key when the new certificate is presented, and refuses the old one
    from then on. The aggregator is not replaced."""
    federation = Federation(project("rotated", min_learners=1), tmp_path, mlflow_server.uri)
    try:
        federation.start_learner(0)
        federation.start_learner(1)
        federation.wait_for_round(learners=2)
        old = federation.pki.learner(1)
        stop_tree(federation.processes.pop("learner-1"), timeout=10)
        federation.pki.renew("flower-learner-key-1")
        federation.start_learner(1, name="learner-1-new")
        federation.wait_for_log("aggregator", "learner-1's key renewed: node")
        federation.wait_for_log("learner-1-new", "enrollment at 127.0.0.1")
        rounds_before = len(federation.learners_per_round())
        seen = federation.wait_for_round_after(rounds_before, learners=2)
        federation.start_learner(1, name="learner-1-old", admission=old)
        assert federation.processes["learner-1-old"].wait(timeout=EXIT_BOUND_SECONDS) == 1, federation.log("learner-1-old")
        aggregator = federation.processes["aggregator"]
        assert aggregator.poll() is None  # the same aggregator all along
        aggregator.send_signal(signal.SIGTERM)
        assert aggregator.wait(timeout=EXIT_BOUND_SECONDS) == 128 + signal.SIGTERM, federation.log("aggregator")
    finally:
        federation.stop()
    assert seen[-1] == 2, seen
    assert (tmp_path / "learner-1-new" / "state" / "progress.json").exists()  # the new learner-1 trained
    assert not (tmp_path / "learner-1-old" / "state" / "progress.json").exists()
    old_log = (tmp_path / "learner-1-old.log").read_text(errors="replace")
    assert "does not admit this learner's key (superseded)" in old_log and "starting flower-supernode" not in old_log
    assert "refused learner-1's superseded key" in federation.log("aggregator")


def test_a_round_short_of_learners_times_out_and_the_training_fails(mlflow_server, tmp_path):
    federation = Federation(project("short", min_learners=2), tmp_path, mlflow_server.uri)
    try:
        federation.start_learner(0)
        federation.start_learner(1)
        federation.wait_for_round(learners=2)
        # The learner and everything it started die at once, as on a node that lost power.
        os.killpg(federation.processes["learner-1"].pid, signal.SIGKILL)
        killed = time.monotonic()
        aggregator = federation.processes["aggregator"]
        code = aggregator.wait(timeout=ROUND_TIMEOUT_SECONDS * 3 + 2 * 30 + WAIT_BOUND_SECONDS)
        lasted = time.monotonic() - killed
    finally:
        federation.stop()
    output = federation.log("aggregator")
    assert code == 1 and "finished:failed" in output, output
    (run,) = federation.client.search_runs([federation.client.get_experiment_by_name("team-m/short").experiment_id])
    assert run.info.status == "FAILED"
    error = run.data.tags["flops.error"]
    assert f"only 1 of the 2 required learners connected for {ROUND_TIMEOUT_SECONDS}s" in error, run.data.tags
    # The shortage began with the kill, and the training failed only after it had lasted the round timeout (a lower
    # bound the timeout guarantees, not a speed). The round the learner died in may end at once, with the reply's
    # objects reported missing, or wait for it: both are fine.
    assert lasted >= ROUND_TIMEOUT_SECONDS, lasted
