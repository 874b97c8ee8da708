"""Logging ahead: while the learners evaluate the final model, the aggregator logs it; the end keeps it when its
round is the best, and otherwise (or when the training fails) deletes it, so a run holds exactly the model that
was registered. Against a real MLflow store (SQLite, local artifacts)."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from flops_aggregator.best import Best
from flops_aggregator.tracking import MlflowRecorder
from flops_learner.builtin import IrisLogReg
from tests.projects import aggregator_settings

SPEC = {"task": {"name": "iris-logreg"}, "data": {"dataset": "iris"}, "learners": {"replicas": 2},
        "training": {"rounds": 2}, "registry": {"modelName": "ahead"}}


@pytest.fixture(autouse=True)
def artifacts_in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the experiment the recorder creates keeps its artifacts under ./mlruns


@pytest.fixture
def recorder(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri()
    rec = MlflowRecorder(aggregator_settings(SPEC, tmp_path, uri))
    assert not rec.synchronous, "the spec's default round mode logs asynchronously"
    try:
        rec.start(flower_run_id=7)
        yield rec
    finally:
        if mlflow.active_run():
            mlflow.end_run()
        mlflow.set_tracking_uri(previous)


def weights_of(task, seed: int):
    return task.get_weights(task.build_model(seed=seed))


def live_models(rec: MlflowRecorder) -> list:
    client = MlflowClient(rec.settings.tracking_uri)
    experiment = client.get_run(rec.run_id).info.experiment_id
    return [m for m in client.search_logged_models(experiment_ids=[experiment]) if m.source_run_id == rec.run_id]


def registered_weights(uri: str):
    model = mlflow.pytorch.load_model(uri)
    return {k: v.detach().numpy() for k, v in model.state_dict().items()}


def logged_ahead(rec: MlflowRecorder) -> None:
    """log_ahead returns at once (the ServerApp goes on collecting the evaluation); wait for the model here."""
    future, _ = rec.ahead
    round_, info = future.result(timeout=300)
    assert round_ == 2 and info.model_id


def finish_with_best(rec: MlflowRecorder, task, round_: int, weights):
    model = task.build_model(seed=0)
    task.set_weights(model, weights)
    return rec.finish(Best(round_, 0.9, {"eval_accuracy": 0.9}, rec.settings.workdir / "best.npz"), model, task)


def test_the_model_logged_ahead_is_the_one_registered_when_its_round_is_the_best(recorder):
    task = IrisLogReg()
    recorder.prepare(task, task.build_model(seed=0))
    final = weights_of(task, seed=5)
    recorder.log_ahead(2, final)
    logged_ahead(recorder)
    (ahead,) = live_models(recorder)
    registration = finish_with_best(recorder, task, 2, final)
    (kept,) = live_models(recorder)
    assert kept.model_id == ahead.model_id
    version = MlflowClient(recorder.settings.tracking_uri).get_model_version(registration.name, registration.version)
    assert ahead.model_id in version.source
    assert "log_ahead" in recorder.seconds and recorder.seconds["log_model"] < recorder.seconds["log_ahead"]


def test_an_earlier_best_round_replaces_the_model_logged_ahead(recorder):
    task = IrisLogReg()
    recorder.prepare(task, task.build_model(seed=0))
    recorder.log_ahead(2, weights_of(task, seed=5))
    logged_ahead(recorder)
    (ahead,) = live_models(recorder)
    best = weights_of(task, seed=6)
    registration = finish_with_best(recorder, task, 1, best)
    (kept,) = live_models(recorder)
    assert kept.model_id != ahead.model_id
    for name, values in registered_weights(registration.uri).items():
        np.testing.assert_array_equal(values, best[name])


def test_a_training_that_fails_after_logging_ahead_keeps_no_model(recorder):
    task = IrisLogReg()
    recorder.prepare(task, task.build_model(seed=0))
    recorder.log_ahead(2, weights_of(task, seed=5))
    # Failing while the model is still being logged in the background: the end waits for it, then deletes it.
    recorder.fail(RuntimeError("the final evaluate lost every learner"))
    assert live_models(recorder) == []
    assert MlflowClient(recorder.settings.tracking_uri).get_run(recorder.run_id).info.status == "FAILED"


def test_synchronous_logging_does_not_log_ahead(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri()
    standard = {**SPEC, "training": {**SPEC["training"], "roundMode": "standard"}}
    rec = MlflowRecorder(aggregator_settings(standard, tmp_path, uri))
    assert rec.synchronous
    try:
        rec.start(flower_run_id=8)
        task = IrisLogReg()
        rec.prepare(task, task.build_model(seed=0))
        rec.log_ahead(2, weights_of(task, seed=5))
        assert rec.ahead is None and live_models(rec) == []
    finally:
        if mlflow.active_run():
            mlflow.end_run()
        mlflow.set_tracking_uri(previous)


class OldStyleIris(IrisLogReg):
    """A user task written before log_model took `model_id`: it logs into the active run."""

    def log_model(self, model, *, name, input_example, signature, pip_requirements):
        return super().log_model(model, name=name, input_example=input_example, signature=signature,
                                 pip_requirements=pip_requirements)


class FailingExportIris(IrisLogReg):
    def log_model(self, model, *, model_id=None, **inputs):
        raise RuntimeError("the export failed")


@pytest.mark.parametrize("task_class", [IrisLogReg, OldStyleIris], ids=["model_id", "old-style-task"])
@pytest.mark.parametrize("best_round", [2, 1], ids=["kept-ahead", "logged-at-the-end"])
def test_the_model_is_the_runs_output_with_its_params_and_the_best_rounds_metrics(recorder, task_class, best_round):
    task = task_class()
    client = MlflowClient(recorder.settings.tracking_uri)
    # A step-0 metric (a system metric's first sample): MLflow's log_model into the active run copies it onto the
    # model, being the model's default step; a model initialized by the aggregator carries only its evaluation.
    mlflow.log_metric("system/cpu_utilization_percentage", 12.0, step=0)
    recorder.prepare(task, task.build_model(seed=0))
    recorder.log_ahead(2, weights_of(task, seed=5))
    logged_ahead(recorder)
    registration = finish_with_best(recorder, task, best_round, weights_of(task, seed=5))
    (kept,) = live_models(recorder)
    run = client.get_run(recorder.run_id)
    assert kept.source_run_id == recorder.run_id
    step = best_round if task_class is IrisLogReg else 0  # MLflow's default step for a model logged into a run
    assert (kept.model_id, step) in {(o.model_id, o.step) for o in run.outputs.model_outputs}
    assert kept.params == {key: str(value) for key, value in recorder.settings.params().items()}
    attached = {m.key for m in client.get_logged_model(kept.model_id).metrics or []}
    assert {"best_round", "best_eval_accuracy"} <= attached
    if task_class is IrisLogReg:
        assert "system/cpu_utilization_percentage" not in attached
    assert client.get_model_version(registration.name, registration.version).run_id == recorder.run_id


def test_a_model_whose_logging_fails_leaves_no_logged_model_behind(recorder):
    task = FailingExportIris()
    recorder.prepare(task, task.build_model(seed=0))
    recorder.log_ahead(2, weights_of(task, seed=5))
    with pytest.raises(RuntimeError, match="the export failed"):
        finish_with_best(recorder, task, 2, weights_of(task, seed=5))  # ahead failed, so logged again: fails
    assert live_models(recorder) == []
