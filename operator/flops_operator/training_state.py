"""The training's part of status: has the current identity's training ended, and how far along is it. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from .models import FLOpsProjectStatus, Phase, Project
from .models.status import TrainingStatus
from .plan.services import Role
from .observed import Observation, ServiceState
from .progress import TrainingProgress


@dataclass(frozen=True)
class TrainingOutcome:
    done: bool
    succeeded: bool = False
    message: str = ""
    reason: str = ""
    """The TrainingComplete condition's reason: Succeeded, Failed or DeadlineExceeded."""

    @property
    def condition_reason(self) -> str:
        return self.reason or ("Succeeded" if self.succeeded else "Failed")


ENDED = ("Succeeded", "Failed", "DeadlineExceeded")


_ALIVE = (ServiceState.pending, ServiceState.starting, ServiceState.running)


def _decided(previous: FLOpsProjectStatus, identity: str, generation: int) -> TrainingOutcome | None:
    """The outcome an earlier reconcile recorded for this identity (a status written before identities
    existed counts for its generation)."""
    prev = previous.condition("TrainingComplete")
    if prev is None or prev.reason not in ENDED:
        return None
    recorded = previous.training.identity
    if recorded == identity or (recorded is None and prev.observed_generation == generation):
        return TrainingOutcome(True, prev.reason == "Succeeded", prev.message, prev.reason)
    return None


def _seconds_between(start: str, end: str) -> float:
    return (datetime.fromisoformat(end.replace("Z", "+00:00"))
            - datetime.fromisoformat(start.replace("Z", "+00:00"))).total_seconds()


def deadline_exceeded(project: Project, previous: FLOpsProjectStatus, identity: str, now: str,
                      ) -> TrainingOutcome | None:
    """spec.training.activeDeadlineSeconds, counted from when this identity's training started or last
    resumed from a suspension (status training.startedAt: its aggregator first seen)."""
    deadline = project.spec.training.active_deadline_seconds
    started = previous.training.started_at if previous.training.identity == identity else None
    if deadline is None or started is None or _seconds_between(started, now) <= deadline:
        return None
    if previous.training.round == 0:
        message = (f"spec.training.activeDeadlineSeconds ({deadline} s) is below one round: no round finished "
                   f"since the training started at {started}")
    else:
        message = (f"spec.training.activeDeadlineSeconds: training ran longer than {deadline} s "
                   f"(started {started}, round {previous.training.round}/{project.spec.training.rounds})")
    return TrainingOutcome(True, False, message, "DeadlineExceeded")


@dataclass(frozen=True)
class Drain:
    """spec.suspend while the training runs: its services stay until the aggregator has stopped at its next round
    boundary with that round's checkpoint in (its MLflow run is no longer RUNNING), or until `drain_bound`
    passed since the request (then they are removed at once: the last checkpoint stays)."""

    keep_training: bool = False
    request: bool = False
    """The stop request is still to be written to the run."""
    requested_at: str | None = None
    """status.training.suspendRequestedAt: when the operator first asked."""


def drain_bound(project: Project) -> float:
    """One whole round at most (waiting for learners, training, evaluating) and a minute for the checkpoint."""
    return 3 * project.spec.training.round_timeout_seconds + 60


def drain(project: Project, observation: Observation, progress: TrainingProgress | None,
          previous: FLOpsProjectStatus, outcome: TrainingOutcome, now: str) -> Drain:
    aggregator = observation.services.get("aggregator")
    if (not project.spec.suspend or outcome.done or aggregator is None or aggregator.state not in _ALIVE
            or progress is None or progress.run_status not in ("RUNNING", "FINISHED")):
        return Drain()  # nothing to stop, or no way to ask: the plan removes what is left
    identity = project.training_identity
    asked = previous.training.suspend_requested_at if previous.training.identity == identity else None
    requested_at = asked or now
    if _seconds_between(requested_at, now) > drain_bound(project):
        return Drain(requested_at=requested_at)
    # FINISHED: the request came at the last round boundary; the training ends instead, and its aggregator
    # exits by itself once it has written its result.
    return Drain(True, progress.run_status == "RUNNING" and progress.stop_requested is None, requested_at)


def rerun(project: Project, observation: Observation, progress: TrainingProgress | None,
          outcome: TrainingOutcome) -> frozenset[str]:
    """An aggregator that exited after stopping for a suspension (its run KILLED) while the spec no longer
    suspends: it runs again, resuming from its checkpoint (diff's `rerun`)."""
    aggregator = observation.services.get("aggregator")
    if (project.spec.suspend or outcome.done or aggregator is None or aggregator.state is not ServiceState.completed
            or progress is None or progress.run_status != "KILLED"):
        return frozenset()
    return frozenset({"aggregator"})


def _resumable(project: Project, progress: TrainingProgress, previous: FLOpsProjectStatus) -> bool:
    """A KILLED run that the next aggregator takes over: it left a checkpoint, or it was stopped on purpose
    (spec.suspend; a suspension before the first round resumes from scratch)."""
    return progress.run_status == "KILLED" and (
        progress.checkpoint_round is not None or project.spec.suspend or previous.phase is Phase.Suspended)


