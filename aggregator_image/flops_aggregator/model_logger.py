"""The final model's logger: a child forked from the ServerApp once the task is loaded and the run started.

It rehearses the export at once (torch.export's imports and first trace: ~3 s of CPU) and then logs the models the
ServerApp sends it, warm. In a thread of the ServerApp, that rehearsal made rounds 1-4 1.3 s slower in all
(measured), at nice 19 as at nice 0. The nice value could not help there: with Linux's autogroups (this project's
test machines) the CPU is shared between sessions first, and a nice value weighs only within its own session. A
process of its own takes the rehearsal off the ServerApp's GIL and path; its CPU it still takes on a busy machine
(measured: moving the child into a nice-19 session of its own made no difference on a busy 2-core machine).
Forked rather than spawned, it shares torch and MLflow with the ServerApp copy-on-write (a spawned interpreter
with both, after one export, is 450 MB of its own: over the aggregator's 1 GiB with the rest).

Fork-safety: only the forking thread lives on in the child, and a lock another thread held at the fork stays held
there. So the child runs only the callables it is given and MLflow's REST client (whose HTTP sessions are per
process id; its telemetry is off), never gRPC; it undoes Flower's mirroring of sys.stdout/stderr into a queue
that a ServerApp thread drains; it proves its MLflow client works
(`prepare` makes a request) and says "ready" before it is sent a model, and one that does not within
READY_BOUND_SECONDS is killed (the ServerApp logs the model itself). It ignores SIGINT/SIGTERM (it ends when the
ServerApp closes the pipe or exits: EOF) and leaves with os._exit, so no atexit hook (MLflow's ends the active run)
runs twice."""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import threading
import time
import traceback
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from types import SimpleNamespace
from typing import Any, Callable

log = logging.getLogger("flops_aggregator")

# How long close() waits for the child to leave before killing it (it is idle or finishing one upload).
EXIT_BOUND_SECONDS = 10.0
# How long a model waits for the child to be ready (rehearsed: ~3 s of CPU at nice 19; by the time the final model
# is sent the rounds are over), after which the child is taken for stuck: killed, the model logged by the ServerApp.
READY_BOUND_SECONDS = 120.0


class LoggerGone(RuntimeError):
    """The child could not log the model (it failed, or it is gone); the caller logs it itself."""


class ForkedLogger:
    """The ServerApp's side: one request at a time (log-ahead's thread, then finish's)."""

    def __init__(self, conn: Connection, pid: int):
        self.conn, self.pid, self.lock, self.closed, self.ready = conn, pid, threading.Lock(), False, False

    def log(self, round_: int, weights: Any) -> SimpleNamespace:
        """The model with `weights` logged by the child for round `round_`: its model_id and model_uri."""
        with self.lock:
            if self.closed:
                raise LoggerGone("the model logger is closed")
            try:
                if not self.ready:
                    self._wait_ready()
                self.conn.send((round_, weights))
                status, payload = self.conn.recv()
            except (EOFError, OSError) as exc:
                raise LoggerGone(f"the model logger (pid {self.pid}) is gone ({exit_status(self.pid)})") from exc
        if status != "ok":
            raise LoggerGone(f"the model logger failed: {payload}")
        return SimpleNamespace(**payload)

    def _wait_ready(self) -> None:
        if not self.conn.poll(READY_BOUND_SECONDS):
            kill(self.pid)
            raise LoggerGone(f"the model logger (pid {self.pid}) was not ready in {READY_BOUND_SECONDS:.0f}s")
        status, _ = self.conn.recv()
        if status != "ready":
            raise LoggerGone(f"the model logger (pid {self.pid}) said {status!r} instead of ready")
        self.ready = True

    def close(self, bound: float = EXIT_BOUND_SECONDS) -> None:
        """Ask the child to leave and reap it; killed after `bound` seconds (an unfinished upload is dropped).
        A request still waiting on the child (a stopped training's log-ahead) is ended by the kill."""
        if not self.lock.acquire(timeout=bound):
            kill(self.pid)  # the waiting request then sees EOF and lets go of the pipe
            self.lock.acquire()
        try:
            if self.closed:
                return
            self.closed = True
            try:
                self.conn.send(None)
            except OSError:
                pass
            self.conn.close()
        finally:
            self.lock.release()
        reap(self.pid, bound)


def kill(pid: int) -> None:
    log.warning("the model logger (pid %d) is still busy: killed", pid)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def exit_status(pid: int) -> str:
    """How the child ended, once it has (it is reaped here)."""
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return "already reaped"
    code = os.waitstatus_to_exitcode(status)
    return f"killed by signal {-code}" if code < 0 else f"exit code {code}"


def reap(pid: int, bound: float) -> None:
    deadline = time.monotonic() + bound
    while True:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return
        if done:
            return
        if time.monotonic() >= deadline:
            kill(pid)
            os.waitpid(pid, 0)
            return
        time.sleep(0.05)


def start(prepare: Callable[[], Any], log_model: Callable[[Any, int, Any], Any]) -> ForkedLogger:
    """Fork the logger. In the child: state = prepare() (the rehearsal), then for each (round, weights) received,
    log_model(state, round, weights) -> a ModelInfo, answered with its model_id and model_uri. Raises OSError
    when the fork fails."""
    parent_end, child_end = Pipe()
    gc.freeze()  # the child's collector then leaves the shared objects' pages alone (fewer copied pages)
    try:
        pid = os.fork()
    except OSError:
        gc.unfreeze()
        parent_end.close()
        child_end.close()
        raise
    if pid == 0:
        code = 1
        try:
            parent_end.close()
            serve(child_end, prepare, log_model)
            code = 0
        except BaseException:  # the ServerApp then logs the model itself; this says why
            traceback.print_exc(file=sys.__stderr__ if sys.stderr is None else sys.stderr)
        finally:
            os._exit(code)
    gc.unfreeze()
    child_end.close()
    return ForkedLogger(parent_end, pid)


def serve(conn: Connection, prepare: Callable[[], Any], log_model: Callable[[Any, int, Any], Any]) -> None:
    unmirror_streams()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        os.setpriority(os.PRIO_PROCESS, 0, 19)
    except OSError:  # e.g. a seccomp profile that refuses it: still off the ServerApp's GIL
        pass
    state = prepare()
    conn.send(("ready", None))
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):  # the ServerApp is gone
            return
        if request is None:
            return
        round_, weights = request
        try:
            info = log_model(state, round_, weights)
            answer = ("ok", {"model_id": info.model_id, "model_uri": info.model_uri})
        except Exception as exc:
            answer = ("error", f"{type(exc).__name__}: {exc}")
        conn.send(answer)


def unmirror_streams() -> None:
    """Flower's ServerApp mirrors sys.stdout/stderr into a queue (flwr.supercore.logger.mirror_output_to_queue:
    an instance `write` on each stream) drained by a thread of its own. In the child that thread is gone and the
    queue's lock may have been held at the fork: the child's prints and log lines go to the streams only."""
    for stream in (sys.stdout, sys.stderr):
        if stream is not None and "write" in getattr(stream, "__dict__", {}):
            del stream.__dict__["write"]
