"""status(project, observed, progress) -> status. Pure; `now` is passed in."""

from __future__ import annotations

from typing import Sequence

from .models import Condition, FLOpsProjectStatus, Phase, Problem, Project
from .models.edits import immutable_values
from .models.spec import public_uri
from . import status_policies as policies
from .models.status import ComponentStatus, MlflowStatus, ModelStatus, OakestraStatus, TrainingStatus
from .plan.diff import Action
from .plan.services import Role, ServiceSpec
from .observed import Observation, ObservedService, ServiceState
from .progress import TrainingProgress
from .redaction import SHAPES_ONLY
from .training_state import Drain, TrainingOutcome, training_outcome, training_status

__all__ = ["compute_status", "deleting_status", "invalid_status", "problem_status", "tracking_url",
           "training_outcome", "TrainingOutcome"]

COMPONENT_CONDITIONS = {
    Role.backend_store: "BackendStoreReady",
    Role.artifact_store: "ArtifactStoreReady",
    Role.tracking_server: "TrackingServerReady",
    Role.aggregator: "AggregatorReady",
    Role.learner: "LearnersReady",
    Role.model_server: "ModelServerReady",
    Role.builder: "Built",
}


def _condition(previous: FLOpsProjectStatus, now: str, generation: int, type_: str, ok: bool | None,
               reason: str, message: str = "") -> Condition:
    status = "Unknown" if ok is None else ("True" if ok else "False")
    prev = previous.condition(type_)
    since = prev.last_transition_time if prev is not None and prev.status == status else now
    return Condition(type=type_, status=status, reason=reason, message=message,
                     last_transition_time=since, observed_generation=generation)


def _component(seen: ObservedService) -> ComponentStatus:
    return ComponentStatus(
        name=seen.name, role=seen.role.value, state=seen.state.value, service_id=seen.service_id,
        address=seen.address, external_address=seen.external_address, message=seen.message,
        restarts=seen.restarts or None,
    )


def tracking_url(project: Project, observation: Observation) -> str | None:
    """Where the operator (and people) reach the MLflow tracking server."""
    if project.spec.tracking.uri:
        return public_uri(project.spec.tracking.uri).rstrip("/")
    seen = observation.services.get("tracking-server")
    if seen is not None and seen.external_address:
        return f"http://{seen.external_address}"
    return None


def announce_via(project: Project, observation: Observation) -> str | None:
    """The address through which the operator tells the project's own tracking server the public address it is
    reached at (it answers only to Host headers it knows, flops_tracking.allowed_hosts): its service address,
    when it has one and is published somewhere else (Oakestra: the worker's IP and host port). None: nothing to
    tell (an existing MLflow, the local platform, or not running yet)."""
    if project.spec.tracking.uri:
        return None
    seen = observation.services.get("tracking-server")
    if seen is None or seen.state != ServiceState.running or not seen.address or not seen.external_address:
        return None
    return seen.address if seen.external_address != seen.address else None


def compute_status(
    project: Project,
    desired: Sequence[ServiceSpec],
    observation: Observation,
    actions: Sequence[Action],
    progress: TrainingProgress | None,
    previous: FLOpsProjectStatus,
    *,
    now: str,
    outcome: TrainingOutcome,
    draining: Drain | None = None,
) -> FLOpsProjectStatus:
    gen = project.generation
    draining = draining or Drain()
    training = training_status(project, progress, previous, observation, outcome, now, draining)
    facts = policies.Facts.gather(desired, observation, actions, outcome, suspend=project.spec.suspend,
                                  draining=draining.keep_training, round_=training.round, build=project.task)
    phase = policies.phase(facts)
    reason, message = policies.verdict(facts)
    stalled = reason in policies.STALLING
    ready = facts.converged and not stalled
    reconciling = not ready and not stalled

    conditions = [
        _condition(previous, now, gen, "Ready", ready, (phase.value if phase in (Phase.Completed, Phase.Suspended)
                                                        else "Converged") if ready else phase.value,
                   "" if ready else message),
        _condition(previous, now, gen, "Reconciling", reconciling, phase.value if reconciling else "Idle",
                   message if reconciling else ""),
        _condition(previous, now, gen, "Stalled", stalled, reason if stalled else "None", message if stalled else ""),
    ]
    for role in [r for r in COMPONENT_CONDITIONS if any(s.role is r for s in desired)]:
        ok, why, text = policies.role_readiness(role, facts)
        conditions.append(_condition(previous, now, gen, COMPONENT_CONDITIONS[role], ok, why, text))
    if outcome.done:
        conditions.append(_condition(previous, now, gen, "TrainingComplete", outcome.succeeded,
                                     outcome.condition_reason, outcome.message))
    else:
        conditions.append(_condition(previous, now, gen, "TrainingComplete", False,
                                     "InProgress" if "aggregator" in observation.services else "NotStarted"))
    model = _model(progress, previous)
    conditions.append(_condition(previous, now, gen, "ModelRegistered", bool(model.version),
                                 "Registered" if model.version else "NotYet",
                                 f"{model.name} version {model.version}" if model.version else ""))
    order = {s.name: i for i, s in enumerate(desired)}
    components = [_component(s) for s in sorted(observation.services.values(),
                                                key=lambda s: (order.get(s.name, 10**6), s.name))]
    return FLOpsProjectStatus(
        phase=phase, observed_generation=gen, message=message, conditions=conditions,
        components=components, training=training, task=project.task,
        mlflow=_mlflow(project, observation, progress, previous, training),
        model=model, oakestra=_oakestra(project, observation, previous),
        created_with=previous.created_with or immutable_values(project.spec),
    )