def training_outcome(project: Project, observation: Observation, progress: TrainingProgress | None,
                     previous: FLOpsProjectStatus, *, aggregator_hash: str | None = None,
                     now: str | None = None) -> TrainingOutcome:
    """Has the training of the spec's identity finished, and how? Sticky once decided for an identity.

    `progress` is the latest run of this identity (the gatherer reads no other). An aggregator counts only
    when it runs this spec (`aggregator_hash`, the planned one's); one of another spec is replaced by the
    plan. A FAILED/KILLED run decides only when no aggregator is alive: a replaced aggregator's run ends
    KILLED while its successor starts a new run of the same identity.
    """
    identity = project.training_identity
    decided = _decided(previous, identity, project.generation)
    if decided is not None and decided.reason == "DeadlineExceeded" and now is not None and deadline_exceeded(
            project, previous, identity, now) is None:
        decided = None  # the deadline was raised (or removed): the training resumes from its checkpoint
    if decided is not None:
        return decided
    if now is not None:
        exceeded = deadline_exceeded(project, previous, identity, now)
        if exceeded is not None:
            return exceeded
    aggregator = observation.services.get("aggregator")
    ours = aggregator if aggregator is not None and aggregator_hash in (None, aggregator.spec_hash) else None
    alive = aggregator is not None and aggregator.state in _ALIVE
    if ours is not None and ours.state is ServiceState.failed:
        # The run's own words first (e.g. a checkpoint to resume from that is gone), else the platform's.
        why = (progress.error if progress is not None and progress.run_status == "FAILED" and progress.error
               else None) or ours.message or f"exit code {ours.exit_code}"
        return TrainingOutcome(True, False, f"aggregator failed: {why}")
    if progress is not None and not alive and progress.run_status in ("FAILED", "KILLED") and not _resumable(
            project, progress, previous):
        return TrainingOutcome(True, False, f"MLflow run {progress.run_id} ended {progress.run_status}"
                               + (f": {progress.error}" if progress.error else ""))
    if ours is not None and ours.state is ServiceState.completed:
        if progress is not None and progress.run_status == "KILLED":
            return TrainingOutcome(False)  # it stopped for a suspension, resumable (it exits 0 then)
        return TrainingOutcome(True, True, "aggregator completed; training run finished")
    if progress is not None and not alive and progress.run_status == "FINISHED":
        # Its aggregator is gone (removed, or the status that recorded the outcome was lost).
        return TrainingOutcome(True, True, f"MLflow run {progress.run_id} of this training finished")
    return TrainingOutcome(False)


def estimate(round_: int, total: int, last_round_seconds: float | None, *, succeeded: bool,
             ) -> tuple[int, int | None]:
    """(progressPercentage, estimatedRemainingSeconds). The estimate is the rounds still to report times the
    last round's wall time: it changes when a round is reported, not with the clock, so a steady project's
    status stays the same between rounds (no write each resync)."""
    if succeeded:
        return 100, 0
    done = min(max(round_, 0), total)
    percent = 100 * done // total if total else 0
    if last_round_seconds is None:
        return percent, None
    return percent, round((total - done) * last_round_seconds)


def human_duration(seconds: int | None) -> str | None:
    """1h02m, 2m30s, 45s: the printer column's ETA."""
    if seconds is None:
        return None
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def training_status(project: Project, progress: TrainingProgress | None, previous: FLOpsProjectStatus,
                    observation: Observation, outcome: TrainingOutcome, now: str,
                    draining: Drain | None = None) -> TrainingStatus:
    total, identity = project.spec.training.rounds, project.training_identity
    if progress is None:
        # The numbers last read stay while the tracking server cannot be read; a new training starts at 0.
        out = previous.training.model_copy() if previous.training.identity in (identity, None) else TrainingStatus()
    else:
        metric = project.spec.training.best_model.metric
        best_value = progress.best_metrics.get(metric)
        out = TrainingStatus(
            round=progress.round, latest_metrics=dict(progress.latest_metrics),
            best_metrics=dict(progress.best_metrics), best_round=progress.best_round,
            best=f"{metric}={best_value:.4f}" if best_value is not None else None,
            run_status=progress.run_status, round_overhead_seconds=progress.round_overhead_seconds,
            last_round_seconds=progress.last_round_seconds, learners_answered=progress.learners_answered,
            started_at=previous.training.started_at if previous.training.identity == identity else None,
        )
    out.identity, out.total_rounds, out.progress = identity, total, f"{out.round}/{total}"
    out.progress_percentage, out.estimated_remaining_seconds = estimate(
        out.round, total, out.last_round_seconds, succeeded=outcome.done and outcome.succeeded)
    if outcome.done and not outcome.succeeded:
        out.estimated_remaining_seconds = None  # it will not end by itself
    out.eta = human_duration(out.estimated_remaining_seconds)
    if project.spec.suspend and not outcome.done:
        out.started_at = None  # as a Kubernetes Job's: a suspension stops the deadline's clock, a resume restarts it
    elif out.started_at is None and "aggregator" in observation.services and not outcome.done:
        out.started_at = now  # the first look that saw this training's aggregator
    out.suspend_requested_at = draining.requested_at if draining is not None else None
    learners = [s for s in observation.services.values() if s.role is Role.learner]
    out.learners_running = sum(1 for s in learners if s.state is ServiceState.running)
    stopping = project.spec.suspend and not (draining is not None and draining.keep_training)
    out.learners_expected = 0 if outcome.done or stopping else project.spec.learners.replicas
    return out




def wants_learners(project: Project, progress: TrainingProgress, done: bool) -> bool:
    """The running training's aggregator admits another learner count than the spec's: ask it to follow (Flower
    refuses a SuperNode whose key it has not registered, so a learner added while training waits for this)."""
    return (not done and progress.run_id is not None and progress.run_status == "RUNNING"
            and progress.learners_tag != str(project.spec.learners.replicas))
