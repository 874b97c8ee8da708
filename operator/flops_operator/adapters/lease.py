"""One coordination.k8s.io/v1 Lease, read and written with compare-and-swap (the leader election's storage).

Every write that takes or keeps the Lease is a JSON patch whose first operation is a `test`: the API server
applies the whole patch against the object as it is at that moment, or refuses it (422). Taking the Lease
tests the resourceVersion the caller judged expired, so of two standbys that judged the same record only
one wins; renewing and releasing test that we are still the holder, so a leader that was replaced cannot
write over its successor. (A PUT with resourceVersion would do the same; the patch needs only `patch` in
RBAC and is what kopf itself uses for its finalizer.)

The official client is blocking: its calls run in a thread of their own, so that a renewal never queues
behind other work in the default executor (a late renewal is a lost leadership).
"""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, TypeVar

import kubernetes.client
from kubernetes.client.exceptions import ApiException

JSON_PATCH = "application/json-patch+json"
# 409: the Lease was created meanwhile (create) or the server gave up retrying a write; 422: a `test` failed.
LOST_RACE = (409, 422)
T = TypeVar("T")


def _missing_kind(exc: ApiException) -> str | None:
    """What a 404 says is missing: the Lease (fine: it gets created) or its namespace (it never will be)."""
    try:
        return json.loads(exc.body or "{}").get("details", {}).get("kind")
    except (ValueError, AttributeError):
        return None


class LeaseError(Exception):
    """The Lease cannot be used at all (forbidden, no such namespace): waiting would not help."""


@dataclass(frozen=True)
class LeaseRecord:
    version: str
    """metadata.resourceVersion: changes with every write, so a standby can tell a renewal from silence."""
    holder: str
    duration: float
    transitions: int


def micro_time(now: datetime | None = None) -> str:
    """A Lease's MicroTime (RFC 3339 with microseconds). Informational: `kubectl get lease` shows it; the
    election judges expiry by its own clock, never by comparing the holder's clock with ours."""
    return (now or datetime.now(timezone.utc)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseLock:
    """Each method returns a future of the Lease's own thread, not a coroutine: awaited with a timeout through
    asyncio.wait, it makes no task that kopf, when it stops, would take for one of its own and cancel."""

    def __init__(self, api_client: kubernetes.client.ApiClient, namespace: str, name: str,
                 request_timeout: float) -> None:
        self.namespace, self.name = namespace, name
        self._api = kubernetes.client.CoordinationV1Api(api_client)
        self._timeout = request_timeout
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flops-lease")

    def __str__(self) -> str:
        return f"Lease {self.namespace}/{self.name}"

    def close(self) -> None:
        self._thread.shutdown(wait=False, cancel_futures=True)
        self._api.api_client.close()

    def read(self) -> asyncio.Future[LeaseRecord | None]:
        return self._in_thread(self._read)

    def create(self, identity: str, duration: int) -> asyncio.Future[bool]:
        """Take a Lease that does not exist yet; False if another created it first."""
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": self._held_by(identity, duration, transitions=0)}
        return self._in_thread(self._won, self._api.create_namespaced_lease, self.namespace, body)

    def take(self, seen: LeaseRecord, identity: str, duration: int) -> asyncio.Future[bool]:
        """Take the Lease over if it is still exactly the record judged expired or free."""
        transitions = seen.transitions + (seen.holder != identity)
        return self._patch([{"op": "test", "path": "/metadata/resourceVersion", "value": seen.version},
                            {"op": "add", "path": "/spec", "value": self._held_by(identity, duration, transitions)}])

    def renew(self, identity: str) -> asyncio.Future[bool]:
        """Move renewTime on; False if someone else holds the Lease now."""
        return self._patch([{"op": "test", "path": "/spec/holderIdentity", "value": identity},
                            {"op": "add", "path": "/spec/renewTime", "value": micro_time()}])

    def release(self, identity: str) -> asyncio.Future[bool]:
        """Free the Lease on a clean stop, so that a standby takes it at its next look instead of after the
        lease duration (client-go's ReleaseOnCancel writes the same: no holder, a 1 s duration)."""
        return self._patch([{"op": "test", "path": "/spec/holderIdentity", "value": identity},
                            {"op": "add", "path": "/spec/holderIdentity", "value": ""},
                            {"op": "add", "path": "/spec/leaseDurationSeconds", "value": 1}])

    @staticmethod
    def _held_by(identity: str, duration: int, transitions: int) -> dict[str, Any]:
        now = micro_time()
        return {"holderIdentity": identity, "leaseDurationSeconds": duration, "acquireTime": now,
                "renewTime": now, "leaseTransitions": transitions}

    def _patch(self, ops: list[dict[str, Any]]) -> asyncio.Future[bool]:
        return self._in_thread(self._won, self._api.patch_namespaced_lease, self.name, self.namespace, ops,
                               _content_type=JSON_PATCH)

    def _in_thread(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> asyncio.Future[T]:
        return asyncio.get_running_loop().run_in_executor(self._thread, lambda: call(*args, **kwargs))

    # In the Lease's thread.
    def _read(self) -> LeaseRecord | None:
        try:
            lease = self._request(self._api.read_namespaced_lease, self.name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        spec = lease.spec
        return LeaseRecord(version=lease.metadata.resource_version, holder=spec.holder_identity or "",
                           duration=float(spec.lease_duration_seconds or 0), transitions=spec.lease_transitions or 0)

    def _won(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> bool:
        try:
            self._request(call, *args, **kwargs)
        except ApiException as exc:
            if exc.status in LOST_RACE:
                return False
            raise
        return True

    def _request(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            return call(*args, _request_timeout=self._timeout, **kwargs)
        except ApiException as exc:
            if exc.status in (401, 403) or (exc.status == 404 and _missing_kind(exc) == "namespaces"):
                raise LeaseError(f"cannot use {self}: {exc.status} {exc.reason}") from None
            raise
