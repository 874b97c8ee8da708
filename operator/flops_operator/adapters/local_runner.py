"""`flops run` without the command line: the reconcile step in a loop with the local platform.

No business logic here: each step is the convergence step the kopf adapter takes (reconcile.converge),
paced by the same policy (pacing.Pacing, with one machine's short delays), until the status says the run
is settled (Completed or Failed); then finalize() removes the stack, unless
the tracking server is kept up for its UI until Ctrl-C. SIGINT/SIGTERM stop the loop (or the
keep wait) and teardown always runs to the end; no child process outlives it.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import signal
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..credentials import FileCredentials, ReferencedSecret
from ..models import FLOpsProjectStatus, Phase, Project
from ..platforms.base import PermanentPlatformError, TransientPlatformError
from ..platforms.local import LocalPlatform, RestartPolicy, StateLayout, default_state_dir
from ..control_mlflow import MlflowControl
from ..mlflow_rest import MlflowRest
from ..progress_mlflow import MlflowProgress
from ..pacing import Pacing
from ..reconcile import Passes, ReconcileResult, converge, finalize, utcnow
from ..status import problem_status

log = logging.getLogger(__name__)

# One machine: services start in seconds and nothing is remote, so look often (every half second at most,
# as `flops run` always has); the run stops once settled, so the resync only caps the backoff.
LOCAL_PACING = Pacing(resync=0.5, quick=0.25, growth=1.5, training=0.5, jitter=0.0)


class View(Protocol):
    def update(self, result: ReconcileResult) -> None: ...

    def note(self, text: str) -> None: ...

    def keeping(self, status: FLOpsProjectStatus, layout: StateLayout | None = None) -> None: ...


class SilentView:
    def update(self, result: ReconcileResult) -> None:
        pass

    def note(self, text: str) -> None:
        log.info("%s", text)

    def keeping(self, status: FLOpsProjectStatus, layout: StateLayout | None = None) -> None:
        pass


@dataclass
class RunResult:
    project: Project
    status: FLOpsProjectStatus
    layout: StateLayout
    manifest: dict[str, Any]
    interrupted: bool = False

    @property
    def exit_code(self) -> int:
        if self.interrupted and self.status.phase not in (Phase.Completed, Phase.Failed):
            return 130
        return 0 if self.status.phase is Phase.Completed else 1


def with_uid(manifest: dict[str, Any]) -> dict[str, Any]:
    """Each `flops run` is a new object, as a fresh Kubernetes resource would be: its own uid.

    The MLflow data of earlier runs stays in the state directory; a run of the same project must
    not mistake an earlier run (found by the uid tag) for its own.
    """
    out = copy.deepcopy(manifest)
    meta = out.setdefault("metadata", {})
    meta.setdefault("uid", f"local-{uuid.uuid4().hex[:12]}")
    meta.setdefault("generation", 1)
    return out


class LocalRunner:
    def __init__(self, manifest: dict[str, Any], project: Project, *, state_dir: Path | None = None,
                 keep: bool = False, view: View | None = None, pacing: Pacing = LOCAL_PACING,
                 policy: RestartPolicy = RestartPolicy(), stop_timeout: float = 10.0,
                 secrets: dict[tuple[str, str], ReferencedSecret] | None = None) -> None:
        self.manifest = with_uid(manifest)
        self.project = project
        root = state_dir if state_dir is not None else default_state_dir(project.ref)
        self.layout = StateLayout(root.expanduser().resolve())
        self.keep = keep
        self.view = view or SilentView()
        self.pacing = pacing
        self.platform = LocalPlatform(lambda ref: self.layout.root, policy=policy, stop_timeout=stop_timeout)
        self.credentials = FileCredentials(lambda ref: self.layout.credentials, referenced=secrets)
        self.mlflow = MlflowRest()
        self.progress, self.control = MlflowProgress(self.mlflow), MlflowControl(self.mlflow)
        self.status = FLOpsProjectStatus()

    async def _converge(self) -> None:
        delay: float | None = None
        while True:
            passes = Passes(self.status)
            try:
                result = await converge(self.manifest, passes, platform=self.platform, credentials=self.credentials,
                                        progress_source=self.progress, control=self.control)
            except TransientPlatformError as exc:
                self.view.note(f"retrying: {exc}")
                self.status = passes.status
            else:
                self.status = result.status
                self.view.update(result)
                if result.settled:
                    return
                if _stalled(result.status):
                    # A cluster operator waits for someone to fix a stalled project; on one machine
                    # nobody will (a stack service gave up restarting): the run has failed.
                    self.status = _failed(self, result.status.message or "stalled", reason="Stalled")
                    self.view.note(f"stalled: {self.status.message}")
                    return
            delay = self.pacing.next_delay(self.status, applied=bool(passes.applied), previous=delay)
            await asyncio.sleep(delay)

    async def _work(self) -> None:
        await self._converge()
        if self.keep and self.status.mlflow.tracking_uri:
            self.view.keeping(self.status, self.layout)
            await asyncio.Event().wait()

    async def run(self) -> RunResult:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        handled = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
                handled.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
                pass
        interrupted = False
        try:
            work = asyncio.create_task(self._work())
            stopper = asyncio.create_task(stop.wait())
            try:
                await asyncio.wait({work, stopper}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (work, stopper):
                    task.cancel()
                await asyncio.gather(work, stopper, return_exceptions=True)
            interrupted = stop.is_set()
            if work.done() and not work.cancelled() and work.exception() is not None:
                exc = work.exception()
                if not isinstance(exc, PermanentPlatformError):
                    raise exc
                self.status = _failed(self, str(exc), reason=exc.reason)
                self.view.note(f"cannot run: {exc}")
        finally:
            # Signals now only repeat the request: teardown is bounded by the stop timeouts.
            self.view.note("stopping services")
            await self._teardown()
            for sig in handled:
                loop.remove_signal_handler(sig)
        return RunResult(self.project, self.status, self.layout, self.manifest, interrupted=interrupted)

    async def _teardown(self) -> None:
        try:
            await finalize(self.manifest, platform=self.platform, credentials=self.credentials)
        finally:
            await self.platform.close()
            await self.mlflow.close()


def _stalled(status: FLOpsProjectStatus) -> bool:
    stalled = status.condition("Stalled")
    return stalled is not None and stalled.status == "True"


def _failed(runner: LocalRunner, message: str, *, reason: str) -> FLOpsProjectStatus:
    """The run ends here: the cluster's helper, so the conditions say so too (Stalled, not Ready)."""
    generation = int(runner.manifest["metadata"].get("generation") or 1)
    return problem_status(runner.status, generation, stalled=True, reason=reason, message=message, now=utcnow())
