"""The kopf operator, in-process, against kmock on a loopback port; tests drive it with the official client.

kmock and kopf share one event loop in a background thread; the official client (blocking) is
used from the test thread, as a user's kubectl would. The platform is a parameter (`PlatformCase`):
the in-memory fake today, the Oakestra driver against its emulator later.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import urllib.request
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import kubernetes.client
import pytest
from kubernetes.client.exceptions import ApiException

from flops_operator.adapters.kopf_cli import build_context, run_operator
from flops_operator.adapters.kopf_context import OperatorContext, PlatformFactory
from flops_operator.models import GROUP, PLURAL, VERSION, Project, ProjectRef
from flops_operator.platforms.fake import FakePlatform
from flops_operator.progress import TrainingProgress

from .kmock_layer import serve_kubernetes

RESYNC_SECONDS = 1.0
WAIT_SECONDS = 300.0
"""A bound for hangs only: every wait is for an event, and 2 shared cores may be busy."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def eventually(check: Callable[[], Any], *, what: str, timeout: float = WAIT_SECONDS) -> Any:
    """Poll until `check` returns something truthy; a bound against hanging, not a timing assertion."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = check()
            if last:
                return last
        except (AssertionError, ApiException, KeyError, TypeError) as exc:
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"never came true: {what}; last seen: {last!r}")
        time.sleep(0.1)


@dataclass
class PlatformCase:
    """One platform under test: what projects ask for, how to build it, how tests steer and read it."""

    name: str
    """The platform's own name (Platform.name, as in metrics labels)."""
    spec_platform: str
    factories: dict[str, PlatformFactory]
    services: Callable[[ProjectRef], set[str]]
    complete: Callable[[ProjectRef, str], None]
    set_failing: Callable[[bool], None]
    observations: Callable[[ProjectRef], int]
    """How many times the operator has observed this project on the platform (one per reconcile pass)."""


def fake_case() -> PlatformCase:
    fake = FakePlatform()

    def set_failing(value: bool) -> None:
        fake.failing = value

    return PlatformCase(
        name=fake.name, spec_platform="local", factories={"local": lambda: fake},
        services=lambda ref: set(fake.projects.get(ref.uid, {})),
        complete=fake.complete, set_failing=set_failing,
        observations=lambda ref: sum(1 for call in list(fake.calls) if call[:2] == ("observe", ref.key)),
    )


def oakestra_case(stack: ExitStack, emu: Any = None, **config_overrides: Any) -> PlatformCase:
    """The Oakestra driver against the Oakestra emulator (its own loop, in its own thread): a new one on
    its simulated clock, or `emu` (e.g. one whose instances are containers) with the driver's defaults
    for readiness unless overridden."""
    from flops_operator.platforms.oakestra import OakestraConfig, OakestraPlatform
    from flops_operator.platforms.oakestra.names import app_name, service_name
    from tests.oakestra_emulator import emulator_in_thread

    if emu is None:
        emu = stack.enter_context(emulator_in_thread())
        # Instances are the emulator's clock, not processes: nothing to wait for, nothing to probe.
        config_overrides = {"ready_after": 0.0, "health_checks": False, **config_overrides}
    config = OakestraConfig(url=emu.url, username="Admin", password="Admin", retries=2, backoff_max=0.2,
                            request_timeout=5.0, **config_overrides)
    logical = {service_name(n): n for n in ("backend-store", "artifact-store", "tracking-server", "aggregator", "builder",
                                            "model-server", *(f"learner-{i}" for i in range(32)))}

    def app_id(ref: ProjectRef) -> str | None:
        return next((a["applicationID"] for a in emu.apps() if a["application_name"] == app_name(ref)), None)

    def services(ref: ProjectRef) -> set[str]:
        found = app_id(ref)
        return {logical[j["microservice_name"]] for j in emu.jobs(found)} if found else set()

    def complete(ref: ProjectRef, name: str) -> None:
        emu.complete(emu.job(service_name(name), app_id(ref))["microserviceID"])

    def set_failing(value: bool) -> None:
        emu.faults.kinds, emu.faults.after_effect = ("500",), 0.0
        emu.faults.rate = 1.0 if value else 0.0

    def observations(ref: ProjectRef) -> int:
        found = app_id(ref)
        return sum(1 for c in list(emu.calls) if c.method == "GET" and c.path == f"/api/services/{found}")

    return PlatformCase(
        name="oakestra", spec_platform="oakestra", factories={"oakestra": lambda: OakestraPlatform(config)},
        services=services, complete=complete, set_failing=set_failing, observations=observations)


def _fake(stack: ExitStack) -> PlatformCase:
    return fake_case()


PLATFORM_CASES: dict[str, Callable[[ExitStack], PlatformCase]] = {"fake": _fake, "oakestra": oakestra_case}


class SteeredProgress:
    """Training progress as tests set it per project (the MLflow reader's stand-in)."""

    def __init__(self) -> None:
        self.by_project: dict[str, TrainingProgress] = {}
        self.asked: list[tuple[str, str]] = []

    async def fetch(self, project: Project, tracking_url: str, login=None) -> TrainingProgress | None:
        self.asked.append((project.ref.key, tracking_url))
        return self.by_project.get(project.ref.key)

    async def request_stop(self, project: Project, tracking_url: str, run_id: str, reason: str,
                           login=None) -> bool:
        return False  # as an MLflow that cannot be written: the services stay until the drain bound

    async def request_learners(self, project: Project, tracking_url: str, run_id: str, count: int,
                               login=None) -> bool:
        return False  # as an MLflow that cannot be written

    async def allow_address(self, project: Project, tracking_url: str, via: str, login=None) -> bool:
        return True  # as a server that answers at its public address


