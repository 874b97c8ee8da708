"""The aggregator and two learners, as separate processes through their real console entrypoints, train
digits-mlp for 2 rounds on loopback against a real MLflow server; then the MLflow contract is checked."""

from __future__ import annotations

import os
import subprocess

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from flops_learner.data import load_builtin
from flops_runtime.proc import stop_tree
from flops_operator.models.project import Project, ProjectRef
from flops_operator.models.edits import training_identity
from flops_operator.models.spec import FLOpsProjectSpec
from flops_aggregator.contract import AggregatorEnv
from flops_operator.plan.desired import aggregator_config, learner_env
from tests.projects import LoopbackPki, with_training

from .conftest import free_port, venv_script

pytestmark = pytest.mark.e2e

ROUNDS = 2
LEARNERS = 2
# Generous: a round costs ~10-15 s on a quiet machine, many times that on 2 busy cores; these only
# bound a hung run so the test cannot block CI.
RUN_BOUND_SECONDS = 1200
ROUND_BOUND_SECONDS = 600


def project(round_mode: str = "fast") -> Project:
    spec = FLOpsProjectSpec.model_validate({
        "task": {"name": "digits-mlp"},
        "data": {"partitioning": {"scheme": "dirichlet", "alpha": 1.0, "seed": 7}},
        "training": {"rounds": ROUNDS, "roundTimeoutSeconds": ROUND_BOUND_SECONDS, "strategy": {"name": "FedAvg"},
                     "roundMode": round_mode},
        "learners": {"replicas": LEARNERS},
        "registry": {"modelName": "digits-e2e"},
    })
    return Project(ProjectRef("team-a", "digits", "0f9a-e2e"), 1, spec)


@pytest.mark.parametrize("round_mode", ["fast", "standard"])
def test_aggregator_and_learners_train_and_fill_the_mlflow_contract(mlflow_server, tmp_path, round_mode):
    p = project(round_mode)
    superlink = f"127.0.0.1:{free_port()}"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("FLOPS_", "MLFLOW_"))}
    pki = LoopbackPki()
    commands = {"aggregator": ([venv_script("flops-aggregator")], AggregatorEnv(
        config=aggregator_config(p), superlink_address=superlink, workdir=str(tmp_path / "aggregator"),
        tracking_uri=mlflow_server.uri, admission=pki.aggregator()).to_env())}
    for i in range(LEARNERS):
        commands[f"learner-{i}"] = ([venv_script("flops-learner")], learner_env(
            p, i, superlink=superlink, clientappio_address=f"127.0.0.1:{free_port()}",
            workdir=str(tmp_path / f"learner-{i}"), max_wait_seconds=ROUND_BOUND_SECONDS,
            admission=pki.learner(i)).to_env())
    processes, logs = {}, {}
    try:
        for name, (command, env) in commands.items():
            logs[name] = (tmp_path / f"{name}.log").open("wb")
            processes[name] = subprocess.Popen(command, env={**base, **env}, stdout=logs[name],
                                               stderr=subprocess.STDOUT, start_new_session=True)
        codes = {name: proc.wait(timeout=RUN_BOUND_SECONDS) for name, proc in processes.items()}
    finally:
        for proc in processes.values():
            stop_tree(proc, timeout=10)
        for handle in logs.values():
            handle.close()
    tails = {name: (tmp_path / f"{name}.log").read_text(errors="replace")[-3000:] for name in commands}
    assert codes == {name: 0 for name in commands}, tails

    client = MlflowClient(mlflow_server.uri)
    experiment = client.get_experiment_by_name("team-a/digits")
    assert experiment is not None
    assert experiment.tags["flops.project.uid"] == "0f9a-e2e"
    assert experiment.tags["flops.project.namespace"] == "team-a"
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    assert tags["flops.project.uid"] == "0f9a-e2e"
    assert tags["flops.flower.run_id"].isdigit()
    assert tags["flops.training.id"] == training_identity(p.spec)
    assert tags["flops.total_rounds"] == str(ROUNDS) and tags["flops.round"] == str(ROUNDS)
    assert params["rounds"] == str(ROUNDS) and params["strategy"] == "FedAvg"
    assert params["min_train_learners"] == str(LEARNERS) and params["partitioning"] == "dirichlet"
    assert params["task"] == "digits-mlp" and params["dataset"] == "digits"

    assert (params["evaluation"], params["mlflow_logging"]) == (
        ("fused", "async") if round_mode == "fast" else ("separate", "sync"))
    for key in ("train_loss", "eval_loss", "eval_accuracy", "num_train_learners", "num_eval_learners",
                "round_duration_seconds", "round_overhead_seconds"):
        history = client.get_metric_history(run.info.run_id, key)
        assert sorted(m.step for m in history) == list(range(1, ROUNDS + 1)), key
    for key in ("num_train_learners", "num_eval_learners"):
        assert all(m.value == LEARNERS for m in client.get_metric_history(run.info.run_id, key)), key
    assert any(key.startswith("system/") for key in metrics)

    accuracy = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "eval_accuracy")}
    best_round = int(metrics["best_round"])
    assert accuracy[best_round] == max(accuracy.values()) == metrics["best_eval_accuracy"]
    assert tags["flops.best_round"] == str(best_round)

    version = client.get_model_version("digits-e2e", tags["flops.model.version"])
    assert version.run_id == run.info.run_id
    assert tags["flops.model.uri"] == f"models:/digits-e2e/{version.version}"
    assert tags["flops.model.alias"] == "champion" and tags["flops.model.promoted"] == "true"
    assert client.get_model_version_by_alias("digits-e2e", "champion").version == version.version

    mlflow.set_tracking_uri(mlflow_server.uri)
    try:
        model = mlflow.pyfunc.load_model("models:/digits-e2e@champion")
    finally:
        mlflow.set_tracking_uri(None)
    assert model.metadata.signature is not None
    x, y = load_builtin("digits")
    scores = np.asarray(model.predict(x[:200]))
    assert scores.shape == (200, 10)
    # Two rounds of two learners already beat chance (0.1) by far.
    assert (scores.argmax(axis=1) == y[:200]).mean() > 0.5


