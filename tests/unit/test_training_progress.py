"""Progress in status: percent done, the last round's time, the estimated time left, learners. Pure."""

from __future__ import annotations

import pytest

from flops_operator.crd import PRINTER_COLUMNS
from flops_operator.models import FLOpsProjectStatus, Phase, parse_project
from flops_operator.plan.desired import desired
from flops_operator.plan.diff import diff
from flops_operator.platforms.base import Observation, ObservedService, ServiceState
from flops_operator.progress import TrainingProgress
from flops_operator.progress_mlflow import progress_from_run
from flops_operator.status import compute_status
from flops_operator.training_state import TrainingOutcome, estimate, human_duration

R, S = ServiceState.running, ServiceState.starting


@pytest.mark.parametrize("round_,total,last,succeeded,expected", [
    (0, 5, None, False, (0, None)),
    (1, 5, 12.4, False, (20, 50)),
    (4, 5, 10.0, False, (80, 10)),
    (5, 5, 10.0, False, (100, 0)),  # all reported; the model is still being registered
    (2, 3, None, False, (66, None)),
    (3, 3, 10.0, True, (100, 0)),
    (1, 3, 10.0, True, (100, 0)),  # succeeded is the truth, whatever was last read
    (7, 5, 1.0, False, (100, 0)),  # a round number past the total (an earlier run's tag) is capped
])
def test_estimate(round_, total, last, succeeded, expected):
    assert estimate(round_, total, last, succeeded=succeeded) == expected


@pytest.mark.parametrize("seconds,text", [(None, None), (0, "0s"), (45, "45s"), (150, "2m30s"), (3720, "1h02m")])
def test_human_duration(seconds, text):
    assert human_duration(seconds) == text


def project(**spec):
    return parse_project({"apiVersion": "flops.oakestra.io/v1alpha1", "kind": "FLOpsProject",
                          "metadata": {"name": "digits", "namespace": "team-a", "uid": "u-1"},
                          "spec": {"task": {"name": "digits-mlp"}, "training": {"rounds": 4},
                                   "learners": {"replicas": 3}, **spec}})


def status_for(p, states, progress, outcome=TrainingOutcome(False)):
    services = {s.name: ObservedService(s.name, s.role, states[s.name], s.spec_hash)
                for s in desired(p, training_done=False) if s.name in states}
    obs = Observation(services)
    wanted = desired(p, training_done=outcome.done)
    return compute_status(p, wanted, obs, diff(wanted, obs.services), progress, FLOpsProjectStatus(),
                          now="2026-11-30T12:00:00Z", outcome=outcome)


def test_training_status_shows_progress_eta_and_learners():
    p = project()
    states = {"artifact-store": R, "tracking-server": R, "aggregator": R, "learner-0": R, "learner-1": R,
              "learner-2": S}
    status = status_for(p, states, TrainingProgress(run_id="r", run_status="RUNNING", round=1,
                                                     last_round_seconds=20.2, learners_answered=2))
    t = status.training
    assert status.phase is Phase.Training
    assert (t.progress, t.progress_percentage, t.last_round_seconds) == ("1/4", 25, 20.2)
    assert (t.estimated_remaining_seconds, t.eta) == (61, "1m01s")
    assert (t.learners_running, t.learners_expected, t.learners_answered) == (2, 3, 2)
    wire = status.to_wire()["training"]
    assert {"progressPercentage", "estimatedRemainingSeconds", "lastRoundSeconds", "learnersRunning",
            "learnersExpected"} <= set(wire)


def test_a_failed_training_has_no_eta_and_a_succeeded_one_is_done():
    p = project()
    progress = TrainingProgress(run_id="r", run_status="FAILED", round=2, last_round_seconds=10.0)
    failed = status_for(p, {"tracking-server": R}, progress, TrainingOutcome(True, False, "boom")).training
    assert (failed.progress_percentage, failed.estimated_remaining_seconds, failed.eta) == (50, None, None)
    assert failed.learners_expected == 0
    finished = TrainingProgress(run_id="r", run_status="FINISHED", round=4, last_round_seconds=10.0)
    done = status_for(p, {"tracking-server": R}, finished, TrainingOutcome(True, True)).training
    assert (done.progress_percentage, done.estimated_remaining_seconds, done.eta) == (100, 0, "0s")


def test_the_gatherer_reads_round_time_and_learners_from_the_run():
    run = {"info": {"run_id": "r", "status": "RUNNING"},
           "data": {"metrics": [{"key": "round_duration_seconds", "value": 8.5},
                                {"key": "num_train_learners", "value": 3.0}], "tags": []}}
    progress = progress_from_run("1", run)
    assert (progress.last_round_seconds, progress.learners_answered) == (8.5, 3)


def test_printer_columns_show_percent_and_eta():
    paths = {c["jsonPath"] for c in PRINTER_COLUMNS}
    assert {".status.training.progressPercentage", ".status.training.eta"} <= paths