def _model(progress: TrainingProgress | None, previous: FLOpsProjectStatus) -> ModelStatus:
    """The last registered model: this training's once it registered one, an earlier one's until then."""
    if progress is not None and progress.model_version:
        return ModelStatus(name=progress.model_name, version=progress.model_version,
                           alias=progress.model_alias, uri=progress.model_uri, promoted=progress.promoted)
    return previous.model


def _mlflow(project: Project, observation: Observation, progress: TrainingProgress | None,
            previous: FLOpsProjectStatus, training: TrainingStatus) -> MlflowStatus:
    url = tracking_url(project, observation)
    same_training = previous.training.identity in (training.identity, None)
    mlflow = MlflowStatus(
        tracking_uri=url or previous.mlflow.tracking_uri,
        experiment_name=project.ref.key,
        experiment_id=(progress.experiment_id if progress else None) or previous.mlflow.experiment_id,
        run_id=(progress.run_id if progress else None) or (previous.mlflow.run_id if same_training else None),
    )
    base = mlflow.tracking_uri
    if base:
        mlflow.ui_url = f"{base}/#/experiments/{mlflow.experiment_id}" if mlflow.experiment_id else base
    return mlflow


def _oakestra(project: Project, observation: Observation, previous: FLOpsProjectStatus) -> OakestraStatus | None:
    if project.spec.platform.value != "oakestra" or not (observation.application_id or previous.oakestra):
        return None
    before = previous.oakestra or OakestraStatus()
    return OakestraStatus(application_id=observation.application_id or before.application_id,
                          application_name=observation.application_name or before.application_name)


def invalid_status(problems: Sequence[Problem], previous: FLOpsProjectStatus, generation: int,
                   *, now: str) -> FLOpsProjectStatus:
    """The spec cannot be used: Stalled with a message naming the fields; nothing is created or changed.
    The other conditions stay as last seen (TrainingComplete keeps a finished training finished once the
    spec is fixed)."""
    # A refused value may be a login (a URL's user:password@): shapes out, as for every error text.
    message = SHAPES_ONLY("invalid spec: " + "; ".join(str(p) for p in problems))
    status = previous.model_copy(deep=True)
    status.phase = Phase.Failed
    status.observed_generation = generation
    status.message = message
    status.conditions = [
        _condition(previous, now, generation, "Ready", False, "InvalidSpec", message),
        _condition(previous, now, generation, "Reconciling", False, "InvalidSpec"),
        _condition(previous, now, generation, "Stalled", True, "InvalidSpec", message),
    ] + [c for c in previous.conditions if c.type not in ("Ready", "Reconciling", "Stalled")]
    return status


def _set_condition(status: FLOpsProjectStatus, now: str, generation: int, type_: str, value: bool, reason: str,
                   message: str = "") -> None:
    text = "True" if value else "False"
    prev = status.condition(type_)
    since = prev.last_transition_time if prev is not None and prev.status == text else now
    status.conditions = [c for c in status.conditions if c.type != type_] + [
        Condition(type=type_, status=text, reason=reason, message=message, last_transition_time=since,
                  observed_generation=generation)]


def problem_status(previous: FLOpsProjectStatus, generation: int, *, stalled: bool, reason: str, message: str,
                   now: str) -> FLOpsProjectStatus:
    """The last status with the reason reconcile could not go on (both adapters: a platform error, a run
    that stalled with nobody to fix it).

    Stalled (someone must change something): phase Failed. Otherwise it is being retried: the phase
    and the components stay as last seen, Reconciling says why.
    """
    message = SHAPES_ONLY(message)  # an error's text (flops_operator.redaction)
    status = previous.model_copy(deep=True)
    status.observed_generation = generation
    status.message = message
    if stalled:
        status.phase = Phase.Failed
    _set_condition(status, now, generation, "Ready", False, reason, message)
    _set_condition(status, now, generation, "Reconciling", not stalled, reason if not stalled else "Stalled",
                   "" if stalled else message)
    _set_condition(status, now, generation, "Stalled", stalled, reason if stalled else "None", message if stalled else "")
    return status


def deleting_status(previous: FLOpsProjectStatus, generation: int, *, now: str, message: str) -> FLOpsProjectStatus:
    message = SHAPES_ONLY(message)  # may carry a cleanup error's text (flops_operator.redaction)
    status = previous.model_copy(deep=True)
    status.phase = Phase.Deleting
    status.message = message
    status.conditions = [c for c in status.conditions if c.type not in ("Ready", "Reconciling", "Stalled")] + [
        _condition(previous, now, generation, "Ready", False, "Deleting", message),
        _condition(previous, now, generation, "Reconciling", True, "Deleting", message),
        _condition(previous, now, generation, "Stalled", False, "None"),
    ]
    return status