@dataclass
class Cluster:
    url: str
    api: kubernetes.client.ApiClient
    ctx: OperatorContext
    platform: PlatformCase
    liveness_url: str
    emulator: Any
    progress: SteeredProgress
    _namespaces: Iterator[int] = field(default_factory=lambda: iter(range(1, 10_000)))

    @property
    def custom(self) -> kubernetes.client.CustomObjectsApi:
        return kubernetes.client.CustomObjectsApi(self.api)

    @property
    def core(self) -> kubernetes.client.CoreV1Api:
        return kubernetes.client.CoreV1Api(self.api)

    def namespace(self) -> str:
        """A namespace of its own for each test: Events and Secrets of tests never mix."""
        return f"test-{next(self._namespaces)}"

    def create(self, namespace: str, name: str, spec: dict) -> dict:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "FLOpsProject",
                "metadata": {"name": name, "namespace": namespace}, "spec": spec}
        return self.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)

    def get(self, namespace: str, name: str) -> dict:
        return self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)

    def patch_spec(self, namespace: str, name: str, spec: dict) -> dict:
        return self.custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, {"spec": spec})

    def delete(self, namespace: str, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)

    def gone(self, namespace: str, name: str) -> bool:
        try:
            self.get(namespace, name)
        except ApiException as exc:
            if exc.status == 404:
                return True
            raise
        return False

    def events(self, namespace: str, name: str) -> list[kubernetes.client.CoreV1Event]:
        return [e for e in self.core.list_namespaced_event(namespace).items if e.involved_object.name == name]

    def ref(self, obj: dict) -> ProjectRef:
        meta = obj["metadata"]
        return ProjectRef(namespace=meta["namespace"], name=meta["name"], uid=meta["uid"])

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ctx.metrics_port}/metrics", timeout=10) as rsp:
            return rsp.read().decode()


@contextmanager
def kubernetes_in_thread() -> Iterator[tuple[str, Any]]:
    """kmock alone, served from a background thread: for an operator running as a separate process."""
    ready, stop = threading.Event(), threading.Event()
    box: dict[str, Any] = {}

    async def main() -> None:
        async with serve_kubernetes() as (emulator, url):
            box.update(url=url, emulator=emulator)
            ready.set()
            while not stop.is_set():
                await asyncio.sleep(0.05)

    thread = threading.Thread(target=lambda: asyncio.run(main()), name="kmock", daemon=True)
    thread.start()
    try:
        if not ready.wait(WAIT_SECONDS):
            raise RuntimeError("kmock did not start")
        yield box["url"], box["emulator"]
    finally:
        stop.set()
        thread.join(WAIT_SECONDS)
        assert not thread.is_alive(), "the kmock thread did not stop"


@pytest.fixture(scope="module", params=sorted(PLATFORM_CASES))
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    with ExitStack() as stack:
        yield from _run_cluster(PLATFORM_CASES[request.param](stack))


def _run_cluster(case: PlatformCase, progress: Any = None,
                 resync_seconds: float = RESYNC_SECONDS) -> Iterator[Cluster]:
    """kmock and the kopf operator serving `case`, in a background thread. `progress` is the training
    progress source (default: SteeredProgress, which tests set by hand)."""
    ready, stop = threading.Event(), threading.Event()
    box: dict[str, Any] = {}
    liveness_url = f"http://127.0.0.1:{free_port()}/healthz"

    async def main() -> None:
        async with serve_kubernetes() as (emulator, url):
            config = kubernetes.client.Configuration(host=url)
            source = progress if progress is not None else SteeredProgress()
            ctx = build_context([case.spec_platform], config, factories=case.factories, progress=source)
            box.update(url=url, emulator=emulator, ctx=ctx, config=config, progress=source)
            await run_operator(ctx, clusterwide=True, liveness=liveness_url, metrics_host="127.0.0.1",
                               metrics_port=0, resync_seconds=resync_seconds, stop_flag=stop, ready_flag=ready)

    def thread_main() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # surfaced to the test thread below
            box["error"] = exc
        finally:
            ready.set()

    thread = threading.Thread(target=thread_main, name="kopf-operator", daemon=True)
    thread.start()
    ready.wait(WAIT_SECONDS)
    if "error" in box or not ready.is_set():
        stop.set()
        thread.join(WAIT_SECONDS)
        raise RuntimeError(f"the operator did not start: {box.get('error')!r}")
    api = kubernetes.client.ApiClient(box["config"])
    try:
        yield Cluster(url=box["url"], api=api, ctx=box["ctx"], platform=case, liveness_url=liveness_url,
                      emulator=box["emulator"], progress=box["progress"])
    finally:
        api.close()
        stop.set()
        thread.join(WAIT_SECONDS)
        assert not thread.is_alive(), "the operator thread did not stop"
        assert "error" not in box, f"the operator failed: {box['error']!r}"
