"""The Platform contract: how the reconcile step talks to wherever services run.

Every method is idempotent and safe to call again after a crash at any point:

- observe(project) reports every service of the project that exists on the platform, found by
  its deterministic name, never by an id remembered in memory: a restarted operator must find
  what an earlier one created.
- ensure(project, service, secrets) makes the service exist with this spec. If it exists with the
  same spec hash it changes nothing; if the hash differs it replaces it. It returns what it sees
  afterwards (usually starting/pending: readiness is read by the next observe).
- remove(project, name) makes the service not exist. Removing something absent succeeds.
- remove_all(project) removes every service and any per-project container (an Oakestra app).
- Transient failures (network, 5xx, timeouts) raise TransientPlatformError; the caller retries
  with backoff. Anything else that the user must fix raises PermanentPlatformError.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Protocol, runtime_checkable

from ..models import ProjectRef
from ..observed import Observation, ObservedService, ServiceState
from ..plan.services import ServiceSpec

__all__ = ["Observation", "ObservedService", "ServiceState", "Platform", "Credentials", "PlatformError",
           "TransientPlatformError", "PermanentPlatformError", "MissingCredentials"]


class PlatformError(Exception):
    pass


class TransientPlatformError(PlatformError):
    """Retry later: the platform could not be reached or answered with a temporary failure."""


class PermanentPlatformError(PlatformError):
    """Retrying will not help until someone changes something (spec, credentials, capacity)."""

    reason = "PlatformError"


class MissingCredentials(PermanentPlatformError):
    """A Secret the spec names does not exist or lacks a key: nothing is created until it does."""

    reason = "CredentialsMissing"


@runtime_checkable
class Platform(Protocol):
    name: str

    async def observe(self, project: ProjectRef) -> Observation: ...

    async def ensure(
        self, project: ProjectRef, service: ServiceSpec, secrets: Mapping[str, str]
    ) -> ObservedService: ...

    async def remove(self, project: ProjectRef, name: str) -> None: ...

    async def remove_all(self, project: ProjectRef) -> None: ...

    async def close(self) -> None: ...


class Credentials(Protocol):
    """Generated per-project credentials: a Kubernetes Secret in cluster mode, a 0600 file locally."""

    async def ensure(self, project: ProjectRef, names: list[str], *, renew: Iterable[str] = (),
                     drop: Iterable[str] = ()) -> dict[str, str]:
        """Return the named credentials, generating (and persisting) those missing and those in `renew` anew, after
        deleting those in `drop` (credentials.changes: the Flower keys' rotation, plan/flower_keys.py)."""
        ...

    async def stored(self, project: ProjectRef, names: list[str]) -> dict[str, str]:
        """The named credentials that are stored, generating none (a read: what the gatherer takes)."""
        ...

    async def read(self, project: ProjectRef, secret: str, keys: Mapping[str, str], *,
                   field: str = "tracking.credentialsSecret", optional: bool = False) -> dict[str, str]:
        """Credentials the spec references: {name: the value of key} for each name, key in `keys`, from the
        Secret `secret` of the project's namespace. MissingCredentials names the spec `field` and the Secret or key
        that is not there, or a Secret without the opt-in label (credentials.OPT_IN_LABEL: "true"), which is never
        used; with `optional`, a missing key reads as "" (the Secret must exist and opt in)."""
        ...

    async def remove(self, project: ProjectRef) -> None: ...

    async def orphan(self, project: ProjectRef) -> None:
        """The project is gone but its services stay (deletionPolicy Orphan): keep their credentials
        where they outlive it, no longer tied to it."""
        ...
