"""Generated per-project credentials kept in a Kubernetes Secret owned by the project.

The ownerReference lets Kubernetes garbage-collect the Secret with the project even if the
operator is gone; the finalizer path removes it explicitly too (Delete policy). With the Orphan
policy the services live on and so must their credentials: they move to a Secret nothing owns,
`<name>-flops-credentials-orphaned-<uid prefix>`, labelled flops.oakestra.io/orphaned-from=<uid>
(a new project of the same name then starts with credentials of its own). Values are never
logged: only the Secret's name appears in messages.
"""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any, Callable, Iterable

import kubernetes.client
import urllib3.exceptions
from kubernetes.client.exceptions import ApiException

from ..credentials import ReferencedSecret, changes, pick
from ..models import API_VERSION, KIND, ProjectRef
from ..platforms.base import PermanentPlatformError, TransientPlatformError

MANAGED_BY = "flops-operator"
ORPHANED_FROM = "flops.oakestra.io/orphaned-from"

STORED_TTL = 600.0
"""How long the project's generated credentials are used from memory before being read again. Only the operator
writes that Secret (adding keys, and generating anew or deleting the Flower keys with their services: such a write
reads the Secret afresh first), and its own writes update the memory: so the memory is stale only if someone else
deletes or edits the Secret (then for up to this long), or another replica added or rotated a key meanwhile (a name
not in memory is read afresh at once)."""
REFERENCED_TTL = 60.0
"""How long a usable Secret the spec names (e.g. tracking.credentialsSecret) is used from memory: a user's new
password reaches the operator's logins within a minute (a login refused meanwhile shows as a progress read error, and
is retried), and a deleted Secret or a removed opt-in label stalls the project within a minute rather than at once.
Its data is the user's to change at any time, unlike the above; a missing or unusable one is never kept."""


def secret_name(project: ProjectRef) -> str:
    return f"{project.name}-flops-credentials"


def orphaned_secret_name(project: ProjectRef) -> str:
    return f"{secret_name(project)}-orphaned-{project.uid[:8]}"


def _decode(data: dict[str, str] | None) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in (data or {}).items()}


def _encode(values: dict[str, str]) -> dict[str, str]:
    return {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}


