"""status(project, observed, progress) -> status. Pure; `now` is passed in."""

from __future__ import annotations

from typing import Sequence

from .models import Condition, FLOpsProjectStatus, Phase, Problem, Project
from .models.status import ComponentStatus, MlflowStatus, ModelStatus, OakestraStatus
from .plan.diff import Action, Create, Remove, Replace, Wait
from .plan.services import Role, ServiceSpec
from .platforms.base import Observation, ObservedService, ServiceState
from .progress import TrainingProgress
from .training_state import TrainingOutcome, training_outcome, training_status

__all__ = ["compute_status", "deleting_status", "invalid_status", "tracking_url", "training_outcome",
           "TrainingOutcome"]

COMPONENT_CONDITIONS = {
    Role.backend_store: "BackendStoreReady",
    Role.artifact_store: "ArtifactStoreReady",
    Role.tracking_server: "TrackingServerReady",
    Role.aggregator: "AggregatorReady",
    Role.learner: "LearnersReady",
    Role.model_server: "ModelServerReady",
}
_OK = (ServiceState.running, ServiceState.completed)


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


def _role_condition(role: Role, desired: Sequence[ServiceSpec], observation: Observation,
                    ) -> tuple[bool, str, str]:
    wanted = [s for s in desired if s.role is role]
    seen = [observation.services.get(s.name) for s in wanted]
    ready = [s for s in seen if s is not None and s.state in _OK]
    failed = [s for s in seen if s is not None and s.state is ServiceState.failed]
    if failed:
        return False, "Failed", "; ".join(f"{s.name}: {s.message or 'failed'}" for s in failed)
    if len(ready) == len(wanted):
        return True, "Ready", f"{len(ready)}/{len(wanted)} ready"
    return False, "NotReady", f"{len(ready)}/{len(wanted)} ready"


