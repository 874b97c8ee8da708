"""Registration: the champion alias moves only to a version that beats the current holder."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

from flops_aggregator.registry import Holder, holder_value, look_up, register_and_promote
from flops_aggregator.model_logging import task_requirements
from flops_learner.builtin import IrisLogReg

NAME, ALIAS = "iris-registry", "champion"


@pytest.fixture
def store(tmp_path):
    """A real MLflow store: SQLite backend and local artifacts in a temp dir."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.create_experiment("registry", artifact_location=(tmp_path / "artifacts").as_uri())
    try:
        yield MlflowClient(uri), experiment
    finally:
        if mlflow.active_run():
            mlflow.end_run()
        mlflow.set_tracking_uri(previous)


def train_and_register(store, accuracy: float, mode: str = "max", metric: str = "eval_accuracy",
                       looked_up_ahead: bool = False):
    """looked_up_ahead: the holder is looked up before the model is logged, as the aggregator does while its
    final model uploads."""
    client, experiment = store
    task = IrisLogReg()
    model = task.build_model(seed=1)
    example = task.input_example()
    with mlflow.start_run(experiment_id=experiment) as run:
        mlflow.log_metric(f"best_{metric}", accuracy)
        holder = look_up(client, NAME, ALIAS, metric) if looked_up_ahead else None
        info = task.log_model(model, name="model", input_example=example,
                              signature=infer_signature(example, task.predict(model, example)),
                              pip_requirements=task_requirements(task))
        return register_and_promote(client, info.model_uri, info.model_id, run.info.run_id, NAME, ALIAS,
                                    metric, mode, accuracy, holder)


@pytest.mark.parametrize("ahead", [False, True], ids=["looked-up-when-registering", "looked-up-ahead"])
def test_champion_alias_is_not_moved_by_a_worse_model_and_moves_to_a_better_one(store, ahead):
    client, _ = store
    first = train_and_register(store, 0.80, looked_up_ahead=ahead)
    assert first.promoted and first.previous_value is None
    assert str(client.get_model_version_by_alias(NAME, ALIAS).version) == first.version

    worse = train_and_register(store, 0.70, looked_up_ahead=ahead)
    assert not worse.promoted and worse.previous_value == pytest.approx(0.80)
    assert str(client.get_model_version_by_alias(NAME, ALIAS).version) == first.version
    assert int(worse.version) == int(first.version) + 1  # registered all the same

    tie = train_and_register(store, 0.80, looked_up_ahead=ahead)
    assert not tie.promoted
    assert str(client.get_model_version_by_alias(NAME, ALIAS).version) == first.version

    better = train_and_register(store, 0.90, looked_up_ahead=ahead)
    assert better.promoted
    assert str(client.get_model_version_by_alias(NAME, ALIAS).version) == better.version
    assert better.uri == f"models:/{NAME}/{better.version}"

    champion = mlflow.pyfunc.load_model(f"models:/{NAME}@{ALIAS}")
    assert np.asarray(champion.predict(IrisLogReg().input_example())).shape == (5, 3)


def test_min_mode_promotes_lower_values(store):
    client, _ = store
    first = train_and_register(store, 0.5, mode="min", metric="eval_loss")
    higher = train_and_register(store, 0.6, mode="min", metric="eval_loss")
    lower = train_and_register(store, 0.4, mode="min", metric="eval_loss")
    assert first.promoted and not higher.promoted and lower.promoted
    assert holder_value(client, NAME, ALIAS, "eval_loss") == (lower.version, pytest.approx(0.4))


def test_looking_up_a_new_name_creates_the_registered_model_with_no_holder(store):
    client, _ = store
    assert look_up(client, NAME, ALIAS, "eval_accuracy") == Holder(None, None)
    assert client.get_registered_model(NAME).name == NAME
    assert look_up(client, NAME, ALIAS, "eval_accuracy") == Holder(None, None)  # a second look creates nothing
