"""After a signal the entrypoint ends the training's MLflow run KILLED, from the id the ServerApp recorded:
only a run that is not over yet, with the reason, and never waiting long on a tracking server that is gone."""

from __future__ import annotations

import socket
import time

import pytest
from mlflow.tracking import MlflowClient

from flops_aggregator import mlflow_run


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A real MLflow store (SQLite) shared by this module's tests: each test makes its own runs."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    return uri, client, client.create_experiment("signal", artifact_location=(root / "artifacts").as_uri())


def test_the_recorded_run_id_is_read_back_and_forgotten_at_the_next_start(tmp_path):
    assert mlflow_run.recorded(tmp_path) is None
    mlflow_run.record(tmp_path, "abc123", 7)
    assert mlflow_run.recorded(tmp_path) == "abc123"
    mlflow_run.forget(tmp_path)
    assert mlflow_run.recorded(tmp_path) is None


def test_a_running_run_ends_killed_with_the_reason(store):
    uri, client, experiment = store
    run_id = client.create_run(experiment).info.run_id
    assert mlflow_run.end_killed(uri, run_id, "signal SIGTERM", bound=30) == "KILLED"
    run = client.get_run(run_id)
    assert run.info.status == "KILLED" and run.info.end_time is not None
    assert run.data.tags[mlflow_run.END_REASON_TAG] == "signal SIGTERM"


def test_a_run_the_serverapp_ended_killed_gets_the_signal_as_its_reason(store):
    uri, client, experiment = store
    own_account = {mlflow_run.END_REASON_TAG: "ServerApp stopped (SystemExit 1)"}
    run_id = client.create_run(experiment, tags=own_account).info.run_id
    client.set_terminated(run_id, "KILLED")
    assert mlflow_run.end_killed(uri, run_id, "signal SIGINT", bound=30) == "KILLED"
    assert client.get_run(run_id).data.tags[mlflow_run.END_REASON_TAG] == "signal SIGINT"


@pytest.mark.parametrize("status", ["FINISHED", "FAILED"])
def test_a_run_that_ended_before_the_signal_keeps_its_status(store, status):
    uri, client, experiment = store
    run_id = client.create_run(experiment).info.run_id
    client.set_terminated(run_id, status)
    assert mlflow_run.end_killed(uri, run_id, "signal SIGTERM", bound=30) == status
    run = client.get_run(run_id)
    assert run.info.status == status
    assert mlflow_run.END_REASON_TAG not in run.data.tags


def test_an_unreachable_tracking_server_costs_at_most_the_bound():
    with socket.socket() as s:  # a port nobody listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # MLflow's client would retry with backoff for minutes.
    started = time.monotonic()
    assert mlflow_run.end_killed(f"http://127.0.0.1:{port}", "abc123", "signal SIGTERM", bound=1.5) is None
    assert time.monotonic() - started < 3
