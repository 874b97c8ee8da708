"""compute_status's policies one by one: the first that applies decides reason and message. Table-driven."""

from __future__ import annotations

import pytest

from flops_operator import status_policies as policies
from flops_operator.models import Phase
from flops_operator.plan.diff import Wait
from flops_operator.plan.services import Role
from flops_operator.platforms.base import Observation, ObservedService, ServiceState
from flops_operator.training_state import TrainingOutcome

R, S, F = ServiceState.running, ServiceState.starting, ServiceState.failed
OPEN, DONE, FAILED = TrainingOutcome(False), TrainingOutcome(True, True), TrainingOutcome(True, False, "boom")


def facts(services=None, waits=(), pending=(), outcome=OPEN, converged=False, suspended=False, draining=False,
          round_=0):
    observed = {name: ObservedService(name, role, state, "h", message="crashed" if state is F else None)
                for name, (role, state) in (services or {}).items()}
    return policies.Facts(desired=(), observation=Observation(observed), pending=tuple(pending), waits=tuple(waits),
                          stack_failed=tuple(s for s in observed.values()
                                             if s.state is F and s.role not in (Role.aggregator, Role.learner)),
                          converged=converged, outcome=outcome, suspended=suspended, draining=draining,
                          round=round_)


STACK_DOWN = {"artifact-store": (Role.artifact_store, F)}
TRAINING = {"tracking-server": (Role.tracking_server, R), "aggregator": (Role.aggregator, R)}


@pytest.mark.parametrize("case,f,phase,reason,message", [
    ("nothing yet", facts(), Phase.Pending, "Starting", "starting services"),
    ("training failed wins over all", facts(STACK_DOWN, outcome=FAILED), Phase.Failed, "TrainingFailed", "boom"),
    ("a stack service failed", facts(STACK_DOWN), Phase.Provisioning, "ServiceFailed",
     "artifact-store failed: crashed"),
    ("completed, settling", facts(TRAINING, outcome=DONE), Phase.Completed, "Completed",
     "training completed; settling services"),
    ("completed", facts(TRAINING, outcome=DONE, converged=True), Phase.Completed, "Completed", "training completed"),
    ("waiting names what holds it back", facts({"tracking-server": (Role.tracking_server, S)},
                                               waits=[Wait("aggregator", ("tracking-server",))]),
     Phase.Provisioning, "Waiting", "waiting: aggregator for tracking-server"),
    ("applying", facts({"tracking-server": (Role.tracking_server, R)}, pending=["x", "y"]), Phase.Provisioning,
     "Applying", "applying 2 change(s)"),
    ("training", facts(TRAINING), Phase.Training, "Training", "training"),
    ("suspending: to the round boundary", facts(TRAINING, suspended=True, draining=True, round_=3), Phase.Suspended,
     "Suspending", "suspending: the training stops at its next round boundary (after round 3 was reported), its "
                   "checkpoint saved; then its services are removed"),
    ("suspending", facts(TRAINING, pending=["remove aggregator"], suspended=True), Phase.Suspended, "Suspending",
     "suspending: stopping the training services"),
    ("suspended", facts({"tracking-server": (Role.tracking_server, R)}, converged=True, suspended=True),
     Phase.Suspended, "Suspended", "suspended; spec.suspend: false resumes the training from its last finished round"),
    ("a failure wins over suspended", facts(STACK_DOWN, suspended=True), Phase.Suspended, "ServiceFailed",
     "artifact-store failed: crashed"),
])
def test_phase_and_verdict(case, f, phase, reason, message):
    assert policies.phase(f) is phase, case
    assert policies.verdict(f) == (reason, message), case
