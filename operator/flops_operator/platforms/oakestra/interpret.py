"""What a stored Oakestra service means (pure): its state, and which instance calls it needs.

Only per-instance statuses are trusted for readiness: the job-level status is whatever its last
writer set and goes stale (oakestra-api.md §7.2). The job-level status is used for what only it
carries: a pending request (REQUESTED) and negative scheduling answers, which add no instance.
Oakestra re-deploys FAILED/DEAD instances every 15 s, so RUNNING once is not ready: ready is its
health endpoint answering (history.py probes it) or, for a service without one, RUNNING held for a
stated time; a one-shot service that ended DEAD has failed its run.

Instance logs reach status (the last lines of a failing instance, the builder's output): they are redacted here,
before anything is cut, with the platform's own credentials (flops_operator.redaction); the reconcile step then
blanks the project's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ...plan.services import Role
from ...observed import ObservedService, ServiceState
from ...redaction import SHAPES_ONLY, Redactor, tail
from .sla import Identity, identity

ROOT_NEGATIVE = frozenset({"TargetClusterNotFound", "TargetClusterNotActive", "NoActiveClusterWithCapacity"})
CLUSTER_NEGATIVE = frozenset({"NO_WORKER_CAPACITY", "NO_QUALIFIED_WORKER_FOUND", "NO_NODE_FOUND"})
# Oakestra's cluster re-deploys these every 15 s: a failure only if it lasts.
FAILING = frozenset({"FAILED", "DEAD", "UNDEPLOYED"}) | CLUSTER_NEGATIVE
STARTING = frozenset({"CLUSTER_SCHEDULED", "NODE_SCHEDULED", "CREATING", "CREATED"})
WAITING_DETAIL = "Waiting for scheduling decision"
WANTED_INSTANCES = 1
LOG_LINES, LOG_CHARS = 3, 300


@dataclass(frozen=True)
class Instance:
    number: int
    status: str
    detail: str = ""
    publicip: str | None = None
    logs: str = ""
    """The container's last lines, as the node engine reports them."""

    def log_tail(self, redactor: Redactor = SHAPES_ONLY) -> str:
        return tail(self.logs, lines=LOG_LINES, limit=LOG_CHARS, redactor=redactor)


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
    one_shot: bool = False

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
                                  item.get("publicip") or None, str(item.get("logs") or "")))
    return StoredService(
        id=str(raw_id), oakestra_name=str(doc.get("microservice_name") or ""), identity=identity(doc),
        rr_ip=doc.get("RR_ip") or (doc.get("addresses") or {}).get("rr_ip"),
        status=doc.get("status"), status_detail=str(doc.get("status_detail") or ""),
        instances=tuple(sorted(instances, key=lambda i: i.number)),
        one_shot=bool(doc.get("one_shot")),
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


@dataclass
class Track:
    status: str
    since: float
    """When the driver first saw this instance in this status (the start of the streak as seen)."""
    falls: int = 0
    """Times the driver saw it enter FAILED/DEAD: each is a crash Oakestra then re-deploys."""
    healthy: bool = False
    """Its health endpoint answered 200 during the current RUNNING streak."""
    probe_error: str | None = None
    """Why the last health check did not pass."""


def _fell(track: Track | None) -> str:
    if track is None or track.falls < 1:
        return ""
    return f"; fell {track.falls} time{'s' if track.falls != 1 else ''}"


def _logs(inst: Instance, redactor: Redactor) -> str:
    text = inst.log_tail(redactor)
    return f"; last log lines: {text}" if text else ""


def judge(svc: StoredService, *, now: float, tracks: Mapping[int, Track], grace: float,
          unschedulable_since: float | None, unschedulable_retry: float, ready_after: float = 0.0,
          health_checks: bool = False, wanted: int = WANTED_INSTANCES,
          redactor: Redactor = SHAPES_ONLY) -> Verdict:
    """The service's state from its document and the driver's history of its instances (`tracks`, by
    instance number; `since` is when the driver first saw the current status). `redactor` is applied to the log
    lines a message quotes."""
    keep, surplus = svc.instances[:wanted], tuple(i.number for i in svc.instances[wanted:])
    missing = wanted - len(keep)

    def held(inst: Instance) -> float:
        track = tracks.get(inst.number)
        return now - track.since if track is not None and track.status == inst.status else 0.0

    if svc.one_shot:
        dead = [i for i in keep if i.status == "DEAD"]
        if dead:
            # Its one run is over: it exited with an error or was killed (Oakestra reports no exit code).
            first = dead[0]
            return Verdict(ServiceState.failed, f"instance {first.number} DEAD: stopped before finishing its run "
                           f"(an error exit or killed){_logs(first, redactor)}", undeploy=surplus)
    overdue = [i for i in keep if i.status in FAILING and held(i) >= grace]
    if overdue:
        first = overdue[0]
        return Verdict(ServiceState.failed, f"instance {first.number} {first.status} for {int(held(first))}s: "
                       f"{first.detail or 'Oakestra gave no detail'}{_fell(tracks.get(first.number))}"
                       f"{_logs(first, redactor)}",
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
        checked = health_checks and bool(svc.identity and set(svc.identity.health) & set(svc.identity.host_ports))
        waiting = []
        for inst in (i for i in keep if i.status == "RUNNING"):
            track = tracks.get(inst.number)
            if checked and not (track is not None and track.healthy):
                why = track.probe_error if track is not None and track.probe_error else "not checked yet"
                waiting.append(f"instance {inst.number} RUNNING; health check: {why}")
            elif not checked and held(inst) < ready_after:
                waiting.append(f"instance {inst.number} RUNNING for {int(held(inst))}s "
                               f"(ready once up {ready_after:g}s){_fell(track)}")
        if waiting:
            return Verdict(ServiceState.starting, "; ".join(waiting), undeploy=surplus)
        fell = "".join(_fell(tracks.get(i.number)) for i in keep)
        return Verdict(ServiceState.running, fell[2:] or None, undeploy=surplus)
    busy = any(i.status in STARTING or i.status in FAILING for i in keep)
    message = "; ".join(
        f"instance {i.number} {i.status}" + (f": {i.detail}" if i.detail else "")
        + (f" (Oakestra re-deploys it{_fell(tracks.get(i.number))}){_logs(i, redactor)}" if i.status in FAILING else "")
        for i in keep if i.status not in ("RUNNING", "COMPLETED"))
    return Verdict(ServiceState.starting if busy else ServiceState.pending, message or None, undeploy=surplus)


def observed(svc: StoredService, verdict: Verdict, *, spec_hash: str,
             redactor: Redactor = SHAPES_ONLY) -> ObservedService:
    """The platform-neutral view. `spec_hash` is what the reconcile step compares with the plan; `redactor` blanks
    the platform's credentials out of the message (Oakestra's details too) and the builder's output."""
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
        service_id=svc.id, address=address, external_address=external,
        message=redactor(verdict.message) if verdict.message else None,
        exit_code=verdict.exit_code,
        # The builder's result is its last log line; other services' logs reach status only through messages.
        output=redactor(svc.instances[0].logs if svc.instances else "") if role is Role.builder else "",
    )


def _role_from_name(name: str) -> Role:
    for role in Role:
        if name == role.value or name.startswith(f"{role.value}-"):
            return role
    return Role.learner
