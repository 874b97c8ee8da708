"""Start/stop the emulator on a free loopback port, and the handle tests steer and inspect it with."""

from __future__ import annotations

import asyncio
import threading
import time
from contextlib import asynccontextmanager, contextmanager
from typing import AsyncIterator, Iterable, Iterator

from aiohttp import web

from .cluster import Cluster, Timing
from .http import Call, Faults, SystemManagerApp
from .model import SystemManager
from .worker import ContainerWorker
from .tokens import TokenMint


class ManualClock:
    """Wall-clock seconds that move only when a test says so (tokens, scheduling, failures)."""

    def __init__(self, start: float | None = None):
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Emulator:
    """A running emulator: `url` to talk to, the System Manager's records to assert against."""

    def __init__(self, url: str, sm: SystemManager, http: SystemManagerApp):
        self.url, self.sm, self.http = url, sm, http

    # Knobs.
    @property
    def faults(self) -> Faults:
        return self.http.faults

    @property
    def latency(self) -> float:
        return self.http.latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        self.http.latency = seconds

    def set_on_request(self, hook) -> None:
        self.http.on_request = hook

    def clock(self) -> float:
        return self.http.clock()

    def restart(self, *, fresh_users: bool = True) -> None:
        """As after a System Manager restart: a new signing key (old tokens: 422 "Signature
        verification failed" on the flask-jwt-extended routes, 401 on the others) and, with
        `fresh_users`, new user ids (records survive: apps are owned by username)."""
        self.sm.restart(fresh_users=fresh_users)

    # The call record.
    @property
    def calls(self) -> list[Call]:
        return self.http.calls

    def count(self, method: str, route: str, *, effective: bool = False) -> int:
        """Calls to a route template such as `/api/service/{serviceid}/instance`."""
        return sum(1 for c in self.calls if c.method == method and c.route == route and (c.effect or not effective))

    def writes(self) -> list[Call]:
        return [c for c in self.calls if c.method in ("POST", "PUT", "DELETE") and not c.path.startswith("/api/auth/")]

    def reads(self) -> list[Call]:
        return [c for c in self.calls if c.method == "GET"]

    def clear_calls(self) -> None:
        self.calls.clear()

    # The world.
    def apps(self, user: str = "Admin") -> list[dict]:
        self.tick()
        return self.sm.user_apps(user)

    def jobs(self, app_id: str | None = None) -> list[dict]:
        """Service documents as a client would read them now (the clock's effects applied)."""
        self.tick()
        return [j for j in self.sm.jobs.values() if app_id is None or j["applicationID"] == app_id]

    def job(self, service_name: str, app_id: str | None = None) -> dict:
        found = [j for j in self.jobs(app_id) if j["microservice_name"] == service_name]
        if len(found) != 1:
            raise LookupError(f"{len(found)} jobs named {service_name}")
        return found[0]

    def lost_services(self) -> list[dict]:
        """Jobs missing from their application's service list (§13.13): Oakestra can no longer
        deploy, read or delete them, and deleting the app leaves them behind."""
        self.tick()
        return [j for j in self.sm.jobs.values()
                if j["microserviceID"] not in ((self.sm.apps.get(j["applicationID"]) or {}).get("microservices") or [])]

    def cluster_instances(self) -> list[dict]:
        """Instances the clusters run, including those the root record forgot."""
        self.tick()
        return self.sm.lifecycle.snapshot()

    def tick(self) -> None:
        self.sm.tick(self.clock())

    def complete(self, job_id: str, exit_code: int = 0, detail: str | None = None) -> None:
        """Every running instance of a one-shot job exits with this code."""
        self.tick()
        for instance in self.sm.jobs[job_id]["instance_list"]:
            if instance["status"] == "RUNNING":
                status = "COMPLETED" if exit_code == 0 else "FAILED"
                self.sm.lifecycle.finish((job_id, instance["instance_number"]), status,
                                         detail or ("" if exit_code == 0 else f"exit code {exit_code}"),
                                         self.clock(), self.sm.jobs, stay=True)

    def fail_instance(self, job_id: str, number: int, *, status: str = "FAILED",
                      detail: str = "No suitable worker found", stay: bool = True) -> None:
        """An instance fails or dies; unless `stay`, the cluster re-deploys it after redeploy_after."""
        self.tick()
        self.sm.lifecycle.finish((job_id, number), status, detail, self.clock(), self.sm.jobs, stay=stay)


@asynccontextmanager
async def run_emulator(
    *,
    clock=None,
    timing: Timing | None = None,
    token_ttl: float = 600.0,
    latency: float = 0.0,
    list_write_gap: float = 0.0,
    faults: Faults | None = None,
    clusters: Iterable[Cluster] | None = None,
    host: str = "127.0.0.1",
    worker: ContainerWorker | None = None,
) -> AsyncIterator[Emulator]:
    """`async with run_emulator() as emu:` -> emu.url is http://127.0.0.1:<free port>.

    With a `worker` (worker.ContainerWorker), instances run as containers on its network, whose subnet
    becomes the service-IP range (the host's own address on it is never handed out); the clock is then
    the wall clock.
    """
    clock = clock or time.time
    subnet = {"service_subnet": str(worker.network.subnet), "reserved": (str(worker.network.host_address),)} \
        if worker is not None else {}
    sm = SystemManager(timing=timing or Timing(), mint=TokenMint(access_ttl=token_ttl),
                       clusters=list(clusters) if clusters is not None else None, **subnet)
    sm.lifecycle.runtime = worker
    http = SystemManagerApp(sm, clock, latency=latency, faults=faults, list_write_gap=list_write_gap)
    runner = web.AppRunner(http.build(), access_log=None, handler_cancellation=True, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, host, 0)
    await site.start()
    port = runner.addresses[0][1]
    if worker is not None:
        worker.start(sm)
    try:
        yield Emulator(f"http://{host}:{port}", sm, http)
    finally:
        if worker is not None:
            await worker.close()
        await runner.cleanup()


@contextmanager
def emulator_in_thread(**settings) -> Iterator[Emulator]:
    """The emulator on its own event loop in a background thread (for callers with their own
    loop elsewhere, e.g. a kopf operator in another thread, or a benchmark that should not share
    its loop with the server). Same settings as run_emulator. Inspect its records once calls are done.
    """
    loop = asyncio.new_event_loop()
    started = threading.Event()
    box: dict = {}

    async def serve() -> None:
        box["stop"] = asyncio.Event()
        try:
            async with run_emulator(**settings) as emu:
                box["emu"] = emu
                started.set()
                await box["stop"].wait()
        except BaseException as exc:  # reported to the starting thread
            box["error"] = exc
            started.set()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), name="oakestra-emulator",
                              daemon=True)
    thread.start()
    started.wait(30)
    if "emu" not in box:
        raise RuntimeError(f"emulator did not start: {box.get('error')!r}")
    try:
        yield box["emu"]
    finally:
        loop.call_soon_threadsafe(box["stop"].set)
        thread.join(30)
        loop.close()
