"""Training progress as read from the project's MLflow run (the aggregator writes, we read).

## The MLflow contract between the aggregator (writer) and the operator's progress gatherer (reader)
- Tracking URI: env MLFLOW_TRACKING_URI; the login: env MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (the
  aggregator's user on the project's tracking server: EDIT on its experiment and registered model), only via env,
  never in the Flower run config. The operator reads with the read-only user.
- Experiment name = FLOPS_CONFIG["experiment"] (= "<namespace>/<name>"); experiment tags `flops.project.namespace`,
  `flops.project.name`, `flops.project.uid`.
- One MLflow run per training. Run tags: `flops.project.uid`, `flops.training.id` (the training identity,
  models/edits.py: only runs of the spec's identity are read), `flops.flower.run_id`, `flops.total_rounds`; tag
  `flops.round` updated to the current round number after each round. Params: rounds, strategy name and its arguments,
  min train/evaluate/available learners, local epochs, batch size, learning rate, round timeout, task, dataset, partitioning.
- Per round, with step=round: `train_loss` (example-weighted), `eval_loss`, `eval_accuracy` (and any other evaluate
  metric as `eval_<name>`), `num_train_learners`, `num_eval_learners` (learners that answered), `round_duration_seconds`,
  `round_overhead_seconds` (the round's wall time minus its slowest learner's evaluate + fit time). A round is
  reported once its evaluation is in: with fused evaluation, while the next round trains.
  System metrics enabled (mlflow's system metrics, `system/...`).
- At the end: metric `best_round`, and `best_<metric>` for each eval metric of the best round (e.g. `best_eval_accuracy`,
  `best_eval_loss`); tags `flops.best_round`, `flops.model.name`, `flops.model.version`, `flops.model.alias`,
  `flops.model.uri` (`models:/<name>/<version>`), `flops.model.promoted` ("true"/"false"). Run ends FINISHED on
  success, FAILED on any failure (tag `flops.error`), KILLED when the training is stopped from outside (tag
  `flops.end_reason`, e.g. "signal SIGTERM" when the aggregator was signalled).
- spec.suspend: the operator sets tag `flops.stop.requested` on the RUNNING run; the aggregator reads it off the
  round's path (within a few seconds), stops after its next reported round once that round's checkpoint is in,
  and ends the run KILLED with `flops.end_reason` "suspended after round <n> (...)"; it exits 0. The aggregator
  that resumes the run deletes the tag.
- After each reported round: the global model and best-so-far in the run's artifacts (`checkpoint/a` or `/b`),
  tag `flops.checkpoint` = "<round>:<slot>" once uploaded. The next aggregator of the same training takes a
  KILLED (or RUNNING) run with a checkpoint over: RUNNING again, tag `flops.resumed_from_round`, rounds continuing.
- Learners admitted (Flower's SuperNode authentication): the operator sets tag `flops.learners` on the RUNNING run
  to spec.learners.replicas whenever it differs; the aggregator reads it off the round's path (within a few
  seconds) and registers the keys of exactly that many learners with its SuperLink (learners 0..n-1, each the key
  its certificate names once it presented it: flops_aggregator.admission).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from .models import Project

# Tags of the contract above that the operator's reader and writer both name.
UID_TAG = "flops.project.uid"
TRAINING_ID_TAG = "flops.training.id"
STOP_TAG = "flops.stop.requested"
LEARNERS_TAG = "flops.learners"


@dataclass(frozen=True)
class TrainingProgress:
    experiment_id: str | None = None
    run_id: str | None = None
    run_status: str | None = None
    """MLflow run status: RUNNING, FINISHED, FAILED, KILLED."""
    round: int = 0
    latest_metrics: dict[str, float] = field(default_factory=dict)
    best_metrics: dict[str, float] = field(default_factory=dict)
    best_round: int | None = None
    round_overhead_seconds: float | None = None
    last_round_seconds: float | None = None
    """The latest reported round's wall time (metric round_duration_seconds)."""
    checkpoint_round: int | None = None
    """The round of the run's last uploaded checkpoint (tag flops.checkpoint): a stopped run resumes from it."""
    error: str | None = None
    """Why a FAILED run failed (tag flops.error)."""
    stop_requested: str | None = None
    """The operator asked the run to stop at its next round boundary (tag flops.stop.requested)."""
    learners_answered: int | None = None
    """Learners that answered the latest reported round's training (metric num_train_learners)."""
    learners_tag: str | None = None
    """The learner count the operator last asked the running aggregator to admit (tag flops.learners)."""
    model_name: str | None = None
    model_version: str | None = None
    model_alias: str | None = None
    model_uri: str | None = None
    promoted: bool | None = None


class ProgressSource(Protocol):
    async def fetch(self, project: Project, tracking_url: str,
                    login: tuple[str, str] | None = None) -> TrainingProgress | None:
        """Progress of the latest run of the project's current training identity, None if there is none (yet).
        `login`: (username, password) for the server's basic auth.

        Raises nothing for an unreachable server: progress is best effort, status keeps the last
        known numbers.
        """
        ...


class NoProgress:
    """The no-op twin: for platforms/tests with no tracking server to read."""

    async def fetch(self, project: Project, tracking_url: str,
                    login: tuple[str, str] | None = None) -> TrainingProgress | None:
        return None