def tracking_url(project: Project, observation: Observation) -> str | None:
    """Where the operator (and people) reach the MLflow tracking server."""
    if project.spec.tracking.uri:
        return project.spec.tracking.uri.rstrip("/")
    seen = observation.services.get("tracking-server")
    if seen is not None and seen.external_address:
        return f"http://{seen.external_address}"
    return None


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
) -> FLOpsProjectStatus:
    gen = project.generation
    pending = [a for a in actions if isinstance(a, (Create, Replace, Remove))]
    waits = [a for a in actions if isinstance(a, Wait)]
    observed = observation.services
    stack_failed = [s for s in observed.values()
                    if s.state is ServiceState.failed and s.role not in (Role.aggregator, Role.learner)]
    converged = not pending and not waits and all(
        observed.get(s.name) is not None and observed[s.name].state in _OK for s in desired)

    if outcome.done:
        phase = Phase.Completed if outcome.succeeded else Phase.Failed
    elif not observed:
        phase = Phase.Pending
    elif observed.get("aggregator") is not None and observed["aggregator"].state is ServiceState.running:
        phase = Phase.Training
    else:
        phase = Phase.Provisioning

    stalled = phase is Phase.Failed or bool(stack_failed)
    ready = converged and not stalled
    if phase is Phase.Failed:
        message = outcome.message
    elif stack_failed:
        message = "; ".join(f"{s.name} failed: {s.message or 'see its logs'}" for s in stack_failed)
    elif phase is Phase.Completed:
        message = "training completed" + ("" if converged else "; settling services")
    elif waits:
        message = "waiting: " + ", ".join(f"{w.name} for {'/'.join(w.waiting_for)}" for w in waits[:3])
        # Say what holds the awaited services back (a crash loop, a health check, a placement).
        awaited = dict.fromkeys(name for w in waits for name in w.waiting_for)
        why = [f"{name}: {observed[name].message}" for name in awaited
               if name in observed and observed[name].message]
        if why:
            message += " (" + "; ".join(why) + ")"
    elif pending:
        message = f"applying {len(pending)} change(s)"
    elif phase is Phase.Training:
        message = "training"
    else:
        message = "starting services"

    conditions = [
        _condition(previous, now, gen, "Ready", ready, "Completed" if ready and phase is Phase.Completed
                   else ("Converged" if ready else phase.value), "" if ready else message),
        _condition(previous, now, gen, "Reconciling", not ready and not stalled,
                   phase.value if not ready and not stalled else "Idle", message if not ready and not stalled else ""),
        _condition(previous, now, gen, "Stalled", stalled, "Failed" if stalled else "None",
                   message if stalled else ""),
    ]
    roles = [r for r in COMPONENT_CONDITIONS if any(s.role is r for s in desired)]
    for role in roles:
        ok, reason, text = _role_condition(role, desired, observation)
        conditions.append(_condition(previous, now, gen, COMPONENT_CONDITIONS[role], ok, reason, text))
    if outcome.done:
        conditions.append(_condition(previous, now, gen, "TrainingComplete", outcome.succeeded,
                                     "Succeeded" if outcome.succeeded else "Failed", outcome.message))
    else:
        conditions.append(_condition(previous, now, gen, "TrainingComplete", False,
                                     "InProgress" if "aggregator" in observed else "NotStarted"))
    training = training_status(project, progress, previous, observation, outcome)
    model = previous.model
    if progress is not None and progress.model_version:
        model = ModelStatus(name=progress.model_name, version=progress.model_version,
                            alias=progress.model_alias, uri=progress.model_uri, promoted=progress.promoted)
    conditions.append(_condition(previous, now, gen, "ModelRegistered", bool(model.version),
                                 "Registered" if model.version else "NotYet",
                                 f"{model.name} version {model.version}" if model.version else ""))

    url = tracking_url(project, observation)
    mlflow = MlflowStatus(
        tracking_uri=url or previous.mlflow.tracking_uri,
        experiment_name=project.ref.key,
        experiment_id=(progress.experiment_id if progress else None) or previous.mlflow.experiment_id,
        run_id=(progress.run_id if progress else None) or (
            previous.mlflow.run_id if previous.training.identity in (training.identity, None) else None),
    )
    base = mlflow.tracking_uri
    if base:
        mlflow.ui_url = f"{base}/#/experiments/{mlflow.experiment_id}" if mlflow.experiment_id else base
    order = {s.name: i for i, s in enumerate(desired)}
    components = [_component(s) for s in sorted(observed.values(), key=lambda s: (order.get(s.name, 10**6), s.name))]
    oakestra = None
    if project.spec.platform.value == "oakestra" and (observation.application_id or previous.oakestra):
        oakestra = OakestraStatus(
            application_id=observation.application_id or (previous.oakestra.application_id if previous.oakestra else None),
            application_name=observation.application_name or (previous.oakestra.application_name if previous.oakestra else None),
        )
    return FLOpsProjectStatus(
        phase=phase, observed_generation=gen, message=message, conditions=conditions,
        components=components, training=training, mlflow=mlflow, model=model, oakestra=oakestra,
    )


def invalid_status(problems: Sequence[Problem], previous: FLOpsProjectStatus, generation: int,
                   *, now: str) -> FLOpsProjectStatus:
    """The spec cannot be used: Stalled with a message naming the fields; nothing is created."""
    message = "invalid spec: " + "; ".join(str(p) for p in problems)
    status = previous.model_copy(deep=True)
    status.phase = Phase.Failed
    status.observed_generation = generation
    status.message = message
    status.conditions = [
        _condition(previous, now, generation, "Ready", False, "InvalidSpec", message),
        _condition(previous, now, generation, "Reconciling", False, "InvalidSpec"),
        _condition(previous, now, generation, "Stalled", True, "InvalidSpec", message),
    ]
    return status


def deleting_status(previous: FLOpsProjectStatus, generation: int, *, now: str, message: str) -> FLOpsProjectStatus:
    status = previous.model_copy(deep=True)
    status.phase = Phase.Deleting
    status.message = message
    status.conditions = [c for c in status.conditions if c.type not in ("Ready", "Reconciling", "Stalled")] + [
        _condition(previous, now, generation, "Ready", False, "Deleting", message),
        _condition(previous, now, generation, "Reconciling", True, "Deleting", message),
        _condition(previous, now, generation, "Stalled", False, "None"),
    ]
    return status
