"""status(): phases and kstatus conditions from what was observed. Table-driven, no I/O."""

import pytest

from flops_operator.models import FLOpsProjectStatus, Phase, Problem, parse_project
from flops_operator.models.edits import training_identity
from flops_operator.plan.desired import desired
from flops_operator.plan.diff import diff
from flops_operator.plan.services import Role
from flops_operator.platforms.base import Observation, ObservedService, ServiceState
from flops_operator.progress import TrainingProgress
from flops_operator.status import compute_status, invalid_status, training_outcome

NOW = "2026-11-26T08:00:00Z"
LATER = "2026-11-26T09:00:00Z"
R, S, C, F = ServiceState.running, ServiceState.starting, ServiceState.completed, ServiceState.failed


def project(generation=1, **spec):
    return parse_project({
        "apiVersion": "flops.oakestra.io/v1alpha1", "kind": "FLOpsProject",
        "metadata": {"name": "digits", "namespace": "team-a", "uid": "u-1", "generation": generation},
        "spec": {"task": {"name": "digits-mlp"}, "training": {"rounds": 5}, **spec},
    })


def world(p, states: dict, training_done=False):
    services = {}
    for s in desired(p, training_done=training_done):
        if s.name in states:
            services[s.name] = ObservedService(s.name, s.role, states[s.name], s.spec_hash,
                                               external_address="127.0.0.1:5000" if s.name == "tracking-server" else None,
                                               message="exit code 3" if states[s.name] is F else None)
    return Observation(services)


def aggregator_hash(p):
    return next(s.spec_hash for s in desired(p, training_done=False) if s.name == "aggregator")


def run(p, states, progress=None, previous=None, now=NOW):
    previous = previous or FLOpsProjectStatus()
    obs = world(p, states)
    outcome = training_outcome(p, obs, progress, previous, aggregator_hash=aggregator_hash(p))
    wanted = desired(p, training_done=outcome.done, model_registered=bool(progress and progress.model_version))
    return compute_status(p, wanted, obs, diff(wanted, obs.services), progress, previous, now=now, outcome=outcome)


def cond(status, type_):
    c = status.condition(type_)
    return (c.status, c.reason) if c else None


ALL_UP = {"artifact-store": R, "tracking-server": R, "aggregator": R, "learner-0": R, "learner-1": R}


@pytest.mark.parametrize("states,phase,ready,reconciling,stalled", [
    ({}, Phase.Pending, "False", "True", "False"),
    ({"artifact-store": S}, Phase.Provisioning, "False", "True", "False"),
    ({"artifact-store": R, "tracking-server": S}, Phase.Provisioning, "False", "True", "False"),
    ({**ALL_UP, "learner-1": S}, Phase.Training, "False", "True", "False"),
    (ALL_UP, Phase.Training, "True", "False", "False"),
    ({**ALL_UP, "aggregator": C}, Phase.Completed, "False", "True", "False"),  # training services still to remove
    ({"artifact-store": R, "tracking-server": R, "aggregator": F}, Phase.Failed, "False", "False", "True"),
    ({"artifact-store": F, "tracking-server": S}, Phase.Provisioning, "False", "False", "True"),
])
def test_phase_and_kstatus_conditions(states, phase, ready, reconciling, stalled):
    status = run(project(), states)
    assert status.phase is phase
    assert cond(status, "Ready")[0] == ready
    assert cond(status, "Reconciling")[0] == reconciling
    assert cond(status, "Stalled")[0] == stalled
    assert status.observed_generation == 1


def test_failed_aggregator_gives_the_reason():
    status = run(project(), {"artifact-store": R, "tracking-server": R, "aggregator": F})
    assert status.message == "aggregator failed: exit code 3"
    assert cond(status, "TrainingComplete") == ("False", "Failed")
    assert cond(status, "Stalled") == ("True", "TrainingFailed")


def test_component_conditions_count_learners():
    status = run(project(learners={"replicas": 3}), {**ALL_UP, "learner-2": S})
    assert cond(status, "LearnersReady") == ("False", "NotReady")
    assert status.condition("LearnersReady").message == "2/3 ready"
    assert cond(status, "TrackingServerReady") == ("True", "Ready")
    assert status.condition("BackendStoreReady") is None  # sqlite: no backend-store service
    assert [c.name for c in status.components] == [
        "artifact-store", "tracking-server", "aggregator", "learner-0", "learner-1", "learner-2"]


