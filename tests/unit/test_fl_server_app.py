"""The ServerApp's training loop reports failure truthfully: the MLflow run ends FAILED, nothing is registered."""

from __future__ import annotations

import json

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from flops_aggregator.grid import NotEnoughLearners
from flops_aggregator.server_app import RESULT_FILE, train
from flops_aggregator.settings import parse


class _NoLearners:
    """A Grid whose learners never connect."""

    def get_node_ids(self):
        return []


class _Context:
    run_id = 4242


@pytest.fixture
def in_a_run(monkeypatch):
    from flwr.supercore.task_identity import TaskIdentity

    for attribute in ("_run_id", "_node_id", "_task_id"):
        monkeypatch.setattr(TaskIdentity, attribute, 1)


def test_a_round_without_learners_fails_the_run_and_marks_it_failed(tmp_path, in_a_run):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = {"project": {"namespace": "ns", "name": "p", "uid": "u-1"}, "experiment": "ns/p",
              "task": {"name": "iris-logreg"}, "data": {"dataset": "iris"}, "numLearners": 2,
              "training": {"rounds": 2, "roundTimeoutSeconds": 0}, "registry": {"modelName": "never"}}
    previous = mlflow.get_tracking_uri()
    try:
        with pytest.raises(NotEnoughLearners):
            train(_NoLearners(), _Context(), parse(json.dumps(config), tmp_path, uri))
    finally:
        if mlflow.active_run():
            mlflow.end_run()
        mlflow.set_tracking_uri(previous)
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("ns/p").experiment_id])
    assert run.info.status == "FAILED"
    assert "NotEnoughLearners" in run.data.tags["flops.error"]
    assert run.data.tags["flops.flower.run_id"] == "4242"
    assert client.search_registered_models() == []
    assert not (tmp_path / RESULT_FILE).exists()
