"""The actor: carries out a Decision. Control writes to the tracking server first (best effort: one not written
is decided again at the next look), then the services: removals, then creations and replacements, each wave in
parallel. The credential values the services are created with are fetched here, generated where missing (and the
Flower keys the decision renews or drops, plan/flower_keys.py), and handed to the platform only: no decision reads
them.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Sequence

from .control import TrainingControl
from .decide import AllowAddress, Decision, RequestLearners, RequestStop, describe
from .gather import git_login
from .models import Project, ProjectRef
from .observed import Observation
from .plan.diff import Action, Create, Remove, Replace
from .platforms.base import Credentials, Platform, TransientPlatformError

log = logging.getLogger(__name__)


async def act(decision: Decision, *, platform: Platform, credentials: Credentials,
              control: TrainingControl) -> Observation:
    """What the platform holds afterwards (the observation the decision was made on, when nothing changed)."""
    world = decision.world
    project = world.project
    if project is None:
        return world.observation
    for write in decision.control:
        await _send(write, project, control)
    if not decision.services:
        return world.observation
    generated = await credentials.ensure(project.ref, list(decision.credentials), renew=decision.renew,
                                         drop=decision.drop)
    secrets = {**generated, **(world.referenced or {}), **await git_login(project, credentials)}
    log.info("%s: %s", project.ref.key, ", ".join(describe(a) for a in decision.services))
    return await _apply(platform, project.ref, decision.services, secrets, world.observation)


async def _send(write: AllowAddress | RequestStop | RequestLearners, project: Project,
                control: TrainingControl) -> bool:
    if isinstance(write, AllowAddress):
        return await control.allow_address(project, write.url, write.via, login=write.login)
    if isinstance(write, RequestStop):
        return await control.request_stop(project, write.url, write.run_id, write.reason, login=write.login)
    return await control.request_learners(project, write.url, write.run_id, write.count, login=write.login)


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
