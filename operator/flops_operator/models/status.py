"""FLOpsProject status: what the operator saw. Never holds a secret."""

from __future__ import annotations

from enum import Enum
from typing import Literal

from pydantic import Field

from .base import StatusModel


class Phase(str, Enum):
    Pending = "Pending"
    Building = "Building"
    Provisioning = "Provisioning"
    Training = "Training"
    Suspended = "Suspended"
    Completed = "Completed"
    Failed = "Failed"
    Deleting = "Deleting"


class Condition(StatusModel):
    """A kstatus-compatible condition."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = ""
    message: str = ""
    last_transition_time: str | None = None
    observed_generation: int | None = None


class ComponentStatus(StatusModel):
    """One service of the project as the platform reports it."""

    name: str
    role: str
    state: str
    """pending | starting | running | completed | failed | absent"""
    service_id: str | None = None
    address: str | None = None
    """Address other services of the project use (host:port)."""
    external_address: str | None = None
    """Address reachable from outside the platform (host:port), where published."""
    message: str | None = None
    restarts: int | None = None


class TrainingStatus(StatusModel):
    identity: str | None = None
    """The training identity this status reports on: a hash of the fields that define the training
    (README: which edits do what); the MLflow run carries it as tag flops.training.id."""
    round: int = 0
    total_rounds: int = 0
    progress: str = "0/0"
    """round/totalRounds, for the printer column."""
    latest_metrics: dict[str, float] = Field(default_factory=dict)
    best_metrics: dict[str, float] = Field(default_factory=dict)
    best_round: int | None = None
    best: str | None = None
    """The deciding metric's best value, e.g. eval_accuracy=0.9412 (printer column)."""
    run_status: str | None = None
    """The MLflow run's status (RUNNING, FINISHED, FAILED)."""
    round_overhead_seconds: float | None = None
    """The last reported round's wall time minus its slowest learner's evaluate + fit time."""
    progress_percentage: int = 0
    """Rounds reported of the total, in percent; 100 once the training succeeded."""
    last_round_seconds: float | None = None
    """The last reported round's wall time."""
    estimated_remaining_seconds: int | None = None
    """While training: rounds still to report times the last round's wall time; 0 once done."""
    eta: str | None = None
    """estimatedRemainingSeconds for people (e.g. 2m30s), for the printer column."""
    learners_running: int = 0
    """Learner services running now (connected or connecting to the aggregator)."""
    learners_expected: int = 0
    """learners.replicas while training; 0 once the learners have been removed."""
    learners_answered: int | None = None
    """Learners that answered the last reported round's training."""
    started_at: str | None = None
    """When this training started (its aggregator first seen): spec.training.activeDeadlineSeconds counts from here."""
    suspend_requested_at: str | None = None
    """spec.suspend while training: when the aggregator was asked to stop at its next round boundary. Its services
    stay until it has (at most three roundTimeoutSeconds and a minute from here)."""


class BuildCache(StatusModel):
    """What the build found already made (hit) and what it made (built)."""

    images: str | None = None
    deps: str | None = None
    code: str | None = None


class TaskStatus(StatusModel):
    """What is trained, for a task from task.source: the commit, the images (or, locally, the environment) built
    from it, and the build's progress."""

    spec_identity: str | None = None
    """The training identity of the spec alone; the commit below was resolved for it (a new commit on a branch is
    trained only when the spec or training.trigger changes)."""
    source: str | None = None
    """The repository (no login) and path, or the local folder."""
    ref: str | None = None
    commit: str | None = None
    """The commit trained (Git), resolved from ref when the training started."""
    tree: str | None = None
    """The digest of the task folder's files (a local folder's version)."""
    entrypoint: str | None = None
    image: str | None = None
    """The learner image built from the source, with its digest."""
    aggregator_image: str | None = None
    """The aggregator image built from the source, with its digest."""
    environment: str | None = None
    """Locally: the cached environment (its key) the requirements went into."""
    python_path: list[str] | None = None
    """Locally: the code's folder and the cached environment, on the training services' PYTHONPATH."""
    build_phase: str | None = None
    """Resolving | Building | Built | Failed"""
    build_step: str | None = None
    """The builder's current (or failed) step: fetch, deps, check, code, push..."""
    build_message: str | None = None
    build_started_at: str | None = None
    build_seconds: float | None = None
    cache: BuildCache | None = None


class MlflowStatus(StatusModel):
    tracking_uri: str | None = None
    ui_url: str | None = None
    experiment_name: str | None = None
    experiment_id: str | None = None
    run_id: str | None = None


class ModelStatus(StatusModel):
    name: str | None = None
    version: str | None = None
    alias: str | None = None
    uri: str | None = None
    promoted: bool | None = None
    """Whether this version took the alias (it beat the previous holder)."""


class OakestraStatus(StatusModel):
    application_id: str | None = None
    application_name: str | None = None


class FLOpsProjectStatus(StatusModel):
    phase: Phase = Phase.Pending
    observed_generation: int | None = None
    message: str | None = None
    conditions: list[Condition] = Field(default_factory=list)
    components: list[ComponentStatus] = Field(default_factory=list)
    training: TrainingStatus = Field(default_factory=TrainingStatus)
    task: TaskStatus | None = None
    """For a task from task.source: the commit and images trained, and the build."""
    mlflow: MlflowStatus = Field(default_factory=MlflowStatus)
    model: ModelStatus = Field(default_factory=ModelStatus)
    oakestra: OakestraStatus | None = None
    created_with: dict[str, str | None] | None = None
    """The immutable fields as the project was created (spec.platform, the store types, tracking.uri): an edit
    of one is refused with a Stalled condition naming it, also where the API server does not run CEL rules."""

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)
