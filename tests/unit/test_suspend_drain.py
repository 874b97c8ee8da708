"""spec.suspend stops a training at its next round boundary: while the aggregator runs a RUNNING run, its services
stay (drain) and the run is asked to stop once; an aggregator that exited after such a stop runs again when the
suspension is withdrawn before it was removed (rerun). Pure decisions, table-driven."""

from __future__ import annotations

import pytest

from flops_operator.models import FLOpsProjectStatus
from flops_operator.models.edits import training_identity
from flops_operator.models.status import TrainingStatus
from flops_operator.plan.desired import desired
from flops_operator.plan.diff import Create, Remove, diff
from flops_operator.plan.services import Role
from flops_operator.platforms.base import Observation, ObservedService, ServiceState
from flops_operator.progress import TrainingProgress
from flops_operator.training_state import Drain, TrainingOutcome, drain, rerun
from tests.projects import project

NOW = "2026-11-30T12:10:00Z"
SPEC = {"task": {"name": "digits-mlp"}, "learners": {"replicas": 2},
        "training": {"rounds": 5, "roundTimeoutSeconds": 100}}  # drain bound 3 x 100 + 60 = 360 s
SUSPENDED = project({**SPEC, "suspend": True})
RUNNING_RUN = TrainingProgress(run_id="r", run_status="RUNNING", round=2)
ASKED = TrainingProgress(run_id="r", run_status="RUNNING", round=2, stop_requested="spec.suspend")


def seen(state: ServiceState) -> Observation:
    return Observation({"aggregator": ObservedService("aggregator", Role.aggregator, state, spec_hash="h")})


def asked_at(when: str | None, spec=SUSPENDED) -> FLOpsProjectStatus:
    return FLOpsProjectStatus(training=TrainingStatus(identity=training_identity(spec.spec), suspend_requested_at=when))


@pytest.mark.parametrize("case, proj, observation, progress, previous, outcome, expected", [
    ("not suspended", project(SPEC), seen(ServiceState.running), RUNNING_RUN, asked_at(None), TrainingOutcome(False),
     Drain()),
    ("first look: keep and ask", SUSPENDED, seen(ServiceState.running), RUNNING_RUN, asked_at(None),
     TrainingOutcome(False), Drain(True, True, NOW)),
    ("asked already: keep, do not ask again", SUSPENDED, seen(ServiceState.running), ASKED,
     asked_at("2026-11-30T12:09:00Z"), TrainingOutcome(False), Drain(True, False, "2026-11-30T12:09:00Z")),
    ("the request is not seen yet: ask again", SUSPENDED, seen(ServiceState.starting), RUNNING_RUN,
     asked_at("2026-11-30T12:09:00Z"), TrainingOutcome(False), Drain(True, True, "2026-11-30T12:09:00Z")),
    ("360 s: still within the bound", SUSPENDED, seen(ServiceState.running), ASKED,
     asked_at("2026-11-30T12:04:00Z"), TrainingOutcome(False), Drain(True, False, "2026-11-30T12:04:00Z")),
    ("past the bound: removed at once", SUSPENDED, seen(ServiceState.running), ASKED,
     asked_at("2026-11-30T12:03:59Z"), TrainingOutcome(False), Drain(requested_at="2026-11-30T12:03:59Z")),
    ("the run stopped (KILLED)", SUSPENDED, seen(ServiceState.running),
     TrainingProgress(run_id="r", run_status="KILLED", round=3), asked_at("2026-11-30T12:09:00Z"),
     TrainingOutcome(False), Drain()),
    ("the run finished (asked too late): it ends by itself", SUSPENDED, seen(ServiceState.running),
     TrainingProgress(run_id="r", run_status="FINISHED", round=5), asked_at("2026-11-30T12:09:00Z"),
     TrainingOutcome(False), Drain(True, False, "2026-11-30T12:09:00Z")),
    ("the aggregator exited", SUSPENDED, seen(ServiceState.completed), ASKED, asked_at("2026-11-30T12:09:00Z"),
     TrainingOutcome(False), Drain()),
    ("MLflow unreadable: no way to ask", SUSPENDED, seen(ServiceState.running), None, asked_at(None),
     TrainingOutcome(False), Drain()),
    ("no aggregator", SUSPENDED, Observation({}), RUNNING_RUN, asked_at(None), TrainingOutcome(False), Drain()),
    ("training over", SUSPENDED, seen(ServiceState.running), RUNNING_RUN, asked_at(None), TrainingOutcome(True, True),
     Drain()),
    ("a request of another training identity does not count", SUSPENDED, seen(ServiceState.running), ASKED,
     FLOpsProjectStatus(training=TrainingStatus(identity="other", suspend_requested_at="2026-11-30T11:00:00Z")),
     TrainingOutcome(False), Drain(True, False, NOW)),
])
def test_drain(case, proj, observation, progress, previous, outcome, expected):
    assert drain(proj, observation, progress, previous, outcome, NOW) == expected, case


KILLED = TrainingProgress(run_id="r", run_status="KILLED", round=3, checkpoint_round=3)


@pytest.mark.parametrize("case, proj, state, progress, outcome, expected", [
    ("stopped for a suspension that is over", project(SPEC), ServiceState.completed, KILLED, TrainingOutcome(False),
     {"aggregator"}),
    ("still suspended: the plan removes it", SUSPENDED, ServiceState.completed, KILLED, TrainingOutcome(False), set()),
    ("finished its training", project(SPEC), ServiceState.completed,
     TrainingProgress(run_id="r", run_status="FINISHED"), TrainingOutcome(True, True), set()),
    ("still running", project(SPEC), ServiceState.running, KILLED, TrainingOutcome(False), set()),
    ("MLflow unreadable", project(SPEC), ServiceState.completed, None, TrainingOutcome(False), set()),
])
def test_rerun(case, proj, state, progress, outcome, expected):
    assert rerun(proj, seen(state), progress, outcome) == frozenset(expected), case


def test_a_rerun_removes_the_finished_service_and_the_next_pass_creates_it():
    plan = desired(project(SPEC), training_done=False)
    aggregator = next(s for s in plan if s.name == "aggregator")
    done = ObservedService("aggregator", Role.aggregator, ServiceState.completed, spec_hash=aggregator.spec_hash)
    running = {s.name: ObservedService(s.name, s.role, ServiceState.running, spec_hash=s.spec_hash) for s in plan}
    assert Remove("aggregator") in diff(plan, {**running, "aggregator": done}, frozenset({"aggregator"}))
    assert diff(plan, {**running, "aggregator": done}) == [], "without rerun a finished one-shot of this spec stays"
    without = {k: v for k, v in running.items() if k != "aggregator"}
    assert Create(aggregator) in diff(plan, without, frozenset({"aggregator"}))


def test_draining_keeps_the_training_services_in_the_plan():
    names = {s.name for s in desired(SUSPENDED, training_done=False, draining=True)}
    assert {"aggregator", "learner-0", "learner-1"} <= names
    assert not {"aggregator", "learner-0"} & {s.name for s in desired(SUSPENDED, training_done=False)}
