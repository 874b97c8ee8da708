"""One supervised child process: start, readiness, one-shot outcome or restart with backoff, stop.

Every child leads its own process group (its own session), so stopping it also stops whatever it
spawned (mlflow's uvicorn, Flower's app processes). Descendants that started their own session
(Flower's SuperNode does) leave the group and, once their parent is gone, the family tree too; they
still carry the service's marker in their environment, which is how they are found and stopped.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable

import psutil
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt, wait_exponential

from ... import redaction
from ...private_state import UMASK, open_private, private_dir
from ..base import ServiceState
from .probes import Probe

log = logging.getLogger(__name__)

MARKER_ENV = "FLOPS_LOCAL_SERVICE"
"""Set in a service's environment to a value unique to it; inherited by everything it starts."""

_PR_SET_PDEATHSIG = 1
try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
except (OSError, AttributeError):  # pragma: no cover - non-Linux libc
    _prctl = None


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: if the platform's process is killed outright
    # (SIGKILL, no chance to clean up), the kernel still takes its direct children down.
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass(frozen=True)
class Launch:
    """Everything needed to (re)start one service as a process."""

    argv: list[str]
    env: dict[str, str]
    """The child's complete environment."""
    cwd: Path
    log_path: Path
    one_shot: bool
    probe: Probe | None = None
    """None: ready as soon as the process runs."""
    prepare: Callable[[], Awaitable[None]] | None = None
    """Runs before every start (create a datadir, write first-start SQL)."""
    secrets: tuple[str, ...] = field(default=(), repr=False)
    """Values blanked out of the log tails we report (redaction.secret_values of the service's credentials)."""


@dataclass(frozen=True)
class RestartPolicy:
    max_restarts: int = 5
    backoff_seconds: float = 0.5
    max_backoff_seconds: float = 30.0


_HEADER = "--- flops:"
"""Starts the lines the supervisor itself writes into a service's log (not the service's words)."""


