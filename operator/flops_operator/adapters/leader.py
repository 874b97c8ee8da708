"""Leader election over a Lease: of several `flops operator` replicas exactly one runs kopf.

Why a Lease and not kopf's peering: kopf peering pauses an operator when it sees a peer of higher priority,
and *every* operator when it sees one of equal priority ("Pausing all operators, including self"): the
replicas of a Deployment share one pod template, hence one priority, so two replicas would both freeze.
Peering also decides from each operator's own view of a shared status map, with no per-object lock (kopf's
docs say so): a newcomer of higher priority resumes while the older one is still finishing its handlers.
A Lease is decided by the API server (compare-and-swap, lease.py), needs no CRD, and a standby holds no
watches at all.

Timing (client-go's algorithm, shorter periods): the leader renews every RENEW_EVERY seconds and stops at
once when it has not renewed for RENEW_DEADLINE; a standby looks every RETRY_EVERY seconds and takes the
Lease when its record has not changed for the lease duration by the standby's own clock (never comparing
two machines' clocks). RENEW_DEADLINE < DURATION leaves the old leader DURATION - RENEW_DEADLINE seconds
to be gone before anyone else may act. After a SIGKILL the standby takes the Lease DURATION - RENEW_EVERY to
DURATION + 2 * RETRY_EVERY seconds later (6-10 s: the last renewal was up to RENEW_EVERY before the kill, and
the standby sees it and then its expiry each up to one look late), then starts kopf.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import threading
import time
import urllib.parse
from pathlib import Path
from secrets import token_hex
from typing import Any, Awaitable, Callable, NoReturn

import kubernetes.client
import urllib3.exceptions
from aiohttp import web
from kubernetes.client.exceptions import ApiException

from .lease import LeaseLock, LeaseRecord

DURATION = 8
RENEW_EVERY = 2.0
RENEW_DEADLINE = 6.0
RETRY_EVERY = 1.0
EXIT_LEADERSHIP_LOST = 3
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")

logger = logging.getLogger(__name__)
# Failures worth another try: the API server restarting, a dropped connection, a slow answer.
TRANSIENT = (urllib3.exceptions.HTTPError, OSError, asyncio.TimeoutError)


def own_identity() -> str:
    """The pod's name (POD_NAME, from the downward API) for people reading the Lease, plus a random part:
    a container restarted in the same pod is another process and must not take itself for the holder."""
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}_{token_hex(4)}"


def lease_namespace(given: str | None) -> str:
    """--lease-namespace, else the pod's own namespace (POD_NAMESPACE or the service account's), else default."""
    if given:
        return given
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "default"
    except OSError:
        return "default"


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, TRANSIENT) or (isinstance(exc, ApiException) and (exc.status or 0) >= 500)


class LeaderElector:
    def __init__(self, lock: LeaseLock, identity: str) -> None:
        self.lock, self.identity = lock, identity
        self._renewed_at = 0.0

    async def acquire(self, stopping: Callable[[], Awaitable[bool]]) -> bool:
        """Wait as a standby until we hold the Lease (True) or `stopping` says so (False)."""
        seen: LeaseRecord | None = None
        seen_at = 0.0
        said_holder = None
        while True:
            sent = time.monotonic()
            won = False
            try:
                record = await self.lock.read()
                if record is None:
                    won = await self.lock.create(self.identity, DURATION)
                else:
                    if seen is None or record.version != seen.version:
                        # When we saw it, not when we asked: the write we read happened before this moment.
                        seen, seen_at = record, time.monotonic()
                    if not record.holder or time.monotonic() - seen_at >= record.duration:
                        won = await self.lock.take(record, self.identity, DURATION)
                    if not won and record.holder != said_holder:
                        logger.info("Standing by: %s is held by %s.", self.lock, record.holder or "nobody")
                        said_holder = record.holder
            except Exception as exc:
                if not _transient(exc):
                    raise
                logger.warning("Could not read or take %s (%s); trying again.", self.lock, exc)
            if won:
                self._renewed_at = sent
                logger.info("Leading: %s is held by %s.", self.lock, self.identity)
                return True
            if await stopping():
                return False

    async def hold(self) -> str:
        """Renew until leadership is lost; returns why. Never returns while we still lead."""
        while True:
            await asyncio.sleep(RENEW_EVERY)
            sent = time.monotonic()
            renewal = self.lock.renew(self.identity)
            await asyncio.wait({renewal}, timeout=max(self._renewed_at + RENEW_DEADLINE - sent, 0.0))
            if not renewal.done():
                renewal.cancel()
                return f"{self.lock} not renewed for {RENEW_DEADLINE:.0f} s (the API server did not answer)"
            exc = renewal.exception()
            if exc is None and renewal.result():
                self._renewed_at = sent
            elif exc is None:
                return f"{self.lock} is held by another operator now"
            elif not _transient(exc):
                return f"{self.lock} cannot be renewed: {exc}"
            elif time.monotonic() >= self._renewed_at + RENEW_DEADLINE:
                return f"{self.lock} not renewed for {RENEW_DEADLINE:.0f} s ({type(exc).__name__})"
            else:
                logger.warning("Could not renew %s (%s); trying again.", self.lock, exc)

    async def release(self) -> None:
        releasing = self.lock.release(self.identity)
        await asyncio.wait({releasing}, timeout=RENEW_DEADLINE)
        exc = releasing.exception() if releasing.done() else asyncio.TimeoutError()
        if exc is not None:  # the Lease then expires by itself: slower for the standby, not wrong
            logger.warning("Could not release %s (%r); it expires in %d s.", self.lock, exc, DURATION)


def exit_at_once(reason: str) -> NoReturn:
    """Leadership lost while kopf runs: end the process now, as controller-runtime does. A graceful stop
    would let handlers in flight go on writing while the new leader starts; the container is restarted
    and comes back as a standby."""
    logger.error("Leadership lost: %s. Exiting so that only the new leader acts.", reason)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(EXIT_LEADERSHIP_LOST)


async def run_as_leader(elector: LeaderElector, run: Callable[[], Awaitable[None]], *, stop_flag: Any = None,
                        liveness: str | None = None,
                        on_lost: Callable[[str], None] = exit_at_once) -> None:
    """Stand by until the Lease is ours, then `run` (kopf) while it is; release the Lease when `run` ends."""
    try:
        async with _Standby(stop_flag, liveness) as standby:
            if not await elector.acquire(standby.stopping):
                return
        await _lead(elector, run, on_lost)
    finally:
        elector.lock.close()


async def _lead(elector: LeaderElector, run: Callable[[], Awaitable[None]], on_lost: Callable[[str], None]) -> None:
    # Created before kopf starts: when kopf stops it cancels the tasks it finds new, and this is not one.
    holding = asyncio.create_task(elector.hold(), name="lease renewal")
    running = asyncio.create_task(run(), name="operator")
    try:
        await asyncio.wait({holding, running}, return_when=asyncio.FIRST_COMPLETED)
        if not running.done():
            on_lost(holding.result())
    finally:
        for task in (holding, running):
            task.cancel()
        await asyncio.gather(holding, running, return_exceptions=True)
    if running.cancelled():  # leadership lost and on_lost returned (in-process use): nothing to release
        return
    await elector.release()
    running.result()


class _Standby:
    """While standing by: SIGTERM/SIGINT end the wait (kopf installs its own handlers once it runs), and the
    liveness endpoint answers, so that the kubelet does not restart a healthy standby for want of kopf's."""

    def __init__(self, stop_flag: Any, liveness: str | None) -> None:
        self._stop_flag, self._liveness = stop_flag, liveness
        self._signalled = asyncio.Event()
        self._signals: list[int] = []
        self._probe: web.AppRunner | None = None

    async def stopping(self) -> bool:
        """Sleeps until the next look is due; True if the operator is to stop instead."""
        try:
            await asyncio.wait_for(self._signalled.wait(), timeout=RETRY_EVERY)
        except asyncio.TimeoutError:
            pass
        flag = self._stop_flag
        return self._signalled.is_set() or bool(flag is not None and (flag.is_set() if hasattr(flag, "is_set")
                                                                     else flag.done()))

    async def __aenter__(self) -> "_Standby":
        if threading.current_thread() is threading.main_thread():
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, self._signalled.set)
                self._signals.append(signum)
        if self._liveness:
            self._probe = await _serve_probe(self._liveness)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        loop = asyncio.get_running_loop()
        for signum in self._signals:
            loop.remove_signal_handler(signum)
        if self._probe is not None:
            await self._probe.cleanup()  # frees the port for kopf's own endpoint


async def _serve_probe(endpoint: str) -> web.AppRunner:
    parts = urllib.parse.urlsplit(endpoint)

    async def alive(_: web.Request) -> web.Response:
        return web.json_response({"standby": True})

    app = web.Application()
    app.router.add_get(parts.path or "/", alive)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, parts.hostname or "127.0.0.1", parts.port or 80).start()
    return runner


def elector_for(config: kubernetes.client.Configuration, namespace: str | None, name: str,
                user_agent: str) -> LeaderElector:
    """An elector on its own API client: the Lease's calls never wait for a connection the handlers hold."""
    api_client = kubernetes.client.ApiClient(config)
    api_client.user_agent = user_agent
    lock = LeaseLock(api_client, lease_namespace(namespace), name, request_timeout=RENEW_DEADLINE / 2)
    return LeaderElector(lock, own_identity())
