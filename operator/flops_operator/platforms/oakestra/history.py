"""What one status read cannot tell: how long each instance has been in its status, how often it fell,
and whether its health endpoint answered since it came up.

Oakestra re-deploys a FAILED or DEAD instance every 15 s, so a crash-looping service is RUNNING for a
few seconds each time: one RUNNING report is not readiness (oakestra-api.md §7). The driver keeps this
per project, only for the instances the project has now (what vanished is dropped at the next read).
"""

from __future__ import annotations

import asyncio
from typing import Iterable, Mapping

import aiohttp

from .interpret import FAILING, StoredService, Track

Key = tuple[str, int]
"""(service id, instance number)."""


class History:
    def __init__(self) -> None:
        self._projects: dict[str, dict[Key, Track]] = {}

    def update(self, project_uid: str, services: Iterable[StoredService], now: float) -> None:
        """Record a fresh read of a project's services (what is no longer there is forgotten)."""
        old = self._projects.get(project_uid, {})
        new: dict[Key, Track] = {}
        for svc in services:
            for inst in svc.instances:
                key = (svc.id, inst.number)
                track = old.get(key)
                if track is None:
                    track = Track(inst.status, now, falls=int(inst.status in FAILING))
                elif track.status != inst.status:
                    fell = inst.status in FAILING and track.status not in FAILING
                    track = Track(inst.status, now, falls=track.falls + int(fell))
                new[key] = track
        self._projects[project_uid] = new

    def of(self, project_uid: str, svc: StoredService) -> dict[int, Track]:
        tracks = self._projects.get(project_uid, {})
        return {i.number: tracks[(svc.id, i.number)] for i in svc.instances if (svc.id, i.number) in tracks}

    def forget(self, project_uid: str, keys: Iterable[Key] | None = None) -> None:
        if keys is None:
            self._projects.pop(project_uid, None)
            return
        tracks = self._projects.get(project_uid, {})
        for key in keys:
            tracks.pop(key, None)

    def size(self) -> int:
        return sum(len(tracks) for tracks in self._projects.values())


async def probe(session: aiohttp.ClientSession, url: str, timeout: float) -> str | None:
    """None if GET url answers 200, else why not (in words for the status)."""
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout), allow_redirects=False) as resp:
            return None if resp.status == 200 else f"{url} answered HTTP {resp.status}"
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
        return f"{url} does not answer ({type(exc).__name__})"


def health_urls(svc: StoredService, tracks: Mapping[int, Track]) -> dict[int, str]:
    """Instances that are RUNNING, not yet known healthy, and whose health endpoint the operator can reach
    (a published port with a health path, on a worker whose public address is known)."""
    ident = svc.identity
    if ident is None or not ident.health:
        return {}
    urls = {}
    for inst in svc.instances:
        track = tracks.get(inst.number)
        if inst.status != "RUNNING" or not inst.publicip or (track is not None and track.healthy):
            continue
        for port, path in ident.health.items():
            if port in ident.host_ports:
                urls[inst.number] = f"http://{inst.publicip}:{ident.host_ports[port]}{path}"
                break
    return urls
