"""Checkpoints through a real MLflow store (SQLite, local artifacts): uploaded in alternating slots with a tag
that moves only after the upload, found and read back by the next aggregator of the same training, which takes
the run over; a checkpoint the store lost fails the start, saying which."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from flops_aggregator import checkpoint, checkpoint_mlflow
from flops_aggregator.tracking import MlflowRecorder
from tests.projects import aggregator_settings

SPEC = {"task": {"name": "iris-logreg"}, "data": {"dataset": "iris"}, "learners": {"replicas": 2},
        "training": {"rounds": 4}}


@pytest.fixture
def store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri()
    try:
        yield uri
    finally:
        if mlflow.active_run():
            mlflow.end_run()
        mlflow.set_tracking_uri(previous)


def workdir(path):
    """The entrypoint makes the aggregator's workdir."""
    path.mkdir(parents=True, exist_ok=True)
    return path


def ckpt(round_):
    best = checkpoint.Best(round_, 0.5 + round_ / 10, {"eval_accuracy": 0.5 + round_ / 10}, {"w": np.full(2, -1.0)})
    return checkpoint.Checkpoint(round_, {"w": np.full(2, float(round_))}, best)


def test_a_stopped_training_is_taken_over_from_its_last_checkpoint(store, tmp_path):
    first = MlflowRecorder(aggregator_settings(SPEC, workdir(tmp_path / "a"), store))
    assert first.start(1) is None
    first.checkpoint(ckpt(1))
    assert first.uploader.wait(30)
    first.checkpoint(ckpt(2))
    assert first.uploader.wait(30) and first.uploader.error is None
    client = MlflowClient(store)
    tags = client.get_run(first.run_id).data.tags
    assert tags[checkpoint_mlflow.TAG] == "2:b"  # round 1 went to slot a, round 2 to b
    first.fail(SystemExit(143))  # stopped from outside: the run ends KILLED, resumable
    assert client.get_run(first.run_id).info.status == "KILLED"

    second = MlflowRecorder(aggregator_settings({**SPEC, "learners": {"replicas": 3}}, workdir(tmp_path / "b"), store))
    resumed = second.start(2)
    assert second.run_id == first.run_id and resumed.round == 2
    assert resumed.weights["w"][0] == 2.0 and resumed.best.round == 2 and resumed.best.weights["w"][0] == -1.0
    run = client.get_run(first.run_id)
    assert run.info.status == "RUNNING" and run.data.tags[checkpoint.RESUMED_TAG] == "2"
    assert run.data.params["num_learners"] == "2"  # params stay (they cannot change); no error for 3 learners
    second.checkpoint(ckpt(3))
    assert second.uploader.wait(30)
    assert client.get_run(first.run_id).data.tags[checkpoint_mlflow.TAG] == "3:a"
    mlflow.end_run("FAILED")

    # A FAILED run is not taken over: a new run starts.
    third = MlflowRecorder(aggregator_settings(SPEC, workdir(tmp_path / "c"), store))
    assert third.start(3) is None and third.run_id != first.run_id
    mlflow.end_run("FINISHED")


def test_another_training_s_checkpoint_is_never_taken(store, tmp_path):
    first = MlflowRecorder(aggregator_settings(SPEC, workdir(tmp_path / "a"), store))
    first.start(1)
    first.checkpoint(ckpt(1))
    assert first.uploader.wait(30)
    first.fail(SystemExit(143))
    other = MlflowRecorder(aggregator_settings({**SPEC, "training": {"rounds": 5}}, workdir(tmp_path / "b"), store))
    assert other.start(2) is None and other.run_id != first.run_id
    mlflow.end_run("FINISHED")


