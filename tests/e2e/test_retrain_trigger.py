"""Retraining on purpose, end to end on the local platform (real MLflow, FTP, Flower processes): a completed
project whose spec.training.trigger is edited trains again, as a new MLflow run of a new training identity, and
registers a second version; the alias moves to it only if it beats the version holding it. An edit that does not
define training (deletionPolicy) after Completed starts nothing."""

from __future__ import annotations

import copy

import pytest
from mlflow.tracking import MlflowClient

from flops_operator.models import FLOpsProjectStatus, Phase
from tests.e2e.driving import BOUND_SECONDS, Driver, as_reader, edited, reader_password, ready

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

METRIC_VALUE_TAG = "flops.metric_value"  # flops_aggregator.registry: each version's value of the deciding metric


def manifest() -> dict:
    return {"apiVersion": "flops.oakestra.io/v1alpha1", "kind": "FLOpsProject",
            "metadata": {"name": "retrain", "namespace": "e2e", "uid": "uid-retrain", "generation": 1},
            "spec": {"platform": "local", "task": {"name": "digits-mlp"},
                     "training": {"rounds": 2, "roundTimeoutSeconds": 600, "localEpochs": 1},
                     "learners": {"replicas": 2}, "tracking": {"artifactStore": {"type": "ftp"}}}}


def with_trigger(doc: dict, trigger: str) -> dict:
    training = copy.deepcopy(doc["spec"]["training"])
    training["trigger"] = trigger
    return edited(doc, training=training)


def completed(status: FLOpsProjectStatus) -> bool:
    return ready(status, Phase.Completed)


@pytest.mark.timeout(3 * BOUND_SECONDS)
async def test_a_trigger_edit_trains_again_and_the_alias_moves_only_to_a_better_model(tmp_path):
    driver = Driver(tmp_path / "retrain", manifest())
    try:
        first = await driver.until(completed, "the first training Completed")
        assert first.model.version == "1" and first.model.promoted is True

        driver.doc = edited(driver.doc, deletionPolicy="Orphan")
        kept = await driver.until(lambda s: s.observed_generation == 2 and completed(s), "the Orphan edit applied")
        assert kept.training.identity == first.training.identity and kept.mlflow.run_id == first.mlflow.run_id
        assert kept.model.version == "1", "an edit that does not define training trained again"

        driver.doc = with_trigger(driver.doc, "retrain-1")
        second = await driver.until(lambda s: completed(s) and s.training.identity != first.training.identity,
                                    "the triggered training Completed")
        assert second.mlflow.run_id != first.mlflow.run_id, "the trigger did not start a new MLflow run"
        assert second.training.round == 2 and second.model.version == "2"

        with as_reader(reader_password(driver)):
            client = MlflowClient(second.mlflow.tracking_uri)
            runs = {r.info.run_id: r for r in client.search_runs([second.mlflow.experiment_id])}
            versions = {v.version: v for v in client.search_model_versions(f"name='{second.model.name}'")}
            holder = client.get_model_version_by_alias(second.model.name, second.model.alias).version
    finally:
        await driver.close()

    assert set(runs) == {first.mlflow.run_id, second.mlflow.run_id}
    assert {r.info.status for r in runs.values()} == {"FINISHED"}
    assert {runs[first.mlflow.run_id].data.tags["flops.training.id"],
            runs[second.mlflow.run_id].data.tags["flops.training.id"]} == {first.training.identity,
                                                                           second.training.identity}
    assert set(versions) == {"1", "2"}
    value = {v: float(versions[v].tags[METRIC_VALUE_TAG]) for v in versions}
    better = value["2"] > value["1"]  # eval_accuracy, mode max
    assert holder == ("2" if better else "1"), f"alias on version {holder} with values {value}"
    assert second.model.promoted is better