def test_progress_fills_training_model_and_mlflow():
    progress = TrainingProgress(experiment_id="7", run_id="r1", run_status="FINISHED", round=5,
                                latest_metrics={"eval_accuracy": 0.91, "eval_loss": 0.3},
                                best_metrics={"eval_accuracy": 0.93}, best_round=4, model_name="digits",
                                model_version="2", model_alias="champion", model_uri="models:/digits/2", promoted=True,
                                round_overhead_seconds=1.5)
    status = run(project(), {"artifact-store": R, "tracking-server": R}, progress=progress,
                 previous=FLOpsProjectStatus.model_validate({"conditions": [
                     {"type": "TrainingComplete", "status": "True", "reason": "Succeeded", "observedGeneration": 1}]}))
    assert status.phase is Phase.Completed
    assert status.training.progress == "5/5" and status.training.best == "eval_accuracy=0.9300"
    assert status.training.best_round == 4 and status.training.round_overhead_seconds == 1.5
    assert status.to_wire()["training"]["roundOverheadSeconds"] == 1.5
    assert (status.model.name, status.model.version, status.model.alias, status.model.promoted) == (
        "digits", "2", "champion", True)
    assert status.mlflow.ui_url == "http://127.0.0.1:5000/#/experiments/7"
    assert cond(status, "ModelRegistered") == ("True", "Registered")
    assert cond(status, "Ready") == ("True", "Completed")


def test_completed_is_sticky_for_its_training_identity_and_reopens_for_a_new_one():
    first = run(project(), {**ALL_UP, "aggregator": C})
    assert first.phase is Phase.Completed
    assert first.training.identity == training_identity(project().spec)
    # training services gone, the MLflow server unreachable: still Completed, numbers kept
    again = run(project(), {"artifact-store": R, "tracking-server": R}, previous=first)
    assert again.phase is Phase.Completed and cond(again, "Ready") == ("True", "Completed")
    # a new generation that changes nothing about training (deletionPolicy, serving): still Completed
    for edit in ({"deletionPolicy": "Orphan"}, {"serving": {"enabled": True}}, {"learners": {"replicas": 4}}):
        same = run(project(generation=2, **edit), {"artifact-store": R, "tracking-server": R}, previous=again)
        assert same.phase is Phase.Completed and same.observed_generation == 2, edit
    changed = run(project(generation=2, training={"rounds": 5, "trigger": "again"}),
                  {"artifact-store": R, "tracking-server": R}, previous=again)
    assert changed.phase is Phase.Provisioning
    assert cond(changed, "TrainingComplete") == ("False", "NotStarted")
    assert changed.training.identity != first.training.identity


def test_failed_mlflow_run_fails_the_training_once_its_aggregator_is_gone():
    failed = TrainingProgress(run_id="r9", run_status="FAILED", round=2)
    # Its aggregator exits 1 right after: until then a replacement might still be starting a new run.
    assert run(project(), ALL_UP, progress=failed).phase is Phase.Training
    status = run(project(), {k: v for k, v in ALL_UP.items() if k != "aggregator"}, progress=failed)
    assert status.phase is Phase.Failed and "r9" in status.message


def test_last_transition_time_moves_only_on_change():
    first = run(project(), ALL_UP, now=NOW)
    second = run(project(), ALL_UP, previous=first, now=LATER)
    assert second.condition("Ready").last_transition_time == NOW
    third = run(project(), {**ALL_UP, "learner-0": S}, previous=second, now=LATER)
    assert third.condition("Ready").last_transition_time == LATER


def test_invalid_spec_is_stalled_and_names_the_field():
    status = invalid_status([Problem("spec.training.rounds", "too many")], FLOpsProjectStatus(), 4, now=NOW)
    assert status.phase is Phase.Failed and status.observed_generation == 4
    assert cond(status, "Stalled") == ("True", "InvalidSpec")
    assert "spec.training.rounds: too many" in status.condition("Stalled").message


def test_status_never_carries_secrets():
    p = project(tracking={"backendStore": {"type": "mysql"}})
    status = run(p, {"backend-store": R, "artifact-store": R, "tracking-server": R})
    text = str(status.to_wire())
    assert "secret" not in text and "password" not in text.lower()


def test_the_message_says_what_holds_an_awaited_service_back():
    p = project()
    crash = "instance 0 DEAD (Oakestra re-deploys it; fell 3 times); last log lines: OperationalError: 2003"
    obs = Observation({"artifact-store": ObservedService("artifact-store", Role.artifact_store, R, "h"),
                       "tracking-server": ObservedService("tracking-server", Role.tracking_server, S, "h",
                                                          message=crash)})
    outcome = training_outcome(p, obs, None, FLOpsProjectStatus())
    wanted = desired(p, training_done=False)
    status = compute_status(p, wanted, obs, diff(wanted, obs.services), None, FLOpsProjectStatus(), now=NOW,
                            outcome=outcome)
    assert status.phase is Phase.Provisioning
    assert status.message.startswith("waiting: aggregator for tracking-server")
    assert f"(tracking-server: {crash})" in status.message
    assert cond(status, "Reconciling") == ("True", "Provisioning") and crash in status.condition("Reconciling").message


FIXED = dict(training={"rounds": 5, "learningRate": 0.01})