class SecretCredentials:
    """Credentials protocol over the official client (run in a thread: the client is blocking)."""

    def __init__(self, api_client: kubernetes.client.ApiClient, *, clock: Callable[[], float] = time.monotonic):
        self._api_client = api_client
        self._core = kubernetes.client.CoreV1Api(api_client)
        # The idle look of a settled project reads its credentials every resync: at 1,000 projects that is tens of
        # Secret GETs a second against the API server for values that do not change. Kept in memory (STORED_TTL,
        # REFERENCED_TTL say how stale each may be and why that is acceptable).
        self._clock = clock
        self._stored: dict[tuple[str, str], tuple[float, dict[str, str]]] = {}
        """(namespace, uid) -> (read at, every value of the project's generated Secret, {} for none)."""
        self._named: dict[tuple[str, str], tuple[float, Any]] = {}
        """(namespace, Secret name) -> (read at, what _read_named returned)."""

    async def close(self) -> None:
        await asyncio.to_thread(self._api_client.close)

    async def ensure(self, project: ProjectRef, names: list[str], *, renew: Iterable[str] = (),
                     drop: Iterable[str] = ()) -> dict[str, str]:
        renew, drop = tuple(renew), tuple(drop)
        values = self._remembered(project, names)
        if values is None or renew or any(n in values for n in drop):
            # A name not generated yet (or not in memory), or one to generate anew or delete: read, change, write.
            values = await asyncio.to_thread(self._guarded, self._ensure, project, names, renew, drop)
            self._remember(project, values)
        return {n: values[n] for n in names}

    async def stored(self, project: ProjectRef, names: list[str]) -> dict[str, str]:
        values = self._remembered(project, names)
        if values is None:
            secret = await asyncio.to_thread(self._guarded, self._read, project)
            values = _decode(secret.data) if secret is not None else {}
            self._remember(project, values)
        return {n: values[n] for n in names if n in values}

    def _remembered(self, project: ProjectRef, names: list[str]) -> dict[str, str] | None:
        """The generated values in memory if fresh and holding every name asked for, else None (read again)."""
        at, values = self._stored.get((project.namespace, project.uid), (None, {}))
        if at is None or self._clock() - at > STORED_TTL or any(n not in values for n in names):
            return None
        return values

    def _remember(self, project: ProjectRef, values: dict[str, str]) -> None:
        self._stored[(project.namespace, project.uid)] = (self._clock(), dict(values))

    def _forget(self, project: ProjectRef) -> None:
        self._stored.pop((project.namespace, project.uid), None)

    async def _read_named_cached(self, project: ProjectRef, secret: str) -> Any:
        """_read_named's answer, read again once it is REFERENCED_TTL old. Only a usable one stays in memory (read()
        forgets one that is missing or lacks a key): a Secret created or fixed for a Stalled project is read at once."""
        key = (project.namespace, secret)
        at, found = self._named.get(key, (None, None))
        if at is None or self._clock() - at > REFERENCED_TTL:
            found = await asyncio.to_thread(self._guarded, self._read_named, project, secret)
            self._named[key] = (self._clock(), found)
        return found

    async def remove(self, project: ProjectRef) -> None:
        self._forget(project)
        await asyncio.to_thread(self._guarded, self._remove, project)

    async def read(self, project: ProjectRef, secret: str, keys: dict[str, str], *,
                   field: str = "tracking.credentialsSecret", optional: bool = False) -> dict[str, str]:
        data = await self._read_named_cached(project, secret)
        try:
            return pick(f"{project.namespace}/{secret}", data, keys, field=field, optional=optional)
        except Exception:
            self._named.pop((project.namespace, secret), None)  # unusable: the user's fix is read at the next look
            raise

    def _read_named(self, project: ProjectRef, secret: str) -> ReferencedSecret | None:
        """The named Secret's values and labels (pick refuses one without the opt-in label)."""
        try:
            found = self._core.read_namespaced_secret(secret, project.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return ReferencedSecret(_decode(found.data), dict((found.metadata and found.metadata.labels) or {}))

    async def orphan(self, project: ProjectRef) -> None:
        self._forget(project)
        await asyncio.to_thread(self._guarded, self._orphan, project)

    @staticmethod
    def _guarded(fn, *args):
        try:
            return fn(*args)
        except ApiException as exc:
            where = f"Secret {args[0].namespace}/{secret_name(args[0])}"
            if exc.status in (401, 403):
                raise PermanentPlatformError(f"{where}: the operator may not manage it ({exc.status} {exc.reason});"
                                             " check its RBAC") from None
            raise TransientPlatformError(f"{where}: Kubernetes API answered {exc.status} {exc.reason}") from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise TransientPlatformError(f"Kubernetes API unreachable: {type(exc).__name__}") from None

    def _read(self, project: ProjectRef) -> kubernetes.client.V1Secret | None:
        try:
            return self._core.read_namespaced_secret(secret_name(project), project.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def _ensure(self, project: ProjectRef, names: list[str], renew: tuple[str, ...] = (),
                drop: tuple[str, ...] = ()) -> dict[str, str]:
        secret = self._read(project)
        values = _decode(secret.data) if secret is not None else {}
        made = changes(values, names, renew, drop)
        missing = {n: v for n, v in made.items() if v is not None}
        if secret is None:
            body = kubernetes.client.V1Secret(
                metadata=kubernetes.client.V1ObjectMeta(
                    name=secret_name(project), namespace=project.namespace,
                    labels={"app.kubernetes.io/managed-by": MANAGED_BY, "flops.oakestra.io/project": project.name},
                    owner_references=[kubernetes.client.V1OwnerReference(
                        api_version=API_VERSION, kind=KIND, name=project.name, uid=project.uid, controller=True)],
                ),
                type="Opaque", data=_encode(missing),
            )
            try:
                self._core.create_namespaced_secret(project.namespace, body)
            except ApiException as exc:
                if exc.status != 409:
                    raise
                return self._ensure(project, names, renew, drop)  # created meanwhile (a retry racing us)
        elif made:
            deleted = {n: None for n in made if n not in missing}  # in a merge patch, null deletes the key
            self._core.patch_namespaced_secret(secret_name(project), project.namespace,
                                               {"data": {**_encode(missing), **deleted}})
        values.update(missing)
        for name in made.keys() - missing.keys():
            values.pop(name, None)
        return values  # all of them: ensure() keeps them in memory and answers with the names asked for

    def _remove(self, project: ProjectRef, name: str | None = None) -> None:
        try:
            self._core.delete_namespaced_secret(name or secret_name(project), project.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def _orphan(self, project: ProjectRef) -> None:
        """Copy the values to a Secret nothing owns, then delete the owned one (safe to repeat)."""
        secret = self._read(project)
        if secret is None:
            return
        copy = kubernetes.client.V1Secret(
            metadata=kubernetes.client.V1ObjectMeta(
                name=orphaned_secret_name(project), namespace=project.namespace,
                labels={**(secret.metadata.labels or {}), ORPHANED_FROM: project.uid},
                annotations={"flops.oakestra.io/note": f"credentials of the services FLOpsProject {project.name} "
                                                       "left running (deletionPolicy Orphan); delete with them"}),
            type="Opaque", data=secret.data)
        try:
            self._core.create_namespaced_secret(project.namespace, copy)
        except ApiException as exc:
            if exc.status != 409:  # copied by an earlier attempt
                raise
        self._remove(project)
