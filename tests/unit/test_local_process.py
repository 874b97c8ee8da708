"""Process supervision of the local platform, with tiny Python children."""

from __future__ import annotations

import asyncio
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import psutil
import pytest

from flops_operator.platforms.base import ServiceState
from flops_operator.platforms.local.ports import PortAllocator
from flops_operator.platforms.local.probes import TcpProbe
from flops_operator.platforms.local.process import (
    MARKER_ENV, Launch, ManagedProcess, RestartPolicy, describe_exit, log_tail)

FAST = RestartPolicy(max_restarts=2, backoff_seconds=0.01, max_backoff_seconds=0.05)


def launch(tmp_path: Path, code: str, *, one_shot: bool, probe=None, secrets: tuple[str, ...] = ()) -> Launch:
    return Launch(argv=[sys.executable, "-c", textwrap.dedent(code)], env={"PATH": "/usr/bin:/bin"}, cwd=tmp_path,
                  log_path=tmp_path / "logs" / "svc.log", one_shot=one_shot, probe=probe, secrets=secrets)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def test_one_shot_exit_zero_is_completed(tmp_path):
    proc = ManagedProcess(launch(tmp_path, "print('done')", one_shot=True))
    proc.start()
    assert await proc.wait_for(ServiceState.completed, ServiceState.failed) is ServiceState.completed
    assert proc.exit_code == 0 and proc.message is None and proc.restarts == 0
    assert "done" in (tmp_path / "logs" / "svc.log").read_text()
    await proc.stop()


async def test_one_shot_failure_reports_exit_code_and_last_log_lines_without_secrets(tmp_path):
    code = """
        import sys
        print('loading data')
        print('password hunter2 rejected', file=sys.stderr)
        sys.exit(3)
    """
    proc = ManagedProcess(launch(tmp_path, code, one_shot=True, secrets=("hunter2",)))
    proc.start()
    assert await proc.wait_for(ServiceState.completed, ServiceState.failed) is ServiceState.failed
    assert proc.exit_code == 3
    assert proc.message.startswith("exit code 3: ")
    assert "loading data" in proc.message and "password *** rejected" in proc.message
    assert "hunter2" not in proc.message
    await proc.stop()


async def test_one_shot_killed_by_signal_is_failed(tmp_path):
    proc = ManagedProcess(launch(tmp_path, "import time; time.sleep(60)", one_shot=True))
    proc.start()
    await proc.wait_for(ServiceState.running)
    psutil.Process(proc.pid).kill()
    assert await proc.wait_for(ServiceState.completed, ServiceState.failed) is ServiceState.failed
    assert proc.message.startswith("killed by SIGKILL")
    await proc.stop()


async def test_long_running_service_is_restarted_with_backoff_then_given_up(tmp_path):
    proc = ManagedProcess(launch(tmp_path, "import sys; print('boom'); sys.exit(7)", one_shot=False), policy=FAST)
    proc.start()
    assert await proc.wait_for(ServiceState.failed) is ServiceState.failed
    assert proc.restarts == FAST.max_restarts
    assert "gave up after 2 restarts" in proc.message and "exit code 7" in proc.message
    assert (tmp_path / "logs" / "svc.log").read_text().count("--- flops: starting") == FAST.max_restarts + 1
    await proc.stop()


async def test_long_running_service_comes_back_after_a_crash(tmp_path):
    # First start crashes, the second one keeps running: one restart, then running.
    code = f"""
        import pathlib, sys, time
        flag = pathlib.Path({str(tmp_path / 'crashed')!r})
        if not flag.exists():
            flag.touch()
            sys.exit(1)
        time.sleep(60)
    """
    proc = ManagedProcess(launch(tmp_path, code, one_shot=False), policy=FAST)
    proc.start()
    while proc.restarts < 1 or proc.state is not ServiceState.running:
        await proc.wait_changed()
    assert proc.restarts == 1 and proc.state is ServiceState.running
    pid = proc.pid
    await proc.stop()
    assert gone(pid)


