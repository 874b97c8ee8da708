"""What the kopf handlers work with, handed to them through kopf's memo (no module globals).

kopf_cli builds one OperatorContext for a real run; tests build their own with a FakePlatform.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import kopf
import kubernetes.client

from ..models import FLOpsProjectStatus, ProjectRef
from ..pacing import Pacing
from ..models.spec import Platform as PlatformName
from ..platforms.base import Credentials, Observation, PermanentPlatformError, Platform
from ..control import NoControl, TrainingControl
from ..progress import ProgressSource
from .kopf_metrics import InstrumentedPlatform, Metrics

PlatformFactory = Callable[[], Platform]


class Unusable:
    """Stands for a platform this operator cannot use (not served, or misconfigured): every call
    says why, nothing is touched, and the project is Stalled with that message."""

    def __init__(self, name: str, message: str):
        self.name = name
        self._message = message

    async def observe(self, project: ProjectRef) -> Observation:
        raise PermanentPlatformError(self._message)

    async def ensure(self, project: ProjectRef, service: Any, secrets: Mapping[str, str]) -> Any:
        raise PermanentPlatformError(self._message)

    async def remove(self, project: ProjectRef, name: str) -> None:
        raise PermanentPlatformError(self._message)

    async def remove_all(self, project: ProjectRef) -> None:
        raise PermanentPlatformError(self._message + "; set spec.deletionPolicy: Orphan to let the project go")

    async def close(self) -> None:
        pass


class PlatformSet:
    """The platforms this operator serves, by the name a project's spec.platform uses.

    Each is built on first use, so a driver is imported only when a project needs it.
    """

    def __init__(self, factories: Mapping[str, PlatformFactory], metrics: Metrics):
        self._factories = dict(factories)
        self._built: dict[str, Platform] = {}
        self._metrics = metrics

    @property
    def served(self) -> list[str]:
        return sorted(self._factories)

    def for_manifest(self, manifest: Mapping[str, Any]) -> Platform:
        """The platform a project's spec names (Pydantic's default, local, when it names none); an
        Unusable one for anything else, a spec of any shape included."""
        spec = manifest.get("spec") if isinstance(manifest, Mapping) else None
        if not isinstance(spec, Mapping):
            return Unusable("(none)", "spec is not a mapping: it names no platform")
        return self.for_name(spec.get("platform", PlatformName.local.value))

    def for_name(self, name: Any) -> Platform:
        if not isinstance(name, str) or name not in self._factories:
            known = [p.value for p in PlatformName]
            if name not in known:
                return Unusable(str(name), f"spec.platform {name!r} is not a platform (known: {', '.join(known)})")
            return Unusable(name, f"spec.platform {name!r} is not served by this operator (it serves: "
                                  f"{', '.join(self.served) or 'nothing'}); start one with --platform {name}")
        if name not in self._built:
            try:
                platform = self._factories[name]()
            except (ImportError, ValueError) as exc:  # a missing driver, or its configuration is wrong
                return Unusable(name, f"platform {name} cannot be used: {exc}")
            self._built[name] = InstrumentedPlatform(platform, self._metrics)
        return self._built[name]

    async def close(self) -> None:
        for platform in self._built.values():
            await platform.close()
        self._built.clear()


@dataclass
class OperatorContext:
    platforms: PlatformSet
    credentials: Credentials
    progress: ProgressSource
    metrics: Metrics
    kube_config: kubernetes.client.Configuration
    control: TrainingControl = field(default_factory=NoControl)
    """The operator's writes to a training's tracking server (stop requests, learner counts, allowed hosts)."""
    statuses: dict[str, dict] = field(default_factory=dict)
    """Per project uid, its status as the watch last brought it (never ahead of the cluster)."""
    written: dict[str, tuple[dict, dict]] = field(default_factory=dict)
    """Per project uid, the last status this process wrote: (the object's status it was written over, the new one)."""
    metrics_port: int | None = None
    """Where /metrics listens once started (the port actually bound, when asked for port 0)."""
    pacing: Pacing = field(default_factory=Pacing)
    """When each project is looked at again (the timer only ticks; this decides)."""
    lookahead: float = 0.0
    """A tick takes a project that is due within this many seconds, waiting until it is due (woken early when a
    change handler plans the look anew): so that a look lands when the pacing says, not at the next tick after it.
    The operator sets it to infinity: each project's timer then sleeps until its look is due instead of waking
    twice a second to find it is not (at 1,000 settled projects that was 2,000 handler calls a second)."""
    clock: Callable[[], float] = time.monotonic
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    _next: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Per project uid: when it is due next, and the delay that led there (for the backoff)."""
    _replanned: dict[str, asyncio.Event] = field(default_factory=dict)
    """Per project uid: set when its next look is planned anew (wakes a tick waiting for the old time)."""

    def lock(self, uid: str) -> asyncio.Lock:
        """One reconcile at a time per project: kopf runs timers beside change handlers."""
        return self._locks.setdefault(uid, asyncio.Lock())

    def due(self, uid: str) -> bool:
        """A project nothing has looked at yet is due (an operator that just started)."""
        return self.until_due(uid) <= 0.0

    def until_due(self, uid: str) -> float:
        """Seconds until the project's next look (0 or less: due now)."""
        return self._next.get(uid, (float("-inf"), 0.0))[0] - self.clock()

    async def wait_until_due(self, uid: str, stopped: Any = None) -> bool:
        """Wait until the project is due, if that is within `lookahead`; True if it is due now. A look planned anew
        meanwhile (a change handler looked) is waited for instead; False at once when `stopped` (kopf's flag: the
        project is being deleted or the operator is stopping) is set, or when the look is beyond the lookahead."""
        while True:
            wait = self.until_due(uid)
            if wait <= 0.0:
                return True
            if wait > self.lookahead or (stopped is not None and stopped):
                return False
            replanned = self._replanned.setdefault(uid, asyncio.Event())
            replanned.clear()
            waiters = [asyncio.ensure_future(replanned.wait())]
            if stopped is not None:
                waiters.append(asyncio.ensure_future(stopped.wait()))
            try:
                await asyncio.wait(waiters, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()

    def _plan(self, uid: str, due: float, delay: float) -> None:
        self._next[uid] = (due, delay)
        replanned = self._replanned.get(uid)
        if replanned is not None:
            replanned.set()

    def schedule(self, uid: str, status: FLOpsProjectStatus, *, applied: bool, edited: bool) -> float:
        """Plan the next look after one that computed `status`; `edited`: a spec change started it (the
        backoff starts over). Returns the delay."""
        previous = None if edited or uid not in self._next else self._next[uid][1]
        delay = self.pacing.next_delay(status, applied=applied, previous=previous)
        self._plan(uid, self.clock() + delay, delay)
        return delay

    def retry_in(self, uid: str, delay: float) -> None:
        """A platform error: kopf retries the handler after `delay`; the look is due by then."""
        self._plan(uid, self.clock() + delay, delay)

    def forget(self, uid: str, key: str) -> None:
        self.statuses.pop(uid, None)
        self.written.pop(uid, None)
        self._locks.pop(uid, None)
        self._next.pop(uid, None)
        replanned = self._replanned.pop(uid, None)
        if replanned is not None:
            replanned.set()
        self.metrics.forget(key)


def connection_info(config: kubernetes.client.Configuration) -> kopf.ConnectionInfo:
    """kopf's login from the same client configuration the Secret store uses (one source of truth)."""
    header = config.get_api_key_with_prefix("BearerToken") or config.get_api_key_with_prefix("authorization")
    parts = header.split(" ", 1) if header else []
    scheme, token = (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0] if parts else None)
    return kopf.ConnectionInfo(
        server=config.host,
        ca_path=config.ssl_ca_cert or None,
        insecure=not config.verify_ssl,
        scheme=scheme,
        token=token,
        certificate_path=config.cert_file or None,
        private_key_path=config.key_file or None,
    )
