"""The gatherer: everything one reconcile step reads, read once, into one immutable World.

It reads, in this order, because each read needs what the one before found: the Secret the spec references (a
missing one stalls the project before anything is looked at), the task's source version when a training starts
(git ls-remote or a folder's digest), what runs on the platform, the builder's output, the generated credentials
the operator logs in with, and the training's progress from the tracking server. It writes nothing: what to change
is decide's (pure), the changes are act's.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Mapping

from .models import FLOpsProjectStatus, InvalidProject, Problem, Project, parse_project
from .models.edits import immutable_changes
from . import task_build
from .observed import Observation
from .plan.builder import GIT_CREDENTIALS_FIELD, GIT_PASSWORD, GIT_TOKEN, builder_service, git_credentials
from .plan.logins import login, login_values, referenced_credentials
from .platforms.base import Credentials, Platform
from .progress import ProgressSource
from .sources import SourceResolver
from .status import tracking_url
from .world import World


async def gather(manifest: dict[str, Any], previous: FLOpsProjectStatus, *, platform: Platform,
                 credentials: Credentials, progress_source: ProgressSource, sources: SourceResolver,
                 now: str) -> World:
    generation = int((manifest.get("metadata") or {}).get("generation") or 1)
    world = World(manifest=manifest, previous=previous, now=now, generation=generation)
    try:
        project = parse_project(manifest)
        changed = immutable_changes(project.spec, previous.created_with)
        if changed:
            raise InvalidProject([Problem(path, message) for path, message in changed])
    except InvalidProject as exc:
        return replace(world, problems=exc.problems)

    referenced = await referenced_values(project, credentials)
    project = await _source(project, previous, credentials, sources, now)
    observation = await platform.observe(project.ref)
    if project.task is not None:
        project = _built(project, observation, now)
    url = tracking_url(project, observation)
    reader = writer = None
    if url:
        values = {**await _stored_logins(project, credentials), **referenced}
        reader = login_values(project.spec, values, writer=False)
        writer = login_values(project.spec, values, writer=True)
    progress = await progress_source.fetch(project, url, login=reader) if url else None
    return replace(world, project=project, observation=observation, referenced=referenced, reader=reader,
                   writer=writer, url=url, progress=progress)


async def referenced_values(project: Project, credentials: Credentials) -> dict[str, str]:
    """tracking.credentialsSecret's values; MissingCredentials names what is not there."""
    keys = referenced_credentials(project.spec)
    ref = project.spec.tracking.credentials_secret
    return await credentials.read(project.ref, ref.name, keys) if keys and ref is not None else {}


async def git_login(project: Project, credentials: Credentials) -> dict[str, str]:
    """task.source.git.credentialsSecret's values by the builder's names (a token is git's HTTP password)."""
    keys = git_credentials(project)
    if not keys:
        return {}
    ref = project.spec.task.source.git.credentials_secret  # type: ignore[union-attr]
    values = await credentials.read(project.ref, ref.name, keys, field=GIT_CREDENTIALS_FIELD, optional=True)
    if not values.get(GIT_PASSWORD) and values.get(GIT_TOKEN):
        values[GIT_PASSWORD] = values[GIT_TOKEN]
    return values


async def _stored_logins(project: Project, credentials: Credentials) -> dict[str, str]:
    """The generated credentials the logins name, as stored (one read; none generated here)."""
    names = {name for writer in (False, True) if (chosen := login(project.spec, writer=writer))
             for name in chosen.secrets}
    names -= set(referenced_credentials(project.spec))
    return await credentials.stored(project.ref, sorted(names)) if names else {}


async def _source(project: Project, previous: FLOpsProjectStatus, credentials: Credentials,
                  sources: SourceResolver, now: str) -> Project:
    """A task from task.source: the version this training runs, resolved once per spec identity (a new commit on
    a branch is trained when the spec or training.trigger changes). MissingCredentials stalls the project."""
    if project.spec.task.source is None:
        return project
    version = None
    if task_build.needs_version(project, previous.task):
        version = await sources.version(project, await git_login(project, credentials))
    task = task_build.start(project, previous.task, version, now)
    return replace(project, code=task_build.code_version(task), task=task)


def _built(project: Project, observation: Observation, now: str) -> Project:
    """What the builder printed, read into status.task (its result: the images or environment to train with)."""
    assert project.task is not None
    wanted = builder_service(project).spec_hash if task_build.building(project.task) else None
    task = task_build.advance(project.task, observation.services.get("builder"), wanted, now)
    return replace(project, code=task_build.code_version(task), task=task)
