"""SIGTERM to the aggregator in the middle of a training (how the local platform and a container runtime
stop it): the aggregator must stop its Flower children, end the MLflow run KILLED with the reason, exit
128+SIGTERM, and the learners must wind down on their own with nothing left running."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import psutil
import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from tenacity import retry, retry_if_result, stop_after_delay, wait_fixed

from flops_runtime.proc import reachable, stop_tree
from flops_operator.models.project import Project, ProjectRef
from flops_operator.models.spec import FLOpsProjectSpec
from flops_aggregator.contract import AggregatorEnv
from flops_operator.plan.desired import aggregator_config, learner_env

from tests.projects import LoopbackPki

from .conftest import free_port, venv_script

pytestmark = pytest.mark.e2e

UID = "5e1a-signal"
LEARNERS = 2
# Far more rounds than the test lets it reach: the aggregator must still be training when signalled.
ROUNDS = 50
# Bounds for hangs only, generous for 2 busy cores (a round costs a few seconds on a quiet machine,
# and waited 52 s for round 1 at load 10); the assertions are about what happens, never how fast.
SUPERLINK_BOUND_SECONDS = 600
FIRST_ROUND_BOUND_SECONDS = 600
AGGREGATOR_EXIT_BOUND_SECONDS = 120
# Learners give up this long after the SuperLink went away (their default, 600 s, would dominate the
# test). It counts from their start too, so they start only once the SuperLink answers.
LEARNER_MAX_WAIT_SECONDS = 3
LEARNER_EXIT_BOUND_SECONDS = 120


def project() -> Project:
    spec = FLOpsProjectSpec.model_validate({
        "task": {"name": "digits-mlp"},
        "training": {"rounds": ROUNDS, "roundTimeoutSeconds": 600, "strategy": {"name": "FedAvg"}},
        "learners": {"replicas": LEARNERS},
        "registry": {"modelName": "digits-signal"},
    })
    return Project(ProjectRef("team-s", "digits", UID), 1, spec)


def start(name: str, command: list[str], env: dict[str, str], tmp_path: Path) -> subprocess.Popen:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("FLOPS_", "MLFLOW_"))}
    with (tmp_path / f"{name}.log").open("wb") as log:
        return subprocess.Popen(command, env={**base, **env}, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)


def superlink_up(address: str) -> None:
    """Returns once the aggregator's SuperLink accepts connections."""

    @retry(retry=retry_if_result(lambda up: not up), wait=wait_fixed(0.5),
           stop=stop_after_delay(SUPERLINK_BOUND_SECONDS))
    def poll() -> bool:
        return reachable(address)

    poll()


def running_round(client: MlflowClient) -> Run:
    """The project's MLflow run once it has logged round 1 (polls: the run appears only after startup)."""

    @retry(retry=retry_if_result(lambda run: run is None), wait=wait_fixed(0.5),
           stop=stop_after_delay(FIRST_ROUND_BOUND_SECONDS))
    def poll() -> Run | None:
        experiment = client.get_experiment_by_name("team-s/digits")
        if experiment is None:
            return None
        runs = client.search_runs([experiment.experiment_id], f"tags.`flops.project.uid` = '{UID}'")
        if runs and int(runs[0].data.tags.get("flops.round", "0")) >= 1:
            return runs[0]
        return None

    return poll()


def started_by(tmp_path: Path) -> list[psutil.Process]:
    """Live processes of this test, whoever their parent is now: every Flower process inherits the
    FLOPS_WORKDIR (under tmp_path) of the entrypoint that started it. Zombies are dead already."""
    found = []
    for p in psutil.process_iter():
        try:
            if p.status() != psutil.STATUS_ZOMBIE and p.environ().get("FLOPS_WORKDIR", "").startswith(str(tmp_path)):
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


def command_lines(processes: list[psutil.Process]) -> list[str]:
    out = []
    for p in processes:
        try:
            out.append(" ".join(p.cmdline()))
        except psutil.NoSuchProcess:
            pass
    return out


def test_sigterm_mid_training_ends_the_mlflow_run_killed_and_leaves_nothing(mlflow_server, tmp_path):
    p = project()
    superlink = f"127.0.0.1:{free_port()}"
    processes: dict[str, subprocess.Popen] = {}
    pki = LoopbackPki()
    try:
        processes["aggregator"] = start("aggregator", [venv_script("flops-aggregator")], AggregatorEnv(
            config=aggregator_config(p), superlink_address=superlink, workdir=str(tmp_path / "aggregator"),
            tracking_uri=mlflow_server.uri, admission=pki.aggregator()).to_env(), tmp_path)
        superlink_up(superlink)
        for i in range(LEARNERS):
            processes[f"learner-{i}"] = start(f"learner-{i}", [venv_script("flops-learner")], learner_env(
                p, i, superlink=superlink, clientappio_address=f"127.0.0.1:{free_port()}",
                workdir=str(tmp_path / f"learner-{i}"), max_wait_seconds=LEARNER_MAX_WAIT_SECONDS,
                admission=pki.learner(i)).to_env(), tmp_path)

        client = MlflowClient(mlflow_server.uri)
        run = running_round(client)
        assert run.info.status == "RUNNING"
        # The leftover check below is only meaningful if the ServerApp process was there to be left over.
        assert any("flwr-serverapp" in line for line in command_lines(started_by(tmp_path)))

        aggregator = processes["aggregator"]
        aggregator.send_signal(signal.SIGTERM)
        code = aggregator.wait(timeout=AGGREGATOR_EXIT_BOUND_SECONDS)
        learner_codes = {name: proc.wait(timeout=LEARNER_EXIT_BOUND_SECONDS)
                         for name, proc in processes.items() if name != "aggregator"}
        # Taken before the cleanup below, which would otherwise hide what the entrypoints left behind.
        leftovers = command_lines(started_by(tmp_path))
    finally:
        for proc in processes.values():
            stop_tree(proc, timeout=10)
        for orphan in started_by(tmp_path):
            orphan.kill()
    logs = {name: (tmp_path / f"{name}.log").read_text(errors="replace")[-3000:] for name in processes}

    assert code == 128 + signal.SIGTERM, logs["aggregator"]
    ended = client.get_run(run.info.run_id)
    assert ended.info.status == "KILLED", logs["aggregator"]
    assert ended.data.tags.get("flops.end_reason") == "signal SIGTERM"
    assert int(ended.data.tags["flops.round"]) < ROUNDS
    assert "flops.error" not in ended.data.tags
    # Once the SuperLink is gone, a learner waits LEARNER_MAX_WAIT_SECONDS and stops with exit 0.
    assert learner_codes == {f"learner-{i}": 0 for i in range(LEARNERS)}, logs
    assert leftovers == []