def outcome_of(aggregator=None, spec_of_aggregator=None, run_status=None, previous=None, p=None):
    """The outcome for project p (default: the spec as first written) in a world with at most an aggregator
    (of spec `spec_of_aggregator`, default p's own) and a run of p's identity in `run_status`."""
    p = p or project()
    services = {}
    if aggregator is not None:
        ran = project(**spec_of_aggregator) if spec_of_aggregator else p
        services["aggregator"] = ObservedService("aggregator", Role.aggregator, aggregator, aggregator_hash(ran),
                                                 message="exit code 1" if aggregator is F else None)
    progress = TrainingProgress(run_id="r1", run_status=run_status) if run_status else None
    got = training_outcome(p, Observation(services), progress, previous or FLOpsProjectStatus(),
                           aggregator_hash=aggregator_hash(p))
    return (got.done, got.succeeded) if got.done else "open"


def recorded(reason, identity, generation=1):
    return FLOpsProjectStatus.model_validate({
        "training": {"identity": identity},
        "conditions": [{"type": "TrainingComplete", "status": "True" if reason == "Succeeded" else "False",
                        "reason": reason, "observedGeneration": generation}]})


FIRST_ID = training_identity(project().spec)


@pytest.mark.parametrize("case,kwargs,expected", [
    ("this spec's aggregator failed", dict(aggregator=F), (True, False)),
    ("an earlier spec's aggregator failed: replaced, not an outcome", dict(aggregator=F, spec_of_aggregator=FIXED,
                                                                         ), "open"),
    ("this spec's aggregator completed", dict(aggregator=C), (True, True)),
    ("an earlier spec's aggregator completed", dict(aggregator=C, spec_of_aggregator=FIXED), "open"),
    ("this identity's run FAILED, aggregator gone", dict(run_status="FAILED"), (True, False)),
    ("this identity's run KILLED, aggregator gone", dict(run_status="KILLED"), (True, False)),
    ("run KILLED by a replacement whose successor is starting", dict(aggregator=S, run_status="KILLED"), "open"),
    ("run FAILED, an aggregator of this spec still running", dict(aggregator=R, run_status="FAILED"), "open"),
    ("this identity's run FINISHED, aggregator gone (status lost)", dict(run_status="FINISHED"), (True, True)),
    ("run FINISHED, aggregator still exiting", dict(aggregator=R, run_status="FINISHED"), "open"),
    ("nothing yet", dict(), "open"),
    ("recorded Failed for this identity", dict(previous=recorded("Failed", FIRST_ID)), (True, False)),
    ("recorded Succeeded for this identity", dict(previous=recorded("Succeeded", FIRST_ID)), (True, True)),
    ("recorded Failed for an earlier identity: a fixed spec trains again",
     dict(previous=recorded("Failed", "0123456789ab")), "open"),
    ("recorded before identities, same generation", dict(previous=recorded("Succeeded", None)), (True, True)),
    ("recorded before identities, earlier generation", dict(previous=recorded("Succeeded", None, generation=0)),
     "open"),
])
def test_training_outcome(case, kwargs, expected):
    assert outcome_of(**kwargs) == expected, case


def test_failed_training_then_a_fixed_spec_trains_afresh():
    failed = run(project(), {"artifact-store": R, "tracking-server": R, "aggregator": F},
                 progress=TrainingProgress(run_id="r1", run_status="FAILED", round=2, latest_metrics={"eval_loss": 2.0}))
    assert failed.phase is Phase.Failed and failed.training.round == 2
    fixed = project(generation=2, **FIXED)
    # The gatherer reads only runs of the fixed spec's identity: none yet.
    again = run(fixed, {"artifact-store": R, "tracking-server": R}, previous=failed)
    assert again.phase is Phase.Provisioning and "learner-0 for aggregator" in again.message
    assert again.training.identity == training_identity(fixed.spec) != failed.training.identity
    assert (again.training.round, again.training.latest_metrics, again.mlflow.run_id) == (0, {}, None)
    assert cond(again, "Stalled") == ("False", "None")


def started(at, round_=0, identity=None, deadline=60):
    p = project(training={"rounds": 5, "activeDeadlineSeconds": deadline})
    previous = FLOpsProjectStatus.model_validate({"training": {
        "identity": identity or training_identity(p.spec), "startedAt": at, "round": round_}})
    return p, previous


@pytest.mark.parametrize("case,at,round_,identity,now,expected", [
    ("not started", None, 0, None, "2026-11-30T13:00:00Z", None),
    ("within", "2026-11-30T12:00:00Z", 2, None, "2026-11-30T12:01:00Z", None),
    ("past, rounds done", "2026-11-30T12:00:00Z", 2, None, "2026-11-30T12:01:01Z", "ran longer than 60 s"),
    ("past, no round done", "2026-11-30T12:00:00Z", 0, None, "2026-11-30T12:01:01Z", "is below one round"),
    ("another training's start", "2026-11-30T12:00:00Z", 2, "0123456789ab", "2026-11-30T13:00:00Z", None),
])
def test_deadline(case, at, round_, identity, now, expected):
    p, previous = started(at, round_, identity)
    got = training_outcome(p, Observation({}), None, previous, now=now)
    if expected is None:
        assert not got.done, case
    else:
        assert (got.done, got.succeeded, got.reason) == (True, False, "DeadlineExceeded"), case
        assert expected in got.message and "spec.training.activeDeadlineSeconds" in got.message, case