async def test_running_only_once_the_probe_answers(tmp_path):
    port = PortAllocator().allocate()
    code = f"""
        import socket, time
        time.sleep(0.5)
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(('127.0.0.1', {port})); s.listen()
        print('listening', flush=True)
        time.sleep(60)
    """
    proc = ManagedProcess(launch(tmp_path, code, one_shot=False, probe=TcpProbe("127.0.0.1", port)), policy=FAST)
    proc.start()
    await proc.wait_for(ServiceState.running)
    # The probe passed, so the child had printed before it listened.
    assert "listening" in (tmp_path / "logs" / "svc.log").read_text()
    await proc.stop()


async def test_stop_takes_the_whole_process_tree_down(tmp_path):
    code = f"""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
        open({str(tmp_path / 'child.pid')!r}, 'w').write(str(child.pid))
        time.sleep(60)
    """
    proc = ManagedProcess(launch(tmp_path, code, one_shot=False), policy=FAST)
    proc.start()
    pid_file = tmp_path / "child.pid"
    while not pid_file.exists() or not pid_file.read_text():
        await asyncio.sleep(0.05)
    child, leader = int(pid_file.read_text()), proc.pid
    await proc.stop()
    assert gone(leader) and gone(child)


async def test_a_child_ignoring_sigterm_is_killed_after_the_timeout(tmp_path):
    code = """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print('ignoring', flush=True)
        time.sleep(60)
    """
    proc = ManagedProcess(launch(tmp_path, code, one_shot=True), stop_timeout=0.5)
    proc.start()
    log_file = tmp_path / "logs" / "svc.log"
    while not log_file.exists() or "ignoring" not in log_file.read_text():
        await asyncio.sleep(0.05)
    pid = proc.pid
    await proc.stop()
    assert gone(pid)


async def test_a_failed_prepare_step_fails_the_service(tmp_path):
    async def prepare() -> None:
        raise RuntimeError("datadir is not writable")

    spec = launch(tmp_path, "print('never')", one_shot=False)
    proc = ManagedProcess(replace(spec, prepare=prepare), policy=FAST)
    proc.start()
    assert await proc.wait_for(ServiceState.failed) is ServiceState.failed
    assert proc.message == "could not start: datadir is not writable" and proc.pid is None
    await proc.stop()


def test_exit_descriptions():
    assert describe_exit(0) == "exit code 0"
    assert describe_exit(-15) == "killed by SIGTERM"


def test_log_tail_keeps_the_last_lines(tmp_path):
    path = tmp_path / "x.log"
    path.write_text("\n".join(f"line {i}" for i in range(20)) + "\n\n")
    assert log_tail(path, lines=2) == "line 18 | line 19"
    assert log_tail(tmp_path / "missing.log") == ""


@pytest.fixture(autouse=True)
def no_children_left():
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    yield
    left = [p for p in psutil.Process().children(recursive=True) if p.pid not in before and not gone(p.pid)]
    assert not left, f"processes leaked: {left}"


async def test_descendants_that_left_the_group_are_stopped_when_the_leader_dies(tmp_path):
    # Like Flower's SuperNode: a grandchild in its own session, orphaned when its parent is killed.
    code = f"""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], start_new_session=True)
        open({str(tmp_path / 'child.pid')!r}, 'w').write(str(child.pid))
        time.sleep(60)
    """
    spec = launch(tmp_path, code, one_shot=True)
    proc = ManagedProcess(replace(spec, env={**spec.env, MARKER_ENV: f"{tmp_path}::svc"}))
    proc.start()
    pid_file = tmp_path / "child.pid"
    while not pid_file.exists() or not pid_file.read_text():
        await asyncio.sleep(0.05)
    child = int(pid_file.read_text())
    psutil.Process(proc.pid).kill()
    assert await proc.wait_for(ServiceState.completed, ServiceState.failed) is ServiceState.failed
    assert gone(child)
    await proc.stop()
