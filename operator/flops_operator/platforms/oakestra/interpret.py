"""What a stored Oakestra service means (pure): its state, and which instance calls it needs.

Only per-instance statuses are trusted for readiness: the job-level status is whatever its last
writer set and goes stale (oakestra-api.md §7.2). The job-level status is used for what only it
carries: a pending request (REQUESTED) and negative scheduling answers, which add no instance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ...plan.services import Role
from ..base import ObservedService, ServiceState
from .sla import Identity, identity

ROOT_NEGATIVE = frozenset({"TargetClusterNotFound", "TargetClusterNotActive", "NoActiveClusterWithCapacity"})
CLUSTER_NEGATIVE = frozenset({"NO_WORKER_CAPACITY", "NO_QUALIFIED_WORKER_FOUND", "NO_NODE_FOUND"})
# Oakestra's cluster re-deploys these every 15 s: a failure only if it lasts.
FAILING = frozenset({"FAILED", "DEAD", "UNDEPLOYED"}) | CLUSTER_NEGATIVE
STARTING = frozenset({"CLUSTER_SCHEDULED", "NODE_SCHEDULED", "CREATING", "CREATED"})
WAITING_DETAIL = "Waiting for scheduling decision"
WANTED_INSTANCES = 1


@dataclass(frozen=True)
class Instance:
    number: int
    status: str
    detail: str = ""
    publicip: str | None = None


@dataclass(frozen=True)
class StoredService:
    """One service document from GET /api/services/{appid}, reduced to what decisions need."""

    id: str
    oakestra_name: str
    identity: Identity | None
    rr_ip: str | None
    status: str | None
    status_detail: str
    instances: tuple[Instance, ...]

    @property
    def name(self) -> str | None:
        return self.identity.service if self.identity else None


def parse(doc: Mapping[str, Any]) -> StoredService:
    raw_id = doc.get("microserviceID") or (doc.get("_id") or {}).get("$oid") or ""
    instances = []
    for item in doc.get("instance_list") or []:
        try:
            number = int(item.get("instance_number"))
        except (TypeError, ValueError):
            continue
        instances.append(Instance(number, str(item.get("status") or ""), str(item.get("status_detail") or ""),
                                  item.get("publicip") or None))
    return StoredService(
        id=str(raw_id), oakestra_name=str(doc.get("microservice_name") or ""), identity=identity(doc),
        rr_ip=doc.get("RR_ip") or (doc.get("addresses") or {}).get("rr_ip"),
        status=doc.get("status"), status_detail=str(doc.get("status_detail") or ""),
        instances=tuple(sorted(instances, key=lambda i: i.number)),
    )


@dataclass(frozen=True)
class Verdict:
    state: ServiceState
    message: str | None = None
    exit_code: int | None = None
    deploy: int = 0
    """Instances to request now (POST .../instance once each)."""
    undeploy: tuple[int, ...] = ()
    """Surplus instance numbers to remove."""
    unschedulable: bool = False
    """Oakestra answered the last request with a negative scheduling status."""


def judge(svc: StoredService, *, now: float, failing_since: Mapping[int, float], grace: float,
          unschedulable_since: float | None, unschedulable_retry: float,
          wanted: int = WANTED_INSTANCES) -> Verdict:
    """The service's state; `failing_since`/`unschedulable_since` are when the driver first saw that."""
    keep, surplus = svc.instances[:wanted], tuple(i.number for i in svc.instances[wanted:])
    missing = wanted - len(keep)
    failing = {i.number: now - failing_since.get(i.number, now) for i in keep if i.status in FAILING}
    overdue = [i for i in keep if i.number in failing and failing[i.number] >= grace]
    if overdue:
        first = overdue[0]
        return Verdict(ServiceState.failed, f"instance {first.number} {first.status} for "
                       f"{int(failing[first.number])}s: {first.detail or 'Oakestra gave no detail'}",
                       undeploy=surplus)
    if missing and svc.status in ROOT_NEGATIVE | CLUSTER_NEGATIVE:
        detail = f" ({svc.status_detail})" if svc.status_detail and svc.status_detail != WAITING_DETAIL else ""
        since = now if unschedulable_since is None else unschedulable_since
        retry = missing if now - since >= unschedulable_retry else 0
        return Verdict(ServiceState.failed, f"Oakestra could not place it: {svc.status}{detail}",
                       deploy=retry, undeploy=surplus, unschedulable=True)
    if missing and svc.status == "REQUESTED":
        return Verdict(ServiceState.pending, "waiting for Oakestra's scheduling decision", undeploy=surplus)
    if missing:
        return Verdict(ServiceState.pending, "instance not requested yet", deploy=missing, undeploy=surplus)
    if all(i.status == "COMPLETED" for i in keep):
        return Verdict(ServiceState.completed, exit_code=0, undeploy=surplus)
    if all(i.status in ("RUNNING", "COMPLETED") for i in keep):
        return Verdict(ServiceState.running, undeploy=surplus)
    busy = any(i.status in STARTING or i.status in FAILING for i in keep)
    message = "; ".join(
        f"instance {i.number} {i.status}" + (f": {i.detail}" if i.detail else "")
        + (" (Oakestra retries it)" if i.status in FAILING else "")
        for i in keep if i.status not in ("RUNNING", "COMPLETED"))
    return Verdict(ServiceState.starting if busy else ServiceState.pending, message or None, undeploy=surplus)


def observed(svc: StoredService, verdict: Verdict, *, spec_hash: str) -> ObservedService:
    """The platform-neutral view. `spec_hash` is what the reconcile step compares with the plan."""
    ident = svc.identity
    ports = dict(ident.ports) if ident else {}
    address = f"{svc.rr_ip}:{next(iter(ports.values()))}" if svc.rr_ip and ports else svc.rr_ip
    external = None
    if ident and ident.host_ports:
        publicip = next((i.publicip for i in svc.instances if i.publicip and i.status == "RUNNING"),
                        next((i.publicip for i in svc.instances if i.publicip), None))
        if publicip:
            external = f"{publicip}:{next(iter(ident.host_ports.values()))}"
    try:
        role = Role(ident.role) if ident and ident.role else _role_from_name(ident.service if ident else "")
    except ValueError:
        role = _role_from_name(ident.service if ident else "")
    return ObservedService(
        name=ident.service if ident else svc.oakestra_name, role=role, state=verdict.state, spec_hash=spec_hash,
        service_id=svc.id, address=address, external_address=external, message=verdict.message,
        exit_code=verdict.exit_code,
    )


def _role_from_name(name: str) -> Role:
    for role in Role:
        if name == role.value or name.startswith(f"{role.value}-"):
            return role
    return Role.learner