def test_aggregator_exits_non_zero_when_the_serverapp_fails(tmp_path):
    """No learner ever connects: the ServerApp raises after the round timeout, `flwr run --stream` still
    exits 0, and the entrypoint must read the failed status and exit 1 (bare mode: no MLflow)."""
    config = with_training(aggregator_config(project()), round_timeout_seconds=2)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOPS_", "MLFLOW_"))}
    env.update(AggregatorEnv(config=config, superlink_address=f"127.0.0.1:{free_port()}",
                             workdir=str(tmp_path / "aggregator"), admission=LoopbackPki().aggregator()).to_env())
    process = subprocess.Popen([venv_script("flops-aggregator")], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=RUN_BOUND_SECONDS)
    finally:
        stop_tree(process, timeout=10)
    assert process.returncode == 1, output[-3000:]
    assert "finished:failed" in output
    assert not (tmp_path / "aggregator" / "result.json").exists()


def test_learner_gives_up_with_exit_0_when_the_aggregator_never_comes(tmp_path):
    """Nothing listens on the SuperLink address: past FLOPS_MAX_WAIT_SECONDS the learner stops its
    SuperNode (and everything the SuperNode started) and exits 0."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOPS_", "MLFLOW_"))}
    env.update(learner_env(project(), 1, superlink=f"127.0.0.1:{free_port()}",
                           clientappio_address=f"127.0.0.1:{free_port()}", workdir=str(tmp_path / "learner"),
                           max_wait_seconds=3, admission=LoopbackPki().learner(1)).to_env())
    process = subprocess.Popen([venv_script("flops-learner")], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=RUN_BOUND_SECONDS)
    finally:
        stop_tree(process, timeout=10)
    assert process.returncode == 0, output[-3000:]
    assert "unreachable" in output
    assert (tmp_path / "learner" / "data.npz").exists()
