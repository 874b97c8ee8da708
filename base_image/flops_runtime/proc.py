"""Child-process and address helpers of the aggregator and learner entrypoints."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil

# Flower's SuperExec polls for new ClientApp/ServerApp tasks every second by default; this documented
# setting (flwr.supercore.superexec.run_superexec) shortens it so a round is not dominated by idle polls.
SUPEREXEC_POLL_ENV = "FLWR_SUPEREXEC_TASK_POLL_INTERVAL"
SUPEREXEC_POLL_SECONDS = "0.1"
# Flower's processes post usage events to telemetry.flower.ai unless this is 0. Learners run on other
# people's edge devices, often offline: nothing leaves them unasked (set it to 1 in the environment to opt in).
TELEMETRY_ENV = "FLWR_TELEMETRY_ENABLED"


def flower_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for Flower children: this interpreter's scripts first on PATH (Flower spawns
    flower-superexec / flwr-clientapp / flwr-serverapp by name), a short SuperExec poll, no telemetry."""
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    env.setdefault(SUPEREXEC_POLL_ENV, SUPEREXEC_POLL_SECONDS)
    env.setdefault(TELEMETRY_ENV, "0")
    env.update(extra or {})
    return env


def script(name: str) -> str:
    """A console script of this interpreter's environment (falls back to PATH)."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else name


def die_with_parent() -> None:
    """In the child, before exec (or after fork): Linux sends it SIGTERM when its parent dies, even by SIGKILL,
    so a killed entrypoint never leaves a SuperNode/SuperLink behind (Flower's helpers follow their parent pid).
    The kernel clears this setting in a fork's child: a forking process calls it again in each child."""
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_PDEATHSIG = 1
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def start(command: list[str], env: dict[str, str]) -> subprocess.Popen:
    # Same process group as the entrypoint: a platform that signals the group reaches the Flower process too.
    return subprocess.Popen(command, env=env, preexec_fn=die_with_parent)


def stop_tree(proc: subprocess.Popen, timeout: float = 15.0) -> int:
    """SIGTERM the child, then whatever it left behind (Flower detaches some of its helpers); SIGKILL past
    the timeout. Returns the child's exit code."""
    try:
        family = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    alive = [p for p in family if p.is_running()]
    for p in alive:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, still = psutil.wait_procs(alive, timeout=timeout)
    for p in still:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(still, timeout=5)
    return proc.returncode


def split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"address {address!r} is not host:port")
    return host.strip("[]") or "0.0.0.0", int(port)


def reachable(address: str, timeout: float = 1.0) -> bool:
    host, port = split_address(address)
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
