"""Suspend and resume end to end on the local platform (real MLflow, FTP, Flower processes), driven through the
reconcile step the adapters take, with the spec edited as a GitOps tool would: a training suspended after its
second round stops at a round boundary (the aggregator finishes the round, saves its checkpoint, ends the run
KILLED saying after which round, and exits by itself) and, resumed, ends with the same total rounds, one MLflow
run whose steps continue from that round, and a final accuracy within 0.02 of an uninterrupted training of the
same spec."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from flops_operator.models import FLOpsProjectStatus, Phase
from tests.e2e.driving import BOUND_SECONDS, Driver, as_reader, edited, reader_password, ready

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROUNDS = 8  # room for the stop to land mid-training: it comes at the round boundary after it is seen


def manifest(name: str) -> dict:
    return {"apiVersion": "flops.oakestra.io/v1alpha1", "kind": "FLOpsProject",
            "metadata": {"name": name, "namespace": "e2e", "uid": f"uid-{name}", "generation": 1},
            "spec": {"platform": "local", "task": {"name": "digits-mlp"},
                     "training": {"rounds": ROUNDS, "roundTimeoutSeconds": 600, "localEpochs": 2},
                     "learners": {"replicas": 2}, "tracking": {"artifactStore": {"type": "ftp"}}}}


def history(status: FLOpsProjectStatus, name: str, password: str) -> tuple[list, dict[int, float], dict]:
    with as_reader(password):
        client = MlflowClient(status.mlflow.tracking_uri)
        runs = client.search_runs([status.mlflow.experiment_id])
        accuracy = client.get_metric_history(status.mlflow.run_id, "eval_accuracy")
        tags = client.get_run(status.mlflow.run_id).data.tags
    return runs, {m.step: m.value for m in accuracy}, tags


async def run(root: Path, name: str, suspend_after: int | None) -> tuple[FLOpsProjectStatus, list, dict, dict]:
    driver = Driver(root / name, manifest(name))
    try:
        stopped_after = None
        if suspend_after is not None:
            await driver.until(lambda s: s.training.round >= suspend_after, f"round {suspend_after} reported")
            driver.doc = edited(driver.doc, suspend=True)
            suspending = await driver.until(lambda s: s.phase in (Phase.Suspended, Phase.Completed), "Suspending")
            assert suspending.phase is Phase.Suspended, f"the suspension did not land: {suspending.message}"
            assert suspending.message.startswith("suspending: the training stops at its next round boundary")
            suspended = await driver.until(lambda s: ready(s, Phase.Suspended) or s.phase is Phase.Completed,
                                           "Suspended")
            assert suspended.phase is Phase.Suspended, f"the suspension did not land: {suspended.message}"
            assert {c.name for c in suspended.components} == {"artifact-store", "tracking-server"}
            with as_reader(reader_password(driver)):
                tags = MlflowClient(suspended.mlflow.tracking_uri).get_run(suspended.mlflow.run_id).data.tags
            reason = tags["flops.end_reason"]
            assert reason.startswith("suspended after round "), f"not stopped at a round boundary: {reason}"
            stopped_after = int(reason.split()[3])
            assert suspend_after <= stopped_after < ROUNDS
            assert tags["flops.checkpoint"].split(":")[0] == str(stopped_after), "its round's checkpoint is in"
            assert suspended.training.round == stopped_after
            driver.doc = edited(driver.doc, suspend=False)
        status = await driver.until(lambda s: ready(s, Phase.Completed), "Completed")
        runs, accuracy, tags = history(status, name, reader_password(driver))
        if stopped_after is not None:
            assert tags["flops.resumed_from_round"] == str(stopped_after), "resumed where it stopped"
        return status, runs, accuracy, tags
    finally:
        await driver.close()


@pytest.mark.timeout(2 * BOUND_SECONDS)
async def test_suspended_and_resumed_training_ends_as_an_uninterrupted_one(tmp_path):
    resumed, runs, accuracy, tags = await run(tmp_path, "paused", suspend_after=2)
    assert resumed.training.round == ROUNDS and resumed.training.progress == f"{ROUNDS}/{ROUNDS}"
    assert len(runs) == 1, "the resumed training went on in the same MLflow run"
    assert sorted(accuracy) == list(range(1, ROUNDS + 1)), "MLflow steps continue across the suspension"
    assert "flops.end_reason" not in tags and "flops.stop.requested" not in tags, "the resumed run is not stopped"
    assert resumed.model.version is not None

    whole, _, whole_accuracy, _ = await run(tmp_path, "whole", suspend_after=None)
    best = resumed.training.best_metrics["eval_accuracy"]
    assert abs(best - whole.training.best_metrics["eval_accuracy"]) <= 0.02, (accuracy, whole_accuracy)
