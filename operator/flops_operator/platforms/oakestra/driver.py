"""OakestraPlatform: the Platform contract (platforms/base.py) on Oakestra's System Manager.

One Oakestra application per project; one Oakestra service (with one instance) per logical
service. Every decision to write rests on an observation that accounts for this process's own
earlier writes (views.py): the project's services are re-read whenever a write touched the
service in question, and always at observe(). A restarted operator starts with no view and
therefore reads first. Creates are never retried blindly: a lost answer leads to a new read and
a new decision (client.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable, Mapping, TypeVar

import aiohttp

from ...models import ProjectRef
from ...plan.services import Role, ServiceSpec
from ...redaction import Redactor
from ..base import Observation, ObservedService, ServiceState, TransientPlatformError
from . import leftovers, names, sla
from .applications import Applications, NotListed
from .client import OakestraClient, OakestraRefused, WriteOutcomeUnknown
from .config import OakestraConfig
from .history import History, health_urls, probe
from .interpret import StoredService, Verdict, judge, observed, parse
from .retries import attempts
from .views import AppGone, Views

log = logging.getLogger(__name__)
T = TypeVar("T")


class _TryAgain(TransientPlatformError):
    """This round of observe-then-write did not settle; observe again and decide again."""


class LeftBehind(_TryAgain):
    """Services of a deleted project are still on Oakestra (tried again, then reported)."""


class OakestraPlatform:
    name = "oakestra"

    def __init__(self, config: OakestraConfig, *, clock: Callable[[], float] = time.monotonic):
        self.config = config
        self.client = OakestraClient(config, clock=clock)
        self._clock = clock
        self._customer = config.customer_id or config.username
        self._views = Views(self._read, self._forget_app)
        self._apps = Applications(self.client, self._customer, self._views)
        self._history = History()
        self._probes: aiohttp.ClientSession | None = None
        self._unschedulable_since: dict[str, float] = {}
        self._jobs = leftovers.JobListing(self.client.list_all_services)
        # The platform's own credentials, which only it knows, out of the instance logs it reports (the builder's
        # env carries the registry login); the reconcile step blanks the project's.
        self._redactor = Redactor((config.password, config.build_registry_password))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> "OakestraPlatform":
        return cls(OakestraConfig.from_env(env, **overrides))

    @classmethod
    def from_secret(cls, data: Mapping[str, str], *, base64_values: bool = True, **overrides) -> "OakestraPlatform":
        return cls(OakestraConfig.from_mapping(data, base64_values=base64_values, **overrides))

    async def close(self) -> None:
        self._apps.cancel()
        for shared in self._views.reads():
            if shared is not None and not shared.done():
                shared.cancel()
        self._jobs.cancel()
        if self._probes is not None:
            await self._probes.close()
        await self.client.close()

    def _forget_app(self, project: ProjectRef) -> None:
        self._apps.forget(project)
        self._views.forget(project)
        self._history.forget(project.uid)

    def addresses_held(self) -> set[str]:
        """Round-robin addresses the driver will not ask for: those its last reads show, and creates in flight."""
        return self._views.addresses()

    # The per-project view of services.
    async def _read(self, app_id: str) -> dict[str, StoredService] | None:
        docs = await self.client.list_services(app_id)
        if docs is None:
            return None
        services: dict[str, StoredService] = {}
        for doc in docs:
            svc = parse(doc)
            if svc.oakestra_name and svc.oakestra_name not in services:
                services[svc.oakestra_name] = svc
        return services

    # Judging what is there.
    def _verdict(self, project: ProjectRef, svc: StoredService) -> Verdict:
        now = self._clock()
        verdict = judge(svc, now=now, tracks=self._history.of(project.uid, svc), grace=self.config.failure_grace,
                        unschedulable_since=self._unschedulable_since.get(svc.id),
                        unschedulable_retry=self.config.unschedulable_retry, ready_after=self.config.ready_after,
                        health_checks=self.config.health_checks, redactor=self._redactor)
        if verdict.unschedulable:
            self._unschedulable_since.setdefault(svc.id, now)
        else:
            self._unschedulable_since.pop(svc.id, None)
        return verdict

    async def _check_health(self, project: ProjectRef, services: Mapping[str, StoredService]) -> None:
        """Probe the health endpoints of RUNNING instances not yet known healthy (published ones only)."""
        if not self.config.health_checks:
            return
        wanted = []
        for svc in services.values():
            tracks = self._history.of(project.uid, svc)
            wanted += [(tracks[n], url) for n, url in health_urls(svc, tracks).items() if n in tracks]
        if not wanted:
            return
        if self._probes is None or self._probes.closed:
            self._probes = aiohttp.ClientSession()
        answers = await asyncio.gather(*(probe(self._probes, url, self.config.health_timeout) for _, url in wanted))
        for (track, _), error in zip(wanted, answers):
            track.healthy, track.probe_error = error is None, error

    @staticmethod
    def _moved_peers(svc: StoredService, by_name: Mapping[str, StoredService]) -> list[str]:
        """Peers whose address changed since this service's command/env were rendered."""
        if svc.identity is None:
            return []
        moved = []
        for peer, rr_ip in svc.identity.peers.items():
            now = by_name.get(peer)
            if now is not None and now.rr_ip and now.rr_ip != rr_ip:
                moved.append(peer)
        return moved

    def _observed(self, project: ProjectRef, svc: StoredService,
                  by_name: Mapping[str, StoredService]) -> tuple[ObservedService, Verdict]:
        verdict = self._verdict(project, svc)
        spec_hash = svc.identity.spec_hash if svc.identity else ""
        # An empty hash makes the reconcile step call ensure(), which finishes what is unfinished:
        # an instance never requested (or lost), a surplus instance, a peer that moved.
        if verdict.deploy or verdict.undeploy or self._moved_peers(svc, by_name):
            spec_hash = ""
        return observed(svc, verdict, spec_hash=spec_hash, redactor=self._redactor), verdict

    # The Platform protocol.
    async def observe(self, project: ProjectRef) -> Observation:
        app_id = await self._apps.find(project)
        if app_id is None:
            return Observation({}, None, None)
        try:
            services = await self._views.read(project, app_id)
        except AppGone:
            app_id = await self._apps.find(project, refresh=True)
            if app_id is None:
                return Observation({}, None, None)
            services = await self._views.read(project, app_id)
        self._history.update(project.uid, services.values(), self._clock())
        await self._check_health(project, services)
        by_name = {s.name: s for s in services.values() if s.name}
        result = {}
        for svc in services.values():
            if svc.name and names.service_name(svc.name) == svc.oakestra_name and svc.name not in result:
                result[svc.name] = self._observed(project, svc, by_name)[0]
        return Observation(result, app_id, names.app_name(project))

    async def ensure(self, project: ProjectRef, service: ServiceSpec, secrets: Mapping[str, str]) -> ObservedService:
        async def one_round() -> ObservedService:
            app_id = await self._apps.ensure(project)
            return await self._ensure_service(project, app_id, service, secrets)
        return await self._rounds(one_round)

    async def remove(self, project: ProjectRef, name: str) -> None:
        app_id = await self._apps.find(project)
        if app_id is None:
            return
        oakestra_name = names.service_name(name)

        async def one_round() -> None:
            current = (await self._views.current(project, app_id, fresh_for=oakestra_name)).get(oakestra_name)
            if current is not None:
                await self._delete_service(project, current, verify=True, app_id=app_id)
        await self._rounds(one_round)

    async def remove_all(self, project: ProjectRef) -> None:
        """Delete the app's services, then the app, then make sure nothing named after it is left."""
        async def one_round() -> None:
            app_id = await self._apps.find(project, refresh=True)
            if app_id is not None:
                await self._empty_app(project, app_id)
                async with self._views.of(project).app_writes:
                    await self.client.delete_app(app_id)
                self._jobs.deletes += 1
            self._forget_app(project)
            if app_id is not None and await self._apps.find(project, refresh=True) is not None:
                raise _TryAgain(f"application {app_id} of {project.key} still listed after delete")
            # Only an Admin may list every job; for others the app's own listing above has to do.
            left = leftovers.of_project(project, await self._jobs.after_deletes() or [])
            if left:
                raise LeftBehind(leftovers.describe(project, left))
        await self._rounds(one_round)

    async def _empty_app(self, project: ProjectRef, app_id: str) -> None:
        services = await self._read(app_id) or {}
        # Undeploy instance by instance first: Oakestra's own cascade skips every second one.
        await asyncio.gather(*(self._delete_service(project, svc, verify=False, app_id=app_id)
                               for svc in services.values()))
        # The app's listing shows jobs its service list lost, which deleting the app would leave behind.
        left = await self.client.list_services(app_id)
        if left:
            raise LeftBehind(leftovers.describe(project, left))

    # Effects.
    async def _rounds(self, step: Callable[[], Awaitable[T]]) -> T:
        return await attempts(step, tries=self.config.write_attempts,
                              retry_on=(_TryAgain, NotListed, AppGone, WriteOutcomeUnknown),
                              initial=self.config.backoff_initial, maximum=self.config.backoff_max)

    async def _ensure_service(self, project: ProjectRef, app_id: str, service: ServiceSpec,
                              secrets: Mapping[str, str]) -> ObservedService:
        oakestra_name = names.service_name(service.name)
        view = await self._views.current(project, app_id, fresh_for=oakestra_name)
        current = view.get(oakestra_name)
        by_name = {s.name: s for s in view.values() if s.name}
        if current is not None:
            same = current.identity is not None and current.identity.spec_hash == service.spec_hash
            if same and not self._moved_peers(current, by_name):
                return await self._finish_deploy(project, current, by_name)
            await self._delete_service(project, current, verify=False, app_id=app_id)
            raise _TryAgain(f"{service.name}: replaced, creating it anew")
        peers = {name: sla.Peer(s.rr_ip, dict(s.identity.ports)) for name, s in by_name.items()
                 if s.rr_ip and s.identity is not None and name != service.name}
        # Where the peers expect it first: a service that vanished comes back where it was, and
        # nothing rendered with its address needs replacing.
        recorded = [s.identity.peers[service.name] for s in by_name.values()
                    if s.identity is not None and service.name in s.identity.peers]
        tried = 0
        for rr_ip in names.rr_ip_preferences(project.uid, service.name, recorded, self.config.service_subnet):
            if tried >= self.config.rr_ip_attempts:
                break
            if not self._views.claim(project, rr_ip):
                continue
            tried += 1
            try:
                created = await self._create_at(project, app_id, service, secrets, rr_ip, peers)
            finally:
                self._views.unclaim(rr_ip)
            if created is None:
                continue
            return await self._finish_deploy(project, created, by_name)
        raise TransientPlatformError(
            f"{service.name}: Oakestra refused {tried} round-robin addresses (taken, or its network plugin fails)")

    async def _create_at(self, project: ProjectRef, app_id: str, service: ServiceSpec, secrets: Mapping[str, str],
                         rr_ip: str, peers: Mapping[str, sla.Peer]) -> StoredService | None:
        """One POST /api/service/ at this address: the service as listed after it, or None if the
        network plugin refused the address (held by a service not of ours, or failing)."""
        state = self._views.of(project)
        oakestra_name = names.service_name(service.name)
        try:
            ms = sla.microservice(project, service, rr_ip=rr_ip, peers=peers, secrets=secrets,
                                  workdir=self.config.workdir, port_range=self.config.host_port_range,
                                  image=self.config.image(service.image), registry=self.config.registry,
                                  env_hook=self.config.builder_env if service.role is Role.builder else None)
        except sla.MissingPeer as exc:
            raise TransientPlatformError(f"{service.name} needs {exc.args[0]}, which is not on Oakestra yet") from None
        try:
            async with state.app_writes:
                answer = await self.client.create_service(sla.service_request(project, self._customer, app_id, ms))
        except WriteOutcomeUnknown:
            raise _TryAgain(f"{service.name}: create answer lost") from None
        except OakestraRefused as exc:
            if exc.status == 400:
                # Also what Oakestra says when the app vanished: look for it again next round.
                self._forget_app(project)
                raise _TryAgain(f"{service.name}: Oakestra refused the service (HTTP 400)") from None
            raise
        finally:
            # Marked when the write is over: a read must start after it to count as seeing it.
            state.wrote(oakestra_name)
        if answer.get("failed_services"):
            log.info("%s: %s refused at %s, trying the next address", project.key, service.name, rr_ip)
            return None
        job_id = answer.get("job_id")
        if isinstance(job_id, str) and job_id:
            # One microservice per request, none failed: job_id is this service (oakestra-api.md §6.2),
            # stored as sent, without instances. No read is needed to request its instance.
            created = StoredService(id=job_id, oakestra_name=oakestra_name, identity=sla.identity(ms), rr_ip=rr_ip,
                                    status=None, status_detail="", instances=(), one_shot=bool(ms["one_shot"]))
            self._views.created(project, created)
            return created
        created = (await self._views.current(project, app_id, fresh_for=oakestra_name)).get(oakestra_name)
        if created is None:
            raise _TryAgain(f"{service.name}: created but not listed yet")
        return created

    async def _finish_deploy(self, project: ProjectRef, svc: StoredService,
                             by_name: Mapping[str, StoredService]) -> ObservedService:
        """Request the missing instance (once), remove surplus ones."""
        state = self._views.of(project)
        result, verdict = self._observed(project, svc, by_name)
        if not verdict.deploy and not verdict.undeploy:
            return result
        try:
            for number in verdict.undeploy:
                await self.client.undeploy_instance(svc.id, number)
            for _ in range(verdict.deploy):
                await self.client.deploy_instance(svc.id)
        except WriteOutcomeUnknown:
            raise _TryAgain(f"{result.name}: instance request answer lost") from None
        finally:
            state.wrote(svc.oakestra_name)
        self._unschedulable_since.pop(svc.id, None)
        message = "instance requested" if verdict.deploy else result.message
        state_now = ServiceState.pending if verdict.deploy else result.state
        return ObservedService(name=result.name, role=result.role, state=state_now, spec_hash=result.spec_hash or
                               (svc.identity.spec_hash if svc.identity else ""), service_id=svc.id,
                               address=result.address, external_address=result.external_address, message=message)

    async def _delete_service(self, project: ProjectRef, svc: StoredService, *, verify: bool, app_id: str) -> None:
        state = self._views.of(project)
        try:
            for inst in svc.instances:
                await self.client.undeploy_instance(svc.id, inst.number)
            async with state.app_writes:
                deleted = await self.client.delete_service(svc.id)
        finally:
            state.wrote(svc.oakestra_name)
        if not deleted and verify:
            # 500 is "not found" -- or a failure: only a fresh read tells which.
            still = (await self._views.current(project, app_id, fresh_for=svc.oakestra_name)).get(svc.oakestra_name)
            if still is not None and still.id == svc.id:
                raise _TryAgain(f"{svc.name or svc.oakestra_name}: delete refused, still listed")
        self._views.dropped(project, svc)
        self._history.forget(project.uid, [(svc.id, inst.number) for inst in svc.instances])
        self._unschedulable_since.pop(svc.id, None)
