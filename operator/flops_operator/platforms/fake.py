"""An in-memory platform for unit and adapter tests: records calls, lets tests steer states."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from typing import Mapping

from ..models import ProjectRef
from ..plan.render import render_service
from ..plan.services import ServiceSpec
from .base import Observation, ObservedService, ServiceState, TransientPlatformError


@dataclass
class FakeService:
    spec: ServiceSpec
    observed: ObservedService
    command: list[str]
    env: dict[str, str]


class _Resolver:
    """Fake DNS: <service>.<namespace>.<name> plus the container port of the named port."""

    def __init__(self, project: str, service: ServiceSpec, secrets: Mapping[str, str],
                 peers: Mapping[str, "FakeService"]):
        self._service, self._secrets, self._project, self._peers = service, secrets, project, peers

    def address(self, service: str, port: str) -> str:
        peer = self._peers.get(service)
        if peer is None:
            raise KeyError(f"{self._service.name} refers to {service}, which does not exist")
        return f"{self.host(service)}:{peer.spec.port(port).container_port}"

    def host(self, service: str) -> str:
        return f"{service}.{self._project.replace('/', '.')}"

    def own_port(self, port: str) -> int:
        return self._service.port(port).container_port

    def bind(self) -> str:
        return "0.0.0.0"

    def secret(self, name: str) -> str:
        return self._secrets[name]

    def workdir(self) -> str:
        return f"/var/lib/flops/{self._service.name}"


class FakePlatform:
    """Services become `running` (one-shots too) as soon as they are ensured, unless told otherwise.

    Tests finish one-shot services with complete()/fail(), lose services with lose(), and make the
    platform unreachable with `failing = True`.
    """

    name = "fake"

    def __init__(self, *, start_state: ServiceState = ServiceState.running):
        self.projects: dict[str, dict[str, FakeService]] = {}
        self.calls: list[tuple[str, str, str]] = []
        self.failing = False
        self.start_state = start_state
        self._lock = asyncio.Lock()

    def _check(self) -> None:
        if self.failing:
            raise TransientPlatformError("fake platform unreachable")

    def services(self, project: ProjectRef) -> dict[str, FakeService]:
        return self.projects.setdefault(project.uid, {})

    async def observe(self, project: ProjectRef) -> Observation:
        self.calls.append(("observe", project.key, ""))
        self._check()
        services = self.projects.get(project.uid, {})
        return Observation({n: s.observed for n, s in services.items()},
                           application_id=f"app-{project.uid}" if services else None)

    async def ensure(self, project: ProjectRef, service: ServiceSpec, secrets: Mapping[str, str]) -> ObservedService:
        self.calls.append(("ensure", project.key, service.name))
        self._check()
        async with self._lock:
            current = self.services(project).get(service.name)
            if current is not None and current.observed.spec_hash == service.spec_hash:
                return current.observed
            command, env = render_service(service, _Resolver(project.key, service, secrets, self.services(project)))
            first = service.ports[0] if service.ports else None
            observed = ObservedService(
                name=service.name, role=service.role, state=self.start_state, spec_hash=service.spec_hash,
                service_id=f"{project.uid}/{service.name}",
                address=f"{service.name}.{project.namespace}.{project.name}:{first.container_port}" if first else None,
                external_address=f"127.0.0.1:{first.container_port}" if first and first.published else None,
            )
            self.services(project)[service.name] = FakeService(service, observed, command, env)
            return observed

    async def remove(self, project: ProjectRef, name: str) -> None:
        self.calls.append(("remove", project.key, name))
        self._check()
        self.projects.get(project.uid, {}).pop(name, None)

    async def remove_all(self, project: ProjectRef) -> None:
        self.calls.append(("remove_all", project.key, ""))
        self._check()
        self.projects.pop(project.uid, None)

    async def close(self) -> None:
        pass

    # Test steering.
    def set_state(self, project: ProjectRef, name: str, state: ServiceState, message: str | None = None,
                  exit_code: int | None = None) -> None:
        svc = self.services(project)[name]
        svc.observed = replace(svc.observed, state=state, message=message, exit_code=exit_code)

    def complete(self, project: ProjectRef, name: str) -> None:
        self.set_state(project, name, ServiceState.completed, exit_code=0)

    def fail(self, project: ProjectRef, name: str, message: str = "exit code 1") -> None:
        self.set_state(project, name, ServiceState.failed, message=message, exit_code=1)

    def say(self, project: ProjectRef, name: str, line: str) -> None:
        """The service prints a line (its output, as the builder's result is read)."""
        svc = self.services(project)[name]
        svc.observed = replace(svc.observed, output=svc.observed.output + line + "\n")

    def lose(self, project: ProjectRef, name: str) -> None:
        self.services(project).pop(name, None)

    def writes(self) -> list[tuple[str, str, str]]:
        return [c for c in self.calls if c[0] != "observe"]
