"""The model logger: with a tracking server, the aggregator forks a child that rehearses the export (off the
ServerApp's GIL) and logs the final model; the child leaves with the training, and a dead child only costs the
head start. Against a real `mlflow server` over HTTP (a local store is never forked with)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from flops_aggregator import model_logger
from flops_aggregator.best import Best
from flops_aggregator.tracking import MlflowRecorder
from flops_learner.builtin import IrisLogReg
from tests.projects import aggregator_settings

SPEC = {"task": {"name": "iris-logreg"}, "data": {"dataset": "iris"}, "learners": {"replicas": 2},
        "training": {"rounds": 2}, "registry": {"modelName": "forked"}}
BOUND_SECONDS = 120  # a bound for hangs, not a timing


class PidRecordingIris(IrisLogReg):
    """Writes the pid of the process that rehearses its export."""

    def __init__(self, where: Path):
        self.where = where

    def rehearse_log_model(self, model, **inputs) -> None:
        self.where.write_text(str(os.getpid()))
        super().rehearse_log_model(model, **inputs)


class StuckRehearsalIris(IrisLogReg):
    """A child that never gets ready (as one would that waits on a lock another thread held at the fork)."""

    def rehearse_log_model(self, model, **inputs) -> None:
        time.sleep(BOUND_SECONDS)


@pytest.fixture
def recorder(tmp_path, mlflow_server):
    previous = mlflow.get_tracking_uri()
    rec = MlflowRecorder(aggregator_settings(SPEC, tmp_path, mlflow_server.uri))
    try:
        rec.start(flower_run_id=9)
        yield rec
    finally:
        if rec.logger is not None:
            rec.logger.close()
        if mlflow.active_run():
            mlflow.end_run()
        mlflow.set_tracking_uri(previous)


def gone(pid: int) -> bool:
    try:
        return os.waitpid(pid, os.WNOHANG)[0] == pid
    except ChildProcessError:  # reaped already
        return True


def wait_gone(pid: int) -> None:
    deadline = time.monotonic() + BOUND_SECONDS
    while not gone(pid):
        assert time.monotonic() < deadline, f"the model logger {pid} is still there"
        time.sleep(0.1)


def finish(rec: MlflowRecorder, task, round_: int, seed: int):
    model = task.build_model(seed=seed)
    return rec.finish(Best(round_, 0.9, {"eval_accuracy": 0.9}, rec.settings.workdir / "best.npz"), model, task)


def live_models(rec: MlflowRecorder) -> list:
    client = MlflowClient(rec.settings.tracking_uri)
    return [m for m in client.search_logged_models(experiment_ids=[rec.experiment_id])
            if m.source_run_id == rec.run_id]


def only_the_registered_model(rec: MlflowRecorder, registration):
    """The run keeps one model, the one registered; returns it."""
    (kept,) = live_models(rec)
    version = MlflowClient(rec.settings.tracking_uri).get_model_version(registration.name, registration.version)
    assert kept.model_id in version.source
    return kept


def test_a_forked_child_rehearses_logs_the_model_ahead_and_leaves_with_the_training(recorder, tmp_path):
    task = PidRecordingIris(tmp_path / "rehearsed-by")
    recorder.prepare(task, task.build_model(seed=0))
    child = recorder.logger.pid
    assert child != os.getpid()
    recorder.log_ahead(2, task.get_weights(task.build_model(seed=5)))
    round_, info = recorder.ahead[0].result(timeout=BOUND_SECONDS)
    assert round_ == 2
    assert int((tmp_path / "rehearsed-by").read_text()) == child
    registration = finish(recorder, task, 2, seed=5)
    assert only_the_registered_model(recorder, registration).model_id == info.model_id
    assert recorder.logger is None and gone(child)  # finish reaped it
    assert MlflowClient(recorder.settings.tracking_uri).get_run(recorder.run_id).info.status == "FINISHED"


def test_a_best_round_other_than_the_last_is_logged_by_the_child_too(recorder, tmp_path):
    task = PidRecordingIris(tmp_path / "rehearsed-by")
    recorder.prepare(task, task.build_model(seed=0))
    recorder.log_ahead(2, task.get_weights(task.build_model(seed=5)))
    recorder.ahead[0].result(timeout=BOUND_SECONDS)
    registration = finish(recorder, task, 1, seed=6)
    only_the_registered_model(recorder, registration)
    weights = mlflow.pytorch.load_model(registration.uri).state_dict()
    expected = task.get_weights(task.build_model(seed=6))
    assert all((weights[name].numpy() == value).all() for name, value in expected.items())


def test_a_dead_child_leaves_the_model_to_the_serverapp(recorder, tmp_path):
    task = PidRecordingIris(tmp_path / "rehearsed-by")
    recorder.prepare(task, task.build_model(seed=0))
    child = recorder.logger.pid
    os.kill(child, signal.SIGKILL)
    wait_gone(child)
    recorder.log_ahead(2, task.get_weights(task.build_model(seed=5)))
    with pytest.raises(Exception, match="model logger"):
        recorder.ahead[0].result(timeout=BOUND_SECONDS)
    registration = finish(recorder, task, 2, seed=5)
    only_the_registered_model(recorder, registration)


def test_the_child_leaves_when_the_serverapp_is_gone(recorder, tmp_path):
    task = PidRecordingIris(tmp_path / "rehearsed-by")
    recorder.prepare(task, task.build_model(seed=0))
    child = recorder.logger.pid
    recorder.logger.conn.close()  # what the ServerApp's exit does to the child's pipe
    recorder.logger.closed = True
    wait_gone(child)


def test_a_failed_training_ends_the_child_and_keeps_no_model(recorder, tmp_path):
    task = PidRecordingIris(tmp_path / "rehearsed-by")
    recorder.prepare(task, task.build_model(seed=0))
    child = recorder.logger.pid
    recorder.log_ahead(2, task.get_weights(task.build_model(seed=5)))
    recorder.fail(RuntimeError("the final evaluate lost every learner"))
    assert recorder.logger is None and gone(child)
    assert live_models(recorder) == []
    assert MlflowClient(recorder.settings.tracking_uri).get_run(recorder.run_id).info.status == "FAILED"


def test_a_child_not_ready_in_time_is_killed_and_the_serverapp_logs_the_model(recorder, monkeypatch):
    monkeypatch.setattr(model_logger, "READY_BOUND_SECONDS", 1.0)
    task = StuckRehearsalIris()
    recorder.prepare(task, task.build_model(seed=0))
    child = recorder.logger.pid
    recorder.log_ahead(2, task.get_weights(task.build_model(seed=5)))
    with pytest.raises(model_logger.LoggerGone, match="not ready"):
        recorder.ahead[0].result(timeout=BOUND_SECONDS)
    wait_gone(child)
    registration = finish(recorder, task, 2, seed=5)
    only_the_registered_model(recorder, registration)
