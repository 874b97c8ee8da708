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

import kubernetes.client
import urllib3.exceptions
from kubernetes.client.exceptions import ApiException

from ..credentials import generate, pick
from ..models import API_VERSION, KIND, ProjectRef
from ..platforms.base import PermanentPlatformError, TransientPlatformError

MANAGED_BY = "flops-operator"
ORPHANED_FROM = "flops.oakestra.io/orphaned-from"


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

    def __init__(self, api_client: kubernetes.client.ApiClient):
        self._api_client = api_client
        self._core = kubernetes.client.CoreV1Api(api_client)

    async def close(self) -> None:
        await asyncio.to_thread(self._api_client.close)

    async def ensure(self, project: ProjectRef, names: list[str]) -> dict[str, str]:
        return await asyncio.to_thread(self._guarded, self._ensure, project, names)

    async def remove(self, project: ProjectRef) -> None:
        await asyncio.to_thread(self._guarded, self._remove, project)

    async def read(self, project: ProjectRef, secret: str, keys: dict[str, str], *,
                   field: str = "tracking.credentialsSecret", optional: bool = False) -> dict[str, str]:
        data = await asyncio.to_thread(self._guarded, self._read_named, project, secret)
        return pick(f"{project.namespace}/{secret}", data, keys, field=field, optional=optional)

    def _read_named(self, project: ProjectRef, secret: str) -> dict[str, str] | None:
        try:
            found = self._core.read_namespaced_secret(secret, project.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return _decode(found.data)

    async def orphan(self, project: ProjectRef) -> None:
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

    def _ensure(self, project: ProjectRef, names: list[str]) -> dict[str, str]:
        secret = self._read(project)
        values = _decode(secret.data) if secret is not None else {}
        missing = {n: generate(n) for n in names if n not in values}
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
                return self._ensure(project, names)  # created meanwhile (a retry racing us): use theirs
        elif missing:
            self._core.patch_namespaced_secret(secret_name(project), project.namespace, {"data": _encode(missing)})
        values.update(missing)
        return {n: values[n] for n in names}

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
