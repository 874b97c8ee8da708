"""Per-project knowledge of an app's services: what was read, and which writes it already reflects.

A read counts as seeing a write only if it started after the write finished. Reads in flight are
shared: a wave of creates in one project, or an observe and the ensures right after it, need one
GET /api/services/{appid}, not one each.

The round-robin addresses the driver must not ask for are those its projects' last reads show,
plus those of creates in flight: an index rebuilt from what exists, so an address is free again
as soon as a read no longer shows its service, however the service went.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from ...models import ProjectRef
from ..base import TransientPlatformError
from .interpret import StoredService
from .shared import Shared

Services = dict[str, StoredService]
"""By Oakestra service name."""


class AppGone(TransientPlatformError):
    """The app is no longer there (404 on its services)."""


@dataclass
class ProjectView:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Held while the project's app is looked up or created."""
    services: Services | None = None
    read_seq: int = -1
    write_seq: int = 0
    written: dict[str, int] = field(default_factory=dict)
    """Oakestra service name -> write_seq of the last write that touched it."""
    reading: Shared[None] | None = None
    app_writes: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Held by every write that changes the app's service list: Oakestra stores the list by
    read-modify-write, so overlapping writes lose ids (oakestra-api.md §13.13)."""
    held: frozenset[str] = frozenset()
    """The round-robin addresses of `services`."""

    def wrote(self, oakestra_name: str) -> None:
        """Call when a write is over (answered or not)."""
        self.write_seq += 1
        self.written[oakestra_name] = self.write_seq



class Views:
    def __init__(self, read: Callable[[str], Awaitable[Services | None]],
                 on_gone: Callable[[ProjectRef], None]):
        self._read = read
        self._on_gone = on_gone
        """Told when an app turns out to be gone (to drop what else is known about it)."""
        self._projects: dict[str, ProjectView] = {}
        self._holders: dict[str, str] = {}
        """Round-robin address -> uid of the project whose last read shows it."""
        self._claims: dict[str, str] = {}
        """Round-robin address -> uid of the project creating a service with it right now."""

    def of(self, project: ProjectRef) -> ProjectView:
        return self._projects.setdefault(project.uid, ProjectView())

    def forget(self, project: ProjectRef) -> ProjectView | None:
        state = self._projects.pop(project.uid, None)
        if state is not None:
            self._hold(project.uid, state, {})
        return state

    # Services as read; the address index follows them.
    def _hold(self, uid: str, state: ProjectView, services: Services) -> None:
        held = frozenset(s.rr_ip for s in services.values() if s.rr_ip)
        for address in state.held - held:
            if self._holders.get(address) == uid:
                del self._holders[address]
        for address in held - state.held:
            self._holders[address] = uid
        state.held = held

    def _set(self, project: ProjectRef, state: ProjectView, services: Services, seq: int) -> None:
        self._hold(project.uid, state, services)
        state.services, state.read_seq = services, seq

    def known_empty(self, project: ProjectRef) -> None:
        """The app was just created by us: it has no services, no need to read."""
        state = self.of(project)
        self._set(project, state, {}, state.write_seq)

    def created(self, project: ProjectRef, service: StoredService) -> None:
        """This process created the service: the view (and the address index) shows it before the
        next read. Reads for it are still due: the write is newer than the last read."""
        state = self.of(project)
        if state.services is not None:
            services = {**state.services, service.oakestra_name: service}
            self._hold(project.uid, state, services)
            state.services = services

    def dropped(self, project: ProjectRef, service: StoredService) -> None:
        """This process deleted the service: the view stops showing it before the next read."""
        state = self.of(project)
        if state.services is not None and state.services.get(service.oakestra_name) is service:
            services = {k: v for k, v in state.services.items() if k != service.oakestra_name}
            self._hold(project.uid, state, services)
            state.services = services

    # Addresses.
    def claim(self, project: ProjectRef, address: str) -> bool:
        """Reserve an address for a create; False if a project of ours holds or claims it."""
        if address in self._holders or address in self._claims:
            return False
        self._claims[address] = project.uid
        return True

    def unclaim(self, address: str) -> None:
        self._claims.pop(address, None)

    def addresses(self) -> set[str]:
        return set(self._holders) | set(self._claims)

    def reads(self) -> list[Shared[None]]:
        return [p.reading for p in self._projects.values() if p.reading is not None]

    async def current(self, project: ProjectRef, app_id: str, *, fresh_for: str) -> Services:
        """The services as read after this process's last write to `fresh_for`."""
        state = self.of(project)
        while True:
            if state.services is not None and state.read_seq >= state.written.get(fresh_for, 0):
                return state.services
            if state.reading is None:
                return await self.read(project, app_id)
            # Join the read in flight; if it started before our write, the loop starts another.
            await state.reading.result()

    async def read(self, project: ProjectRef, app_id: str) -> Services:
        """A new read (raises AppGone if the app no longer exists)."""
        state = self.of(project)
        seq = state.write_seq
        shared: Shared[None] | None = None

        async def reading() -> None:
            try:
                services = await self._read(app_id)
                if services is None:
                    self.forget(project)
                    self._on_gone(project)
                    raise AppGone(f"application {app_id} of {project.key} is gone")
                if state.read_seq <= seq:
                    self._set(project, state, services, seq)
            finally:
                if state.reading is shared:
                    state.reading = None

        shared = state.reading = Shared(reading())
        await shared.result()
        return state.services or {}
