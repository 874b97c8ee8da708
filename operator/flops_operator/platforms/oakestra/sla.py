"""ServiceSpec -> SLA v2.0 (pure): placeholders resolved to round-robin IPs, identity recorded.

Oakestra stores unknown SLA fields verbatim and hands them back on every read, so each service
carries a `flops_operator` record: which logical service it is, the spec hash it was created from,
its named ports and the peer addresses its command/env were rendered with. The same identity is
also in the environment (FLOPS_SERVICE, FLOPS_SPEC_HASH), should a future Oakestra drop unknown
fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from ...models import ProjectRef
from ...plan.images import IMAGE_REGISTRY
from ...plan.render import render_service
from ...plan.services import ServiceSpec
from . import names

SLA_VERSION = "v2.0"
META = "flops_operator"
ENV_SERVICE = "FLOPS_SERVICE"
ENV_SPEC_HASH = "FLOPS_SPEC_HASH"


@dataclass(frozen=True)
class Peer:
    """What other services need to reach one service: its round-robin IP and named ports."""

    rr_ip: str
    ports: Mapping[str, int]


class MissingPeer(LookupError):
    """A placeholder names a service that does not exist (yet) on Oakestra."""


@dataclass
class OakestraResolver:
    """render.Resolver for Oakestra: services reach each other at rr_ip:containerPort."""

    service: ServiceSpec
    rr_ip: str
    peers: Mapping[str, Peer]
    secrets: Mapping[str, str]
    workdir_path: str
    registry_prefix: str = IMAGE_REGISTRY
    used: dict[str, str] = field(default_factory=dict)
    """Peer name -> the rr_ip this rendering used (stored, to notice when a peer moved)."""

    def _peer(self, name: str) -> Peer:
        if name == self.service.name:
            return Peer(self.rr_ip, {p.name: p.container_port for p in self.service.ports})
        peer = self.peers.get(name)
        if peer is None:
            raise MissingPeer(name)
        self.used[name] = peer.rr_ip
        return peer

    def address(self, service: str, port: str) -> str:
        peer = self._peer(service)
        if port not in peer.ports:
            raise MissingPeer(f"{service} (port {port})")
        return f"{peer.rr_ip}:{peer.ports[port]}"

    def host(self, service: str) -> str:
        return self._peer(service).rr_ip

    def own_port(self, port: str) -> int:
        return self.service.port(port).container_port

    def bind(self) -> str:
        return "0.0.0.0"

    def secret(self, name: str) -> str:
        return self.secrets[name]

    def workdir(self) -> str:
        return self.workdir_path

    def registry(self) -> str:
        return self.registry_prefix


def port_string(host_ports: Mapping[str, int], service: ServiceSpec) -> str | None:
    """Oakestra's `port` field: "host:container/tcp" for each published port, ';'-separated."""
    parts = [f"{host_ports[p.name]}:{p.container_port}/tcp" for p in service.ports if p.published]
    return ";".join(parts) or None


def application(project: ProjectRef, customer: str, app_id: str = "",
                microservices: list[dict] | None = None) -> dict:
    return {
        "sla_version": SLA_VERSION,
        "customerID": customer,
        "applications": [{
            "applicationID": app_id,
            "application_name": names.app_name(project),
            "application_namespace": names.app_namespace(project),
            "application_desc": f"FLOps project {project.key} (uid {project.uid})",
            "microservices": microservices or [],
        }],
    }


def microservice(project: ProjectRef, service: ServiceSpec, *, rr_ip: str, peers: Mapping[str, Peer],
                 secrets: Mapping[str, str], workdir: str, port_range: tuple[int, int],
                 image: str | None = None, registry: str = IMAGE_REGISTRY,
                 env_hook: Callable[[Mapping[str, str]], dict[str, str]] | None = None) -> dict:
    """The SLA microservice for one ServiceSpec. Raises MissingPeer if a referenced service is absent. `env_hook`
    adds what the platform alone knows (the build registry's login) to the rendered env."""
    resolver = OakestraResolver(service, rr_ip, peers, secrets, workdir, registry)
    command, env = render_service(service, resolver)
    if env_hook is not None:
        env = env_hook(env)
    spec_hash = service.spec_hash  # computed, not stored: hash it once
    env = {**env, ENV_SERVICE: service.name, ENV_SPEC_HASH: spec_hash}
    host_ports = {p.name: names.host_port(project.uid, service.name, p.name, port_range)
                  for p in service.ports if p.published}
    ms: dict[str, Any] = {
        "microserviceID": "",
        "microservice_name": names.service_name(service.name),
        "microservice_namespace": names.SERVICE_NAMESPACE,
        "virtualization": "container",
        "cmd": command,
        "environment": [f"{k}={v}" for k, v in env.items()],
        "memory": service.memory_mb,
        "vcpus": service.vcpus,
        "vgpus": 0, "vtpus": 0, "bandwidth_in": 0, "bandwidth_out": 0, "storage": 0,
        "code": image or service.image,
        "state": "",
        "one_shot": service.one_shot,
        "privileged": False,
        "addresses": {"rr_ip": rr_ip},
        "added_files": [],
        "constraints": [{"type": "direct", "cluster": service.cluster}] if service.cluster else [],
        META: {
            "project_uid": project.uid,
            "service": service.name,
            "role": service.role.value,
            "spec_hash": spec_hash,
            "ports": {p.name: p.container_port for p in service.ports},
            "host_ports": host_ports,
            "health": {p.name: p.health_path for p in service.ports if p.health_path},
            "peers": dict(resolver.used),
        },
    }
    ports = port_string(host_ports, service)
    if ports:
        ms["port"] = ports
    return ms


def service_request(project: ProjectRef, customer: str, app_id: str, ms: dict) -> dict:
    """POST /api/service/ body: one microservice per request (job_id is then unambiguous too)."""
    return application(project, customer, app_id, [ms])


@dataclass(frozen=True)
class Identity:
    """What a stored service says about itself."""

    service: str
    spec_hash: str
    role: str | None = None
    ports: Mapping[str, int] = field(default_factory=dict)
    host_ports: Mapping[str, int] = field(default_factory=dict)
    peers: Mapping[str, str] = field(default_factory=dict)
    health: Mapping[str, str] = field(default_factory=dict)
    """Port name -> the HTTP path that answers 200 once the service is ready."""


def identity(doc: Mapping[str, Any]) -> Identity | None:
    """Our record on a stored service (from the META field, else from its environment)."""
    meta = doc.get(META)
    if isinstance(meta, dict) and isinstance(meta.get("service"), str):
        return Identity(meta["service"], str(meta.get("spec_hash") or ""), meta.get("role"),
                        dict(meta.get("ports") or {}), dict(meta.get("host_ports") or {}),
                        dict(meta.get("peers") or {}), dict(meta.get("health") or {}))
    env = dict(item.split("=", 1) for item in doc.get("environment") or [] if "=" in item)
    if ENV_SERVICE in env:
        return Identity(env[ENV_SERVICE], env.get(ENV_SPEC_HASH, ""))
    return None
