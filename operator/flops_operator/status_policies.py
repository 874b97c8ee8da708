"""The policies compute_status() is made of, cert-manager style: small pure functions over the facts of one
reconcile, each returning what it decides (a phase, or a reason and a message); the first that applies wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from . import task_build
from .models import Phase
from .models.status import TaskStatus
from .plan.diff import Action, Create, Remove, Replace, Wait
from .plan.services import Role, ServiceSpec
from .observed import Observation, ObservedService, ServiceState
from .training_state import TrainingOutcome

OK = (ServiceState.running, ServiceState.completed)


@dataclass(frozen=True)
class Facts:
    """What one reconcile saw and still has to do: the policies' only input."""

    desired: Sequence[ServiceSpec]
    observation: Observation
    pending: tuple[Action, ...]
    """Changes still to apply (Create, Replace, Remove)."""
    waits: tuple[Wait, ...]
    stack_failed: tuple[ObservedService, ...]
    """Failed services of the tracking stack (training services fail the training instead)."""
    converged: bool
    """Nothing to apply or wait for, and every desired service running (or, one-shot, completed)."""
    outcome: TrainingOutcome
    suspended: bool = False
    """spec.suspend (and the training not over)."""
    draining: bool = False
    """Suspending: the aggregator was asked to stop at its next round boundary and has not yet."""
    round: int = 0
    """The last reported round."""
    build: TaskStatus | None = None
    """A task from task.source: where its build stands."""

    @classmethod
    def gather(cls, desired: Sequence[ServiceSpec], observation: Observation, actions: Sequence[Action],
               outcome: TrainingOutcome, suspend: bool = False, draining: bool = False, round_: int = 0,
               build: TaskStatus | None = None) -> Facts:
        observed = observation.services
        pending = tuple(a for a in actions if isinstance(a, (Create, Replace, Remove)))
        waits = tuple(a for a in actions if isinstance(a, Wait))
        return cls(
            desired=desired, observation=observation, pending=pending, waits=waits,
            stack_failed=tuple(s for s in observed.values() if s.state is ServiceState.failed
                               and s.role not in (Role.aggregator, Role.learner, Role.builder)),
            converged=not draining and not pending and not waits and all(
                observed.get(s.name) is not None and observed[s.name].state in OK for s in desired),
            outcome=outcome, suspended=suspend and not outcome.done, draining=draining, round=round_, build=build,
        )

    @property
    def training_running(self) -> bool:
        aggregator = self.observation.services.get("aggregator")
        return aggregator is not None and aggregator.state is ServiceState.running


def phase(f: Facts) -> Phase:
    if f.outcome.done:
        return Phase.Completed if f.outcome.succeeded else Phase.Failed
    if task_build.failed(f.build):
        return Phase.Failed
    if f.suspended:
        return Phase.Suspended
    if task_build.building(f.build):
        return Phase.Building
    if not f.observation.services:
        return Phase.Pending
    return Phase.Training if f.training_running else Phase.Provisioning


Verdict = tuple[str, str]
"""(reason, message)"""


def training_failed(f: Facts) -> Verdict | None:
    if f.outcome.done and not f.outcome.succeeded:
        return ("DeadlineExceeded" if f.outcome.reason == "DeadlineExceeded" else "TrainingFailed"), f.outcome.message
    return None


def build_failed(f: Facts) -> Verdict | None:
    if not task_build.failed(f.build):
        return None
    assert f.build is not None
    if f.build.build_step == "resolve":
        return "SourceUnavailable", f"task.source: {f.build.build_message}"
    return "BuildFailed", f"building {f.build.source} failed at step {f.build.build_step}: {f.build.build_message}"


def building(f: Facts) -> Verdict | None:
    if not task_build.building(f.build):
        return None
    assert f.build is not None
    at = f"@{f.build.commit[:12]}" if f.build.commit else ""
    return "Building", f"building {f.build.source}{at}: {f.build.build_message or f.build.build_step}"


def stack_failed(f: Facts) -> Verdict | None:
    if f.stack_failed:
        return "ServiceFailed", "; ".join(f"{s.name} failed: {s.message or 'see its logs'}" for s in f.stack_failed)
    return None


def completed(f: Facts) -> Verdict | None:
    if f.outcome.done:
        return "Completed", "training completed" + ("" if f.converged else "; settling services")
    return None


def suspended(f: Facts) -> Verdict | None:
    if not f.suspended:
        return None
    if f.draining:
        return "Suspending", (f"suspending: the training stops at its next round boundary (after round {f.round} "
                              "was reported), its checkpoint saved; then its services are removed")
    if f.pending or f.waits:
        return "Suspending", "suspending: stopping the training services"
    return "Suspended", "suspended; spec.suspend: false resumes the training from its last finished round"


def waiting(f: Facts) -> Verdict | None:
    if not f.waits:
        return None
    message = "waiting: " + ", ".join(f"{w.name} for {'/'.join(w.waiting_for)}" for w in f.waits[:3])
    # Say what holds the awaited services back (a crash loop, a health check, a placement).
    observed = f.observation.services
    awaited = dict.fromkeys(name for w in f.waits for name in w.waiting_for)
    why = [f"{name}: {observed[name].message}" for name in awaited if name in observed and observed[name].message]
    if why:
        message += " (" + "; ".join(why) + ")"
    return "Waiting", message


def applying(f: Facts) -> Verdict | None:
    return ("Applying", f"applying {len(f.pending)} change(s)") if f.pending else None


def training(f: Facts) -> Verdict | None:
    return ("Training", "training") if f.training_running else None


def starting(f: Facts) -> Verdict:
    return "Starting", "starting services"


# Failures first (they stall the project), then what is done, then what is under way.
VERDICTS: tuple[Callable[[Facts], Verdict | None], ...] = (
    training_failed, build_failed, stack_failed, completed, suspended, building, waiting, applying, training, starting)
STALLING = ("TrainingFailed", "DeadlineExceeded", "ServiceFailed", "BuildFailed", "SourceUnavailable")


def verdict(f: Facts) -> Verdict:
    for policy in VERDICTS:
        found = policy(f)
        if found is not None:
            return found
    raise AssertionError("starting always applies")


def role_readiness(role: Role, f: Facts) -> tuple[bool, str, str]:
    """(ready, reason, message) of one component condition."""
    wanted = [s for s in f.desired if s.role is role]
    seen = [f.observation.services.get(s.name) for s in wanted]
    ready = [s for s in seen if s is not None and s.state in OK]
    failed = [s for s in seen if s is not None and s.state is ServiceState.failed]
    if failed:
        return False, "Failed", "; ".join(f"{s.name}: {s.message or 'failed'}" for s in failed)
    if len(ready) == len(wanted):
        return True, "Ready", f"{len(ready)}/{len(wanted)} ready"
    return False, "NotReady", f"{len(ready)}/{len(wanted)} ready"
