"""The decision of one reconcile step, pure: from the World the gatherer read to what to change and the status.

What to change: the control writes to the training's tracking server (its allowed address, a stop request for
spec.suspend, the learner count to admit), the services to remove, create or replace, and the generated
credentials those services need. The status is a function of what acting left on the platform (`result`), so a
step reports what it did, not what it meant to do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from .models import FLOpsProjectStatus, Phase, Problem, Project
from .observed import Observation
from .plan.cache import planned
from .plan.desired import model_name
from .plan.diff import Action, Create, Remove, Replace, diff, effects
from .plan.flower_keys import key_changes
from .plan.logins import credential_names
from .plan.services import ServiceSpec
from .progress import TrainingProgress
from .status import announce_via, compute_status, invalid_status, training_outcome
from .world import World
from .training_state import Drain, TrainingOutcome, drain, rerun, wants_learners


@dataclass(frozen=True)
class AllowAddress:
    """Make the project's own tracking server answer at `url` (told through `via`, an address it accepts)."""

    url: str
    via: str
    login: tuple[str, str] | None = field(default=None, repr=False)


@dataclass(frozen=True)
class RequestStop:
    """Ask the run's aggregator to stop at its next round boundary (spec.suspend)."""

    url: str
    run_id: str
    reason: str
    login: tuple[str, str] | None = field(default=None, repr=False)


@dataclass(frozen=True)
class RequestLearners:
    """Ask the run's aggregator to admit exactly `count` learners."""

    url: str
    run_id: str
    count: int
    login: tuple[str, str] | None = field(default=None, repr=False)


ControlWrite = Union[AllowAddress, RequestStop, RequestLearners]


@dataclass
class ReconcileResult:
    status: FLOpsProjectStatus
    applied: list[Action] = field(default_factory=list)
    problems: list[Problem] | None = None
    project: Project | None = None
    observation: Observation | None = None
    progress: TrainingProgress | None = None

    @property
    def invalid(self) -> bool:
        return self.problems is not None

    @property
    def settled(self) -> bool:
        """Training is over (or suspended) and the platform matches the plan: a local run may stop here."""
        # An invalid spec is phase Failed too; a Completed project still removing services is not settled.
        ready = self.status.condition("Ready")
        return self.status.phase is Phase.Failed or (
            self.status.phase in (Phase.Completed, Phase.Suspended) and ready is not None and ready.status == "True")


@dataclass(frozen=True)
class Decision:
    world: World
    control: tuple[ControlWrite, ...] = ()
    """In this order, before any service changes."""
    services: tuple[Action, ...] = ()
    """Removals, then creations and replacements (Create/Replace/Remove only)."""
    credentials: tuple[str, ...] = ()
    """The generated credentials the services are created with (generated where missing, then handed over)."""
    renew: tuple[str, ...] = ()
    """Generated credentials to generate anew first: the keys of the services created or replaced (flower_keys)."""
    drop: tuple[str, ...] = ()
    """Generated credentials to delete: the keys of the services removed (flower_keys)."""
    wanted: tuple[ServiceSpec, ...] = ()
    again: frozenset[str] = frozenset()
    outcome: TrainingOutcome | None = None
    draining: Drain | None = None

    def result(self, observation: Observation) -> ReconcileResult:
        """The step's result once acting left `observation` on the platform."""
        world = self.world
        if world.problems is not None:
            # Nothing is observed, applied or removed: what runs keeps running.
            status = invalid_status(world.problems, world.previous, world.generation, now=world.now)
            return ReconcileResult(status, problems=world.problems)
        assert world.project is not None
        remaining = diff(self.wanted, observation.services, self.again)
        status = compute_status(world.project, self.wanted, observation, remaining, world.progress, world.previous,
                                now=world.now, outcome=self.outcome, draining=self.draining)
        return ReconcileResult(status, applied=list(self.services), project=world.project, observation=observation,
                               progress=world.progress)


def decide(world: World) -> Decision:
    if world.problems is not None:
        return Decision(world)
    project, observation, progress, previous = world.project, world.observation, world.progress, world.previous
    assert project is not None
    control: list[ControlWrite] = []
    if progress is None and world.url and (via := announce_via(project, observation)):
        control.append(AllowAddress(world.url, via, world.writer))
    registered = bool(progress and progress.model_version) or _registered(previous, project)
    training_plan = planned(world.manifest, project, training_done=False, model_registered=registered)
    aggregator_hash = next((s.spec_hash for s in training_plan if s.name == "aggregator"), None)
    outcome = training_outcome(project, observation, progress, previous, aggregator_hash=aggregator_hash,
                               now=world.now)
    draining = drain(project, observation, progress, previous, outcome, world.now)
    if draining.request and world.url and progress is not None and progress.run_id:
        control.append(RequestStop(world.url, progress.run_id, f"spec.suspend, generation {world.generation}",
                                   world.writer))
    if (world.url and progress is not None and wants_learners(project, progress, outcome.done)
            and not draining.request):
        control.append(RequestLearners(world.url, progress.run_id, project.spec.learners.replicas,  # type: ignore
                                       world.writer))
    again = rerun(project, observation, progress, outcome)
    wanted = planned(world.manifest, project, training_done=outcome.done, model_registered=registered,
                     draining=draining.keep_training)
    services = tuple(effects(diff(wanted, observation.services, again)))
    keys = key_changes(services, observation.services)
    return Decision(world, control=tuple(control), services=services, credentials=_used(project, services),
                    renew=keys.renew if services else (), drop=keys.drop if services else (),
                    wanted=wanted, again=again, outcome=outcome, draining=draining)


def _used(project: Project, services: tuple[Action, ...]) -> tuple[str, ...]:
    """The generated credentials the services created or replaced use."""
    used = {name for a in services if isinstance(a, (Create, Replace)) for name in a.service.secrets}
    return tuple(name for name in credential_names(project.spec) if name in used)


def _registered(previous: FLOpsProjectStatus, project: Project) -> bool:
    """An earlier training registered a model where the spec's registry points (a model server can serve
    it while a new training runs); after a registry edit, only the new training's model counts."""
    model = previous.model
    return bool(model.version) and model.name == model_name(project) and model.alias == project.spec.registry.alias


def describe(action: Action) -> str:
    if isinstance(action, Remove):
        return f"remove {action.name}"
    assert isinstance(action, (Create, Replace))
    return f"{type(action).__name__.lower()} {action.service.name}"
