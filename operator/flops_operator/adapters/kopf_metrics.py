"""Prometheus metrics of the operator, on a registry of its own, served over HTTP by aiohttp.

A private CollectorRegistry (not prometheus-client's global one) so that every operator instance,
and every test, starts from zero and can be thrown away.
"""

from __future__ import annotations

import time
from typing import Iterator, Mapping

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ..models import Phase, ProjectRef
from ..plan.services import ServiceSpec
from ..platforms.base import Observation, ObservedService, PermanentPlatformError, Platform, TransientPlatformError


class _ProjectsByPhase(Collector):
    """flops_projects{phase}: computed at scrape time from the last phase seen of each project."""

    def __init__(self, phases: Mapping[str, str]):
        self._phases = phases

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("flops_projects", "FLOpsProjects served, by status phase.", labels=["phase"])
        counts = {phase.value: 0 for phase in Phase}
        for phase in self._phases.values():
            counts[phase] = counts.get(phase, 0) + 1
        for phase, count in counts.items():
            family.add_metric([phase], count)
        yield family


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.reconciles = Counter(
            "flops_reconciles", "Reconcile passes, by what triggered them and how they ended.",
            ["trigger", "result"], registry=self.registry)
        self.duration = Histogram(
            "flops_reconcile_duration_seconds", "Duration of one reconcile (all its passes), by trigger.",
            ["trigger"], registry=self.registry,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
        self.platform_calls = Counter(
            "flops_platform_calls", "Calls to a platform, by platform and operation.",
            ["platform", "operation"], registry=self.registry)
        self.platform_errors = Counter(
            "flops_platform_call_errors", "Failed platform calls, by platform, operation and kind "
            "(transient: retried; permanent: someone must act).",
            ["platform", "operation", "kind"], registry=self.registry)
        self._phases: dict[str, str] = {}
        self.registry.register(_ProjectsByPhase(self._phases))

    def reconciled(self, trigger: str, result: str, seconds: float) -> None:
        self.reconciles.labels(trigger, result).inc()
        self.duration.labels(trigger).observe(seconds)

    def phase(self, key: str, phase: Phase) -> None:
        self._phases[key] = phase.value

    def forget(self, key: str) -> None:
        self._phases.pop(key, None)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class InstrumentedPlatform:
    """A Platform that counts the calls and failed calls of the one it wraps."""

    def __init__(self, platform: Platform, metrics: Metrics):
        self._platform, self._metrics = platform, metrics
        self.name = platform.name

    async def _call(self, operation: str, call):
        self._metrics.platform_calls.labels(self.name, operation).inc()
        try:
            return await call
        except TransientPlatformError:
            self._metrics.platform_errors.labels(self.name, operation, "transient").inc()
            raise
        except PermanentPlatformError:
            self._metrics.platform_errors.labels(self.name, operation, "permanent").inc()
            raise
        except Exception:
            self._metrics.platform_errors.labels(self.name, operation, "unexpected").inc()
            raise

    async def observe(self, project: ProjectRef) -> Observation:
        return await self._call("observe", self._platform.observe(project))

    async def ensure(self, project: ProjectRef, service: ServiceSpec, secrets: Mapping[str, str]) -> ObservedService:
        return await self._call("ensure", self._platform.ensure(project, service, secrets))

    async def remove(self, project: ProjectRef, name: str) -> None:
        await self._call("remove", self._platform.remove(project, name))

    async def remove_all(self, project: ProjectRef) -> None:
        await self._call("remove_all", self._platform.remove_all(project))

    async def close(self) -> None:
        await self._platform.close()


class Stopwatch:
    def __init__(self) -> None:
        self._start = time.monotonic()

    @property
    def seconds(self) -> float:
        return time.monotonic() - self._start


async def serve_metrics(metrics: Metrics, host: str, port: int) -> tuple[web.AppRunner, int]:
    """GET /metrics on host:port (0 picks a free port). Returns the runner (to clean up) and the port."""

    async def scrape(_: web.Request) -> web.Response:
        response = web.Response(body=metrics.exposition())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner, runner.addresses[0][1]
