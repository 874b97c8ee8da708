"""The kopf adapter's pure decisions: status merge patches, Events, problem status, backoff."""

from __future__ import annotations

import pytest

from flops_operator.adapters.kopf_status import (
    EventSpec, backoff_seconds, describe, events_for, merge_patch, problem_status)
from flops_operator.models import Condition, FLOpsProjectStatus, Phase
from flops_operator.plan.diff import Create, Remove, Replace, Wait
from flops_operator.plan.services import Role, ServiceSpec

NOW, LATER = "2026-11-26T08:00:00Z", "2026-11-26T09:00:00Z"


@pytest.mark.parametrize("old, new, patch", [
    ({}, {}, {}),
    ({"phase": "Training", "training": {"round": 2}}, {"phase": "Training", "training": {"round": 2}}, {}),
    ({}, {"phase": "Pending"}, {"phase": "Pending"}),
    ({"phase": "Pending"}, {"phase": "Training"}, {"phase": "Training"}),
    ({"training": {"round": 1, "best": "x"}}, {"training": {"round": 2, "best": "x"}}, {"training": {"round": 2}}),
    ({"oakestra": {"applicationId": "a"}, "phase": "Failed"}, {"phase": "Failed"}, {"oakestra": None}),
    ({"training": {"best": "x"}}, {"training": {}}, {"training": {"best": None}}),
    ({"conditions": [{"type": "Ready"}]}, {"conditions": [{"type": "Ready"}, {"type": "Stalled"}]},
     {"conditions": [{"type": "Ready"}, {"type": "Stalled"}]}),
    ({"model": "old-scalar"}, {"model": {"version": "1"}}, {"model": {"version": "1"}}),
])
def test_merge_patch(old, new, patch) -> None:
    assert merge_patch(old, new) == patch


def _apply(doc: dict, patch: dict) -> dict:
    out = dict(doc)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _apply(out[key], value)
        else:
            out[key] = value
    return out


def test_merge_patch_applied_gives_the_new_document() -> None:
    old = {"phase": "Training", "training": {"round": 1, "latestMetrics": {"a": 1.0}}, "oakestra": {"x": "1"}}
    new = {"phase": "Completed", "training": {"round": 3, "latestMetrics": {"b": 2.0}}, "model": {"version": "4"}}
    assert _apply(old, merge_patch(old, new)) == new


def _status(phase: Phase, message: str = "", stalled: bool = False) -> FLOpsProjectStatus:
    return FLOpsProjectStatus(phase=phase, message=message, conditions=[
        Condition(type="Stalled", status="True" if stalled else "False", reason="x")])


def _service(name: str) -> ServiceSpec:
    return ServiceSpec(name=name, role=Role.learner, image="img", command=("run",))


def test_describe_lists_effects_only() -> None:
    actions = [Create(_service("learner-3")), Replace(_service("aggregator")), Remove("learner-9"),
               Wait("learner-4", ("aggregator",))]
    assert describe(actions) == "create learner-3, replace aggregator, remove learner-9"


@pytest.mark.parametrize("previous, new, kwargs, expected", [
    # A steady resync: nothing.
    (_status(Phase.Training, "training"), _status(Phase.Training, "training"), {}, []),
    # First status ever, and each phase change: one Event naming the change.
    (None, _status(Phase.Provisioning, "starting services"), {},
     [EventSpec("Normal", "Provisioning", "(new) -> Provisioning: starting services")]),
    (_status(Phase.Training, "training"), _status(Phase.Completed, "training completed"), {},
     [EventSpec("Normal", "Completed", "Training -> Completed: training completed")]),
    (_status(Phase.Training), _status(Phase.Failed, "aggregator failed: exit code 1", stalled=True), {},
     [EventSpec("Warning", "Failed", "Training -> Failed: aggregator failed: exit code 1")]),
    # Invalid spec: a Warning when it first happens or the problems change, not on every resync.
    (None, _status(Phase.Failed, "invalid spec: spec.x: bad", stalled=True), {"invalid": True},
     [EventSpec("Warning", "InvalidSpec", "invalid spec: spec.x: bad")]),
    (_status(Phase.Failed, "invalid spec: spec.x: bad", stalled=True),
     _status(Phase.Failed, "invalid spec: spec.x: bad", stalled=True), {"invalid": True}, []),
    (_status(Phase.Failed, "invalid spec: spec.x: bad", stalled=True),
     _status(Phase.Failed, "invalid spec: spec.y: bad", stalled=True), {"invalid": True},
     [EventSpec("Warning", "InvalidSpec", "invalid spec: spec.y: bad")]),
    # Stalled within the same phase (a store failed): a Warning once.
    (_status(Phase.Training, "training"), _status(Phase.Training, "backend-store failed: oom", stalled=True), {},
     [EventSpec("Warning", "Stalled", "backend-store failed: oom")]),
    (_status(Phase.Training, "backend-store failed: oom", stalled=True),
     _status(Phase.Training, "backend-store failed: oom", stalled=True), {}, []),
    # What was applied comes first.
    (_status(Phase.Training, "training"), _status(Phase.Training, "training"),
     {"applied": [Create(_service("learner-3")), Create(_service("learner-4"))]},
     [EventSpec("Normal", "Applied", "create learner-3, create learner-4")]),
])
def test_events_for(previous, new, kwargs, expected) -> None:
    assert events_for(previous, new, **kwargs) == expected


def test_problem_status_retrying_keeps_phase_and_says_why() -> None:
    previous = FLOpsProjectStatus(phase=Phase.Training, conditions=[
        Condition(type="Ready", status="True", reason="Converged", last_transition_time=NOW),
        Condition(type="Reconciling", status="False", reason="Idle", last_transition_time=NOW),
        Condition(type="Stalled", status="False", reason="None", last_transition_time=NOW),
        Condition(type="LearnersReady", status="True", reason="Ready", last_transition_time=NOW)])
    status = problem_status(previous, 3, stalled=False, reason="PlatformUnavailable", message="down", now=LATER)
    assert status.phase is Phase.Training and status.observed_generation == 3 and status.message == "down"
    ready, reconciling, stalled = (status.condition(t) for t in ("Ready", "Reconciling", "Stalled"))
    assert (ready.status, ready.reason, ready.last_transition_time) == ("False", "PlatformUnavailable", LATER)
    assert (reconciling.status, reconciling.message, reconciling.last_transition_time) == ("True", "down", LATER)
    assert (stalled.status, stalled.last_transition_time) == ("False", NOW)
    assert status.condition("LearnersReady").status == "True"
    assert previous.condition("Ready").status == "True", "the previous status is left alone"


def test_problem_status_stalled_fails_the_phase() -> None:
    status = problem_status(FLOpsProjectStatus(), 1, stalled=True, reason="PlatformError", message="not served",
                            now=NOW)
    assert status.phase is Phase.Failed
    assert status.condition("Stalled").status == "True" and status.condition("Stalled").message == "not served"
    assert status.condition("Reconciling").status == "False"


def test_backoff_grows_is_capped_and_jittered() -> None:
    middle = lambda lo, hi: (lo + hi) / 2  # noqa: E731
    assert [backoff_seconds(r, rand=middle) for r in range(4)] == [2.0, 4.0, 8.0, 16.0]
    assert backoff_seconds(30, rand=middle) == 300.0
    assert backoff_seconds(0, rand=lambda lo, hi: lo) == pytest.approx(1.6)
    assert backoff_seconds(0, rand=lambda lo, hi: hi) == pytest.approx(2.4)


