"""The one reconcile step, called by the kopf handlers and by `flops run` alike.

observe -> read progress -> decide (pure: desired, diff, status) -> act -> observe what acting
changed -> status. Nothing here knows Kubernetes or processes.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Sequence

from .models import FLOpsProjectStatus, InvalidProject, Phase, Problem, Project, ProjectRef, parse_project
from .models.edits import immutable_changes
from .models.spec import DeletionPolicy
from .models.spec import Platform as PlatformName
from . import task_build
from .plan.builder import GIT_CREDENTIALS_FIELD, GIT_PASSWORD, GIT_TOKEN, builder_service, git_credentials
from .plan.desired import desired, model_name
from .plan.logins import Login, credential_names, login, referenced_credentials
from .plan.render import render
from .plan.diff import Action, Create, Remove, Replace, diff, effects
from .plan.services import ServiceSpec
from .platforms.base import Credentials, Observation, Platform, TransientPlatformError
from .progress import ProgressSource, TrainingProgress
from .sources import SourceResolver, Sources
from .status import announce_via, compute_status, invalid_status, tracking_url, training_outcome
from .training_state import drain, rerun, wants_learners

log = logging.getLogger(__name__)


def utcnow() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


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


async def _apply(platform: Platform, ref: ProjectRef, actions: Sequence[Action], secrets: dict[str, str],
                 observation: Observation) -> Observation:
    services = dict(observation.services)

    async def remove(name: str) -> None:
        await platform.remove(ref, name)
        services.pop(name, None)

    async def ensure(action: Create | Replace) -> None:
        needed = {n: secrets[n] for n in action.service.secrets}
        services[action.service.name] = await platform.ensure(ref, action.service, needed)

    errors: list[BaseException] = []
    for wave in ([a for a in actions if isinstance(a, Remove)],
                 [a for a in actions if isinstance(a, (Create, Replace))]):
        results = await asyncio.gather(
            *(remove(a.name) if isinstance(a, Remove) else ensure(a) for a in wave), return_exceptions=True)
        errors += [r for r in results if isinstance(r, BaseException)]
    if errors:
        # Everything that could be done was done; the first error decides how the caller retries.
        transient = [e for e in errors if isinstance(e, TransientPlatformError)]
        raise (transient[0] if transient else errors[0])
    return Observation(services, observation.application_id, observation.application_name)


_PLANS: OrderedDict[tuple, tuple[ServiceSpec, ...]] = OrderedDict()
# What of status.task the plan reads (not the build's progress messages).
_PLANNED_TASK_FIELDS = {"build_phase", "commit", "tree", "entrypoint", "image", "aggregator_image", "python_path"}
_PLANS_KEPT = 1024


def _plan(manifest: dict[str, Any], project: Project, **flags: bool) -> tuple[ServiceSpec, ...]:
    """desired(), the same list for the same inputs: its ServiceSpecs compute their spec_hash once,
    not at every reconcile (at scale, a tenth of the driver's CPU). desired() does not read the
    generation, so the spec as written, the project's identity and the flags are the whole key."""
    built = project.task.model_dump_json(include=_PLANNED_TASK_FIELDS) if project.task is not None else None
    key = (project.ref, json.dumps(manifest.get("spec"), sort_keys=True, default=str), project.code, built,
           *sorted(flags.items()))
    plan = _PLANS.get(key)
    if plan is None:
        plan = _PLANS[key] = tuple(desired(project, **flags))
        while len(_PLANS) > _PLANS_KEPT:
            _PLANS.popitem(last=False)
    else:
        _PLANS.move_to_end(key)
    return plan


async def reconcile(
    manifest: dict[str, Any],
    previous: FLOpsProjectStatus,
    *,
    platform: Platform,
    credentials: Credentials,
    progress_source: ProgressSource,
    now: str | None = None,
    sources: SourceResolver | None = None,
) -> ReconcileResult:
    """Converge one project one step. Raises TransientPlatformError for the caller to retry."""
    now = now or utcnow()
    generation = int((manifest.get("metadata") or {}).get("generation") or 1)
    try:
        project = parse_project(manifest)
        changed = immutable_changes(project.spec, previous.created_with)
        if changed:
            raise InvalidProject([Problem(path, message) for path, message in changed])
    except InvalidProject as exc:
        # Nothing is observed, applied or removed: what runs keeps running.
        return ReconcileResult(invalid_status(exc.problems, previous, generation, now=now), problems=exc.problems)

    # Before anything is observed or created: a Secret the spec names that is not there stalls the project.
    referenced = await _referenced(project, credentials)
    project = await _source(project, previous, credentials, sources or Sources(), now)
    observation = await platform.observe(project.ref)
    if project.task is not None:
        project = _built(project, observation, now)
    url = tracking_url(project, observation)
    progress = (await progress_source.fetch(project, url, login=await _login(project, credentials, referenced))
                if url else None)
    if progress is None and url and (via := announce_via(project, observation)):
        await progress_source.allow_address(project, url, via,
                                            login=await _login(project, credentials, referenced, writer=True))
    registered = bool(progress and progress.model_version) or _registered(previous, project)
    training_plan = _plan(manifest, project, training_done=False, model_registered=registered)
    aggregator_hash = next((s.spec_hash for s in training_plan if s.name == "aggregator"), None)
    outcome = training_outcome(project, observation, progress, previous, aggregator_hash=aggregator_hash, now=now)
    draining = drain(project, observation, progress, previous, outcome, now)
    if draining.request and url and progress is not None and progress.run_id:
        await progress_source.request_stop(project, url, progress.run_id, f"spec.suspend, generation {generation}",
                                           login=await _login(project, credentials, referenced, writer=True))
    if (url and progress is not None and wants_learners(project, progress, outcome.done)
            and not draining.request):
        await progress_source.request_learners(project, url, progress.run_id, project.spec.learners.replicas,
                                               login=await _login(project, credentials, referenced, writer=True))
    again = rerun(project, observation, progress, outcome)
    wanted = _plan(manifest, project, training_done=outcome.done, model_registered=registered,
                   draining=draining.keep_training)
    to_apply = effects(diff(wanted, observation.services, again))
    if to_apply:
        secrets = {**await credentials.ensure(project.ref, credential_names(project.spec)), **referenced,
                   **await _git_login(project, credentials)}
        log.info("%s: %s", project.ref.key, ", ".join(_describe(a) for a in to_apply))
        observation = await _apply(platform, project.ref, to_apply, secrets, observation)
    remaining = diff(wanted, observation.services, again)
    status = compute_status(project, wanted, observation, remaining, progress, previous, now=now, outcome=outcome,
                            draining=draining)
    return ReconcileResult(status, applied=to_apply, project=project, observation=observation, progress=progress)


# One change can take a few passes to carry out: services wait for those they depend on, which the next
# observe may already see running. Bounded: a platform that keeps changing cannot hold a caller forever.
MAX_PASSES = 6


@dataclass
class Passes:
    """What the passes of one convergence step got to, also when one of them raised."""

    status: FLOpsProjectStatus
    """The status the last finished pass computed (the previous one before any)."""
    applied: list[Action] = field(default_factory=list)
    """Everything the passes changed, in order."""
    result: ReconcileResult | None = None


async def converge(manifest: dict[str, Any], passes: Passes, *, platform: Platform, credentials: Credentials,
                   progress_source: ProgressSource, max_passes: int = MAX_PASSES,
                   sources: SourceResolver | None = None) -> ReconcileResult:
    """The one convergence step both adapters take: reconcile() again while a pass changed something.
    When to take the next step is theirs to schedule, by the same policy (pacing.Pacing). Platform errors
    propagate; `passes` then holds what was done before."""
    for _ in range(max_passes):
        result = await reconcile(manifest, passes.status, platform=platform, credentials=credentials,
                                 progress_source=progress_source, sources=sources)
        passes.applied += result.applied
        passes.status, passes.result = result.status, result
        if result.invalid or not result.applied:
            break
    assert passes.result is not None
    return passes.result


async def _source(project: Project, previous: FLOpsProjectStatus, credentials: Credentials,
                  sources: SourceResolver, now: str) -> Project:
    """A task from task.source: the version this training runs, resolved once per spec identity (a new commit on
    a branch is trained when the spec or training.trigger changes). MissingCredentials stalls the project."""
    if project.spec.task.source is None:
        return project
    version = None
    if task_build.needs_version(project, previous.task):
        version = await sources.version(project, await _git_login(project, credentials))
    task = task_build.start(project, previous.task, version, now)
    return replace(project, code=task_build.code_version(task), task=task)


def _built(project: Project, observation: Observation, now: str) -> Project:
    """What the builder printed, read into status.task (its result: the images or environment to train with)."""
    assert project.task is not None
    wanted = builder_service(project).spec_hash if task_build.building(project.task) else None
    task = task_build.advance(project.task, observation.services.get("builder"), wanted, now)
    return replace(project, code=task_build.code_version(task), task=task)


async def _git_login(project: Project, credentials: Credentials) -> dict[str, str]:
    keys = git_credentials(project)
    if not keys:
        return {}
    ref = project.spec.task.source.git.credentials_secret  # type: ignore[union-attr]
    values = await credentials.read(project.ref, ref.name, keys, field=GIT_CREDENTIALS_FIELD, optional=True)
    if not values.get(GIT_PASSWORD) and values.get(GIT_TOKEN):
        values[GIT_PASSWORD] = values[GIT_TOKEN]  # a token is a password to git's HTTP login
    return values


async def _referenced(project: Project, credentials: Credentials) -> dict[str, str]:
    keys = referenced_credentials(project.spec)
    ref = project.spec.tracking.credentials_secret
    return await credentials.read(project.ref, ref.name, keys) if keys and ref is not None else {}


class _Secrets:
    """Resolves only {{secret:NAME}} (a login's placeholders) from values at hand."""

    def __init__(self, values: dict[str, str]) -> None:
        self._values = values

    def secret(self, name: str) -> str:
        return self._values[name]


async def _login(project: Project, credentials: Credentials, referenced: dict[str, str], *,
                 writer: bool = False) -> tuple[str, str] | None:
    """The read-only login the operator reads progress with, or (`writer`) the aggregator's, with which it asks a
    run to stop for spec.suspend (None: the server takes none)."""
    chosen: Login | None = login(project.spec, writer=writer)
    if chosen is None:
        return None
    generated = [n for n in chosen.secrets if n not in referenced]
    values = {**(await credentials.ensure(project.ref, generated) if generated else {}), **referenced}
    resolver = _Secrets(values)
    return render(chosen.username, resolver), render(chosen.password, resolver)  # type: ignore[arg-type]


def _registered(previous: FLOpsProjectStatus, project: Project) -> bool:
    """An earlier training registered a model where the spec's registry points (a model server can serve
    it while a new training runs); after a registry edit, only the new training's model counts."""
    model = previous.model
    return bool(model.version) and model.name == model_name(project) and model.alias == project.spec.registry.alias


def _describe(action: Action) -> str:
    if isinstance(action, Remove):
        return f"remove {action.name}"
    return f"{type(action).__name__.lower()} {action.service.name}"


def project_ref(manifest: dict[str, Any]) -> ProjectRef:
    """The identity of a project even when its spec no longer validates (for cleanup)."""
    meta = manifest.get("metadata") or {}
    namespace, name = meta.get("namespace") or "default", meta.get("name") or ""
    return ProjectRef(namespace=namespace, name=name, uid=str(meta.get("uid") or f"local-{namespace}-{name}"))


@dataclass(frozen=True)
class Cleanup:
    """What deleting a project takes, read from whatever its manifest holds (any shape)."""

    orphan: bool
    """spec.deletionPolicy Orphan: its services stay."""
    platform: str | None
    """Where its services would be; None when neither spec nor status names a platform that holds any."""
    created: bool
    """Its status shows something it created (services, an Oakestra application)."""


def cleanup_plan(manifest: Any) -> Cleanup:
    """Pure. The platform comes from the spec while it names one (even if the spec is otherwise
    invalid); otherwise from the status, if that shows anything created."""
    manifest = manifest if isinstance(manifest, dict) else {}
    spec, status = manifest.get("spec"), manifest.get("status")
    spec = spec if isinstance(spec, dict) else None
    status = status if isinstance(status, dict) else {}
    oakestra = status.get("oakestra") if isinstance(status.get("oakestra"), dict) else {}
    created = bool(status.get("components")) or bool(oakestra.get("applicationId"))
    named = spec.get("platform", PlatformName.local.value) if spec is not None else None
    if isinstance(named, str) and named in {p.value for p in PlatformName}:
        platform = named
    elif created:
        platform = PlatformName.oakestra.value if oakestra else PlatformName.local.value
    else:
        platform = None
    return Cleanup(orphan=spec is not None and spec.get("deletionPolicy") == DeletionPolicy.Orphan.value,
                   platform=platform, created=created)


async def finalize(manifest: dict[str, Any], *, platform: Platform | None, credentials: Credentials) -> bool:
    """Clean up a deleted project according to its deletionPolicy. Returns True if it removed
    services; `platform` None: nothing of it is on any platform (it never created anything)."""
    plan, ref = cleanup_plan(manifest), project_ref(manifest)
    if plan.orphan:
        log.info("%s: deletionPolicy Orphan: leaving its services and their credentials in place", ref.key)
        await credentials.orphan(ref)
        return False
    if platform is not None:
        await platform.remove_all(ref)
    await credentials.remove(ref)
    return platform is not None
