"""The local platform: every service of a project is a supervised child process on this machine."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from ... import redaction
from ...models import ProjectRef
from ...plan.render import render_service
from ...plan.services import Role, ServiceSpec
from ...private_state import private_dir, private_root
from ..base import Observation, ObservedService, PermanentPlatformError, TransientPlatformError
from .commands import LocalContext, local_command
from .layout import MARKER_ENV, StateLayout, default_state_dir
from .ports import LOOPBACK, PortAllocator
from .process import Launch, ManagedProcess, RestartPolicy, read_end

log = logging.getLogger(__name__)


@dataclass
class _Service:
    spec: ServiceSpec
    ports: dict[str, int]
    process: ManagedProcess
    tmpdir: Path
    leftovers: tuple[Path, ...]
    log_path: Path | None = None


class _Resolver:
    """Placeholders on one machine: everything is 127.0.0.1 and its own allocated port."""

    def __init__(self, services: Mapping[str, _Service], ports: dict[str, int], secrets: Mapping[str, str],
                 workdir: Path, host: str) -> None:
        self._services, self._ports, self._secrets, self._workdir, self._host = (
            services, ports, secrets, workdir, host)

    def address(self, service: str, port: str) -> str:
        other = self._services.get(service)
        if other is None or port not in other.ports:
            raise TransientPlatformError(f"{service} does not run yet (its {port} port is needed)")
        return f"{self._host}:{other.ports[port]}"

    def host(self, service: str) -> str:
        return self._host

    def own_port(self, port: str) -> int:
        if port not in self._ports:
            raise PermanentPlatformError(f"placeholder names port {port!r} that the service does not declare")
        return self._ports[port]

    def bind(self) -> str:
        return self._host

    def secret(self, name: str) -> str:
        if name not in self._secrets:
            raise PermanentPlatformError(f"credential {name!r} was not provided")
        return self._secrets[name]

    def workdir(self) -> str:
        return str(self._workdir)


OUTPUT_BYTES = 8192


def _output(svc: _Service) -> str:
    """The end of a service's log (the builder's result is its last line), redacted."""
    return redaction.Redactor(svc.process.launch.secrets)(read_end(svc.log_path, OUTPUT_BYTES)) if svc.log_path else ""


class LocalPlatform:
    """Implements platforms.base.Platform with child processes; no child outlives close().

    What exists is what this object supervises: since every child dies with the platform's
    process, a restarted platform correctly observes nothing and the plan recreates it all
    (data — SQLite file, MariaDB datadir, FTP root — stays in the state directory).
    """

    name = "local"

    def __init__(self, state_dir: Callable[[ProjectRef], Path] = default_state_dir, *,
                 policy: RestartPolicy = RestartPolicy(), stop_timeout: float = 10.0,
                 python: str = sys.executable, host: str = LOOPBACK) -> None:
        self._state_dir = state_dir
        self._policy = policy
        self._stop_timeout = stop_timeout
        self._python = python
        # The console scripts next to this interpreter (not resolved: a venv's python is a symlink).
        self._bin_dir = Path(python).parent
        self._host = host
        self._ports = PortAllocator(host)
        self._projects: dict[str, dict[str, _Service]] = {}
        self._lock = asyncio.Lock()

    def layout(self, project: ProjectRef) -> StateLayout:
        return StateLayout(self._state_dir(project))

    def process(self, project: ProjectRef, name: str) -> ManagedProcess | None:
        """The supervised process behind a service (tests, the runner's wake-ups)."""
        svc = self._projects.get(project.uid, {}).get(name)
        return svc.process if svc else None

    def _observed(self, svc: _Service) -> ObservedService:
        spec, proc = svc.spec, svc.process
        address = external = None
        if spec.ports:
            first = spec.ports[0]
            address = f"{self._host}:{svc.ports[first.name]}"
            external = address if first.published else None
        return ObservedService(
            name=spec.name, role=spec.role, state=proc.state, spec_hash=spec.spec_hash,
            service_id=f"pid {proc.pid}" if proc.pid else None, address=address, external_address=external,
            message=proc.message, restarts=proc.restarts, exit_code=proc.exit_code,
            output=_output(svc) if spec.role is Role.builder else "",
        )

    async def observe(self, project: ProjectRef) -> Observation:
        services = self._projects.get(project.uid, {})
        return Observation({name: self._observed(svc) for name, svc in services.items()})

    async def ensure(self, project: ProjectRef, service: ServiceSpec, secrets: Mapping[str, str]) -> ObservedService:
        async with self._lock:
            services = self._projects.setdefault(project.uid, {})
            current = services.get(service.name)
            if current is not None and current.spec.spec_hash == service.spec_hash:
                return self._observed(current)
            # A replaced service keeps its ports: whoever was rendered with its address still finds it.
            ports = {p.name: (current.ports.get(p.name) if current else None) or self._ports.allocate()
                     for p in service.ports}
            if current is not None:
                await self._stop(current, release=[n for n in current.ports if n not in ports])
                del services[service.name]
            try:
                svc = self._start(project, service, ports, secrets, services)
            except BaseException:
                for port in ports.values():
                    self._ports.release(port)
                raise
            services[service.name] = svc
            return self._observed(svc)

    def _start(self, project: ProjectRef, service: ServiceSpec, ports: dict[str, int], secrets: Mapping[str, str],
               services: Mapping[str, _Service]) -> _Service:
        layout = self.layout(project)
        workdir, tmpdir = layout.workdir(service.name), layout.tmpdir(service.name)
        argv, env = render_service(service, _Resolver(services, ports, secrets, workdir, self._host))
        ctx = LocalContext(ports=ports, workdir=workdir, bin_dir=self._bin_dir, python=self._python, host=self._host)
        command = local_command(service, argv, env, ctx)
        private_root(layout.root)
        private_dir(workdir)
        private_dir(tmpdir)
        if service.role is Role.builder:
            layout.log(service.name).unlink(missing_ok=True)  # its output is its result: none of an earlier build
        child_env = {**os.environ, **command.env, "TMPDIR": str(tmpdir), "PYTHONUNBUFFERED": "1",
                     MARKER_ENV: layout.marker(service.name)}
        launch = Launch(argv=command.argv, env=child_env, cwd=workdir, log_path=layout.log(service.name),
                        one_shot=service.one_shot, probe=command.probe, prepare=command.prepare,
                        secrets=redaction.secret_values(secrets))
        process = ManagedProcess(launch, policy=self._policy, stop_timeout=self._stop_timeout)
        process.start()
        log.info("%s: started %s (%s)", project.key, service.name, service.role.value)
        return _Service(service, ports, process, tmpdir, command.leftovers, layout.log(service.name))

    async def _stop(self, svc: _Service, release: list[str] | None = None) -> None:
        await svc.process.stop()
        for name in svc.ports if release is None else release:
            self._ports.release(svc.ports[name])
        shutil.rmtree(svc.tmpdir, ignore_errors=True)
        for path in svc.leftovers:
            path.unlink(missing_ok=True)

    async def remove(self, project: ProjectRef, name: str) -> None:
        async with self._lock:
            svc = self._projects.get(project.uid, {}).pop(name, None)
            if svc is not None:
                await self._stop(svc)
                log.info("%s: stopped %s", project.key, name)

    async def remove_all(self, project: ProjectRef) -> None:
        """Stops every service of the project; its data (MLflow database, artifacts) stays on disk."""
        async with self._lock:
            services = self._projects.pop(project.uid, {})
            await asyncio.gather(*(self._stop(svc) for svc in services.values()))
        tmp = self.layout(project).root / "tmp"
        if tmp.is_dir() and not any(tmp.iterdir()):
            tmp.rmdir()

    async def close(self) -> None:
        async with self._lock:
            projects, self._projects = self._projects, {}
            await asyncio.gather(*(self._stop(svc) for services in projects.values() for svc in services.values()))

    @property
    def allocated_ports(self) -> frozenset[int]:
        return self._ports.taken
