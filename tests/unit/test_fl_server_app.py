"""The ServerApp's training loop reports its end truthfully: the MLflow run ends FAILED when training fails,
KILLED when it is stopped from outside; nothing is registered either way."""

from __future__ import annotations

import threading

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from flops_aggregator import mlflow_run
from flops_aggregator.grid import NotEnoughLearners
from flops_aggregator.server_app import RESULT_FILE, train
from flops_operator.models import FLOpsProjectSpec
from flops_operator.models.edits import training_identity
from tests.projects import aggregator_settings


class _NoLearners:
    """A Grid whose learners never connect."""

    def get_node_ids(self):
        return []


class _Stopped:
    """A Grid whose ServerApp process is told to stop: Flower's signal handler raises SystemExit."""

    def get_node_ids(self):
        raise SystemExit(1)


class _Context:
    run_id = 4242


@pytest.fixture
def in_a_run(monkeypatch):
    from flwr.supercore.task_identity import TaskIdentity

    for attribute in ("_run_id", "_node_id", "_task_id"):
        monkeypatch.setattr(TaskIdentity, attribute, 1)


SPEC = {"task": {"name": "iris-logreg"}, "data": {"dataset": "iris"}, "learners": {"replicas": 2},
        "training": {"rounds": 2}, "registry": {"modelName": "never"}}


def train_until(raised: type[BaseException], grid, tmp_path):
    """Train against `grid` in a fresh SQLite store; returns the store's only run once `raised` came out."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri()
    try:
        with pytest.raises(raised):
            train(grid, _Context(), aggregator_settings(SPEC, tmp_path, uri, round_timeout_seconds=0.01))
    finally:
        if mlflow.active_run():
            mlflow.end_run()
        mlflow.set_tracking_uri(previous)
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("ns/p").experiment_id])
    return client, run


def test_a_round_without_learners_fails_the_run_and_marks_it_failed(tmp_path, in_a_run):
    client, run = train_until(NotEnoughLearners, _NoLearners(), tmp_path)
    assert run.info.status == "FAILED"
    assert "NotEnoughLearners" in run.data.tags["flops.error"]
    assert run.data.tags["flops.flower.run_id"] == "4242"
    assert run.data.tags["flops.training.id"] == training_identity(FLOpsProjectSpec.model_validate(SPEC))
    assert client.search_registered_models() == []
    assert not (tmp_path / RESULT_FILE).exists()


def test_a_stopped_serverapp_ends_the_run_killed_and_records_its_id_for_the_entrypoint(tmp_path, in_a_run):
    client, run = train_until(SystemExit, _Stopped(), tmp_path)
    assert run.info.status == "KILLED"
    assert run.data.tags[mlflow_run.END_REASON_TAG].startswith("ServerApp stopped (SystemExit")
    assert "flops.error" not in run.data.tags
    assert mlflow_run.recorded(tmp_path) == run.info.run_id
    assert client.search_registered_models() == []
    assert not (tmp_path / RESULT_FILE).exists()


def test_a_serverapp_stopped_by_the_entrypoint_tags_the_entrypoints_reason(tmp_path, in_a_run):
    # The entrypoint records why it stops before it stops the ServerApp; whichever of the two tags the run
    # last, the run says the same thing.
    mlflow_run.record_stop(tmp_path, "signal SIGTERM")
    _, run = train_until(SystemExit, _Stopped(), tmp_path)
    assert run.info.status == "KILLED"
    assert run.data.tags[mlflow_run.END_REASON_TAG] == "signal SIGTERM"


def test_a_stop_reason_from_an_earlier_training_is_forgotten(tmp_path):
    mlflow_run.record_stop(tmp_path, "signal SIGINT")
    mlflow_run.forget(tmp_path)
    assert mlflow_run.stop_reason(tmp_path) is None


class AskingRecorder:
    """Records what the Rounds observer hands it; asks to stop from round `stop_from` on."""

    def __init__(self, stop_from: int):
        self.stop_from, self.rounds, self.checkpoints = stop_from, [], []

    def log_round(self, result):
        self.rounds.append(result.round)

    def checkpoint(self, ckpt):
        self.checkpoints.append(ckpt.round)

    def stop_requested(self):
        return "spec.suspend" if self.rounds and self.rounds[-1] >= self.stop_from else None


@pytest.mark.parametrize("stop_from, total, stops_after", [
    (2, 4, 2),     # asked during round 2: stops once round 2 is recorded and its checkpoint handed over
    (9, 4, None),  # never asked
    (4, 4, None),  # asked at the last round: the training ends normally instead
])
def test_a_requested_stop_comes_at_a_round_boundary_after_its_checkpoint(tmp_path, stop_from, total, stops_after):
    import numpy as np
    from collections import OrderedDict

    from flops_aggregator.best import BestKeeper
    from flops_aggregator.server_app import Rounds, StopRequested
    from flops_aggregator.strategies import RoundResult
    from flops_learner.client_app import to_record

    recorder = AskingRecorder(stop_from)
    rounds = Rounds(recorder, BestKeeper("eval_accuracy", "max", tmp_path), total)
    stopped = None
    for r in range(1, total + 1):
        try:
            rounds.on_round(RoundResult(r, to_record(OrderedDict(w=np.full(2, float(r)))), {"eval_accuracy": r / 10}))
        except StopRequested as stop:
            stopped = stop
            break
    assert (stopped.round if stopped else None) == stops_after
    if stopped:
        assert recorder.checkpoints[-1] == stops_after and stopped.reason == "spec.suspend"
    assert recorder.rounds == list(range(1, (stops_after or total) + 1))


class _Started(Exception):
    pass


def test_the_task_loads_while_mlflow_starts(tmp_path, monkeypatch):
    """The task's import (torch: seconds) and MLflow's start (requests) overlap: each side waits for the other
    to be under way, so run one after the other, either would fail (after 30 s, not on a clock of its own)."""
    from flops_aggregator import server_app
    from flops_aggregator.tracking import BareRecorder

    loading, starting = threading.Event(), threading.Event()
    loaded = server_app.load_task

    def load_task(wire):
        loading.set()
        assert starting.wait(30), "MLflow's start did not run while the task loaded"
        return loaded(wire)

    class Recorder(BareRecorder):
        failed: BaseException | None = None

        def start(self, flower_run_id):
            assert loading.wait(30), "the task was not loading while MLflow started"
            starting.set()
            raise _Started()

        def fail(self, error):
            Recorder.failed = error

    monkeypatch.setattr(server_app, "load_task", load_task)
    monkeypatch.setattr(server_app, "make_recorder", lambda settings: Recorder())
    with pytest.raises(_Started):
        train(_NoLearners(), _Context(), aggregator_settings(SPEC, tmp_path, ""))
    assert isinstance(Recorder.failed, _Started)  # a failed start fails the run, the task's load notwithstanding