def test_a_checkpoint_the_store_lost_fails_the_start_naming_it(store, tmp_path):
    first = MlflowRecorder(aggregator_settings(SPEC, workdir(tmp_path / "a"), store))
    first.start(1)
    first.checkpoint(ckpt(1))
    assert first.uploader.wait(30)
    first.fail(SystemExit(143))
    artifacts = MlflowClient(store).get_run(first.run_id).info.artifact_uri.removeprefix("file://")
    shutil.rmtree(f"{artifacts}/checkpoint")
    second = MlflowRecorder(aggregator_settings(SPEC, workdir(tmp_path / "b"), store))
    with pytest.raises(RuntimeError, match=r"checkpoint of round 1 of MLflow run \w+ \(checkpoint/a\) cannot be read"):
        second.start(2)


def test_a_stop_request_is_seen_after_an_upload_and_a_suspension_ends_resumable(store, tmp_path):
    """spec.suspend: the operator tags the running run; the aggregator reads it with the next checkpoint upload,
    stops after that round with its checkpoint in, and the run ends KILLED with the round in its end reason. The
    next aggregator takes it over and the request is gone (it would stop again at once)."""
    first = MlflowRecorder(aggregator_settings(SPEC, workdir(tmp_path / "a"), store))
    first.start(1)
    first.checkpoint(ckpt(1))
    assert first.uploader.wait(30)
    assert first.stop_requested() is None
    client = MlflowClient(store)
    client.set_tag(first.run_id, checkpoint_mlflow.STOP_TAG, "spec.suspend")
    first.checkpoint(ckpt(2))
    assert first.uploader.wait(30)
    assert first.stop_requested() == "spec.suspend"
    first.checkpoint(ckpt(3))
    first.suspend(3, "spec.suspend")
    run = client.get_run(first.run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags["flops.end_reason"] == "suspended after round 3 (spec.suspend)"
    assert run.data.tags[checkpoint_mlflow.TAG].startswith("3:"), "the suspension waited for its round's checkpoint"

    second = MlflowRecorder(aggregator_settings(SPEC, workdir(tmp_path / "b"), store))
    resumed = second.start(2)
    assert second.run_id == first.run_id and resumed.round == 3
    tags = client.get_run(first.run_id).data.tags
    assert checkpoint_mlflow.STOP_TAG not in tags and "flops.end_reason" not in tags
    second.checkpoint(ckpt(4))
    assert second.uploader.wait(30) and second.stop_requested() is None
    mlflow.end_run("FINISHED")


class _CountingClient:
    """The MLflow calls the uploader makes, recorded."""

    def __init__(self):
        self.uploads, self.tags = [], {}

    def log_artifacts(self, run_id, local_dir, artifact_path):
        self.uploads.append(checkpoint.load(Path(local_dir)).round)

    def set_tag(self, run_id, key, value):
        self.tags[key] = value

    def get_run(self, run_id):
        return SimpleNamespace(data=SimpleNamespace(tags=dict(self.tags)))


def test_uploads_are_spaced_and_a_waiting_stop_takes_the_latest_at_once(monkeypatch):
    monkeypatch.setattr(checkpoint_mlflow, "STOP_POLL_SECONDS", 3600)  # only a round boundary makes it look
    client = _CountingClient()
    uploader = checkpoint_mlflow.Uploader(client, "run", None, interval=3600)
    try:
        uploader.offer(ckpt(1))
        assert uploader.wait(30) and client.uploads == [1]  # the first goes at once
        for round_ in (2, 3, 4):  # rounds of a fast training, well inside the interval
            uploader.offer(ckpt(round_))
        time.sleep(1)  # without the spacing, round 2 would be going out by now
        assert client.uploads == [1]
        # A stop (wait) uploads the latest at once, and only it.
        assert uploader.wait(30) and client.uploads == [1, 4]
        assert client.tags[checkpoint_mlflow.TAG].startswith("4:")
        # The stop request is still read at every round boundary, upload or not (not only every 5 s).
        client.tags[checkpoint_mlflow.STOP_TAG] = "spec.suspend"
        uploader.offer(ckpt(5))
        deadline = time.monotonic() + 30
        while uploader.stop_request is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert uploader.stop_request == "spec.suspend" and client.uploads == [1, 4]
    finally:
        uploader.close()