class _Exited(Exception):
    """A long-running service exited although nobody asked it to."""


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def read_end(path: Path, size: int = 8192) -> str:
    """The last `size` bytes of a log, from the start of a line: a line cut by the read (and a value in it) is
    left out, not shown in part. "" if there is no log."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            start = max(0, fh.tell() - size)
            fh.seek(start)
            data = fh.read()
    except OSError:
        return ""
    if start > 0:
        data = data[data.find(b"\n") + 1:] if b"\n" in data else b""
    return data.decode(errors="replace")


def log_tail(path: Path, secrets: tuple[str, ...] = (), lines: int = 5, limit: int = 600) -> str:
    """The log's last lines for a message, without the supervisor's own lines, redacted (flops_operator.redaction)."""
    return redaction.tail(read_end(path), lines=lines, limit=limit, redactor=redaction.Redactor(secrets),
                          keep=lambda line: not line.startswith(_HEADER))


def stragglers(pgid: int, marker: str | None) -> list[psutil.Process]:
    """Processes of a service still around: in its process group, or carrying its marker."""
    found = []
    for proc in psutil.process_iter():
        if proc.pid == os.getpid():
            continue
        try:
            if os.getpgid(proc.pid) == pgid or (marker and proc.environ().get(MARKER_ENV) == marker):
                found.append(proc)
        except (ProcessLookupError, PermissionError, psutil.Error, OSError):
            continue
    return found


def _kill_all(procs: list[psutil.Process], timeout: float) -> None:
    """SIGTERM, wait, SIGKILL whatever is left. Blocking: call in a thread."""
    alive = []
    for proc in procs:
        try:
            proc.terminate()
            alive.append(proc)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(alive, timeout=timeout)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=timeout)


class ManagedProcess:
    """A child process with the platform's service semantics.

    One-shot: exit 0 -> completed, anything else -> failed with the exit and the log's last lines.
    Long-running: any exit is restarted with exponential backoff (counted in `restarts`) until
    the policy gives up, then failed.
    """

    def __init__(self, launch: Launch, *, policy: RestartPolicy = RestartPolicy(), stop_timeout: float = 10.0,
                 probe_interval: float = 0.25) -> None:
        self.launch = launch
        self.policy = policy
        self.stop_timeout = stop_timeout
        self.probe_interval = probe_interval
        self.state = ServiceState.pending
        self.message: str | None = None
        self.exit_code: int | None = None
        self.restarts = 0
        self.pid: int | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task | None = None
        self._marker = launch.env.get(MARKER_ENV)
        self._changed = asyncio.Event()

    def start(self) -> None:
        if self._task is None:
            self.state = ServiceState.starting
            self._task = asyncio.create_task(self._supervise(), name=f"supervise {self.launch.argv[0]}")

    async def wait_changed(self) -> None:
        """Until the state changes (for tests and the runner's quicker wake-up)."""
        self._changed.clear()
        await self._changed.wait()

    async def wait_for(self, *states: ServiceState) -> ServiceState:
        while self.state not in states:
            await self.wait_changed()
        return self.state

    def _set(self, state: ServiceState, message: str | None = None) -> None:
        self.state, self.message = state, message
        self._changed.set()

    async def _supervise(self) -> None:
        try:
            if self.launch.one_shot:
                await self._run_once()
                return
            retrying = AsyncRetrying(
                stop=stop_after_attempt(self.policy.max_restarts + 1),
                wait=wait_exponential(multiplier=self.policy.backoff_seconds, max=self.policy.max_backoff_seconds),
                retry=retry_if_exception_type(_Exited),
                before_sleep=self._before_restart,
                reraise=True,
            )
            async for attempt in retrying:
                with attempt:
                    await self._run_once()
        except _Exited as exc:
            self._set(ServiceState.failed, f"gave up after {self.restarts} restarts: {exc}")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a prepare step or spawn failed: nothing to restart
            log.debug("service %s could not start", self.launch.argv[0], exc_info=True)
            self._set(ServiceState.failed, f"could not start: {exc}")

    def _before_restart(self, retry_state: RetryCallState) -> None:
        self.restarts += 1
        self._set(ServiceState.starting, f"restarting (#{self.restarts}) after {retry_state.outcome.exception()}")

    async def _run_once(self) -> None:
        if self.launch.prepare is not None:
            await self.launch.prepare()
        private_dir(self.launch.log_path.parent)
        with os.fdopen(open_private(self.launch.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND), "ab") as log_file:
            log_file.write(f"{_HEADER} starting {Path(self.launch.argv[0]).name}\n".encode())
            log_file.flush()
            spawn = asyncio.ensure_future(asyncio.create_subprocess_exec(
                *self.launch.argv, env=self.launch.env, cwd=self.launch.cwd,
                stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=_die_with_parent,
                # What the service (and whatever it starts) creates in the project's state is private.
                umask=UMASK,
            ))
            try:
                # Cancelling asyncio's spawn half-way can leave a child nobody waits for (and a
                # stop() that never returns): let it finish, then stop what it started.
                proc = await asyncio.shield(spawn)
            except asyncio.CancelledError:
                await self._terminate(await spawn)
                raise
        self._proc, self.pid, self.exit_code = proc, proc.pid, None
        if self.state is not ServiceState.starting:
            self._set(ServiceState.starting, self.message)
        ready = asyncio.create_task(self._wait_ready())
        try:
            code = await proc.wait()
        except asyncio.CancelledError:
            ready.cancel()
            await self._terminate(proc)
            raise
        ready.cancel()
        await asyncio.gather(ready, return_exceptions=True)
        # Whatever the leader left behind in its group goes with it.
        await self._sweep(proc.pid)
        self.exit_code = code
        outcome = describe_exit(code)
        if self.launch.one_shot:
            if code == 0:
                self._set(ServiceState.completed, None)
            else:
                tail = log_tail(self.launch.log_path, self.launch.secrets)
                self._set(ServiceState.failed, f"{outcome}: {tail}" if tail else outcome)
            return
        raise _Exited(outcome)

    async def _wait_ready(self) -> None:
        probe = self.launch.probe
        while probe is not None and not await probe():
            await asyncio.sleep(self.probe_interval)
        if self.state is ServiceState.starting:
            self._set(ServiceState.running, None)

    async def _terminate(self, proc: asyncio.subprocess.Process) -> None:
        if proc.returncode is None:
            try:
                descendants = psutil.Process(proc.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                descendants = []
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                await asyncio.wait_for(proc.wait(), self.stop_timeout)
            except asyncio.TimeoutError:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                await proc.wait()
            await asyncio.to_thread(_kill_all, [p for p in descendants if p.is_running()], self.stop_timeout)
        await self._sweep(proc.pid)

    async def _sweep(self, pgid: int) -> None:
        found = await asyncio.to_thread(stragglers, pgid, self._marker)
        await asyncio.to_thread(_kill_all, found, self.stop_timeout)

    async def stop(self) -> None:
        """Stop the process (its group and descendants too) and its supervision. Idempotent."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._proc is not None:
            await self._terminate(self._proc)
