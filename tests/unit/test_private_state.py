"""A project's local state is private: what the platform creates and what its services create (the whole tree is
checked end to end in tests/e2e/test_local_run.py)."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from flops_operator.platforms.base import ServiceState
from flops_operator.platforms.local.process import Launch, ManagedProcess
from flops_operator.private_state import open_private, private_dir, private_root


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture
def default_umask():
    # The usual 022: what made the state world-readable before.
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_private_dir_makes_every_missing_level_0700_and_leaves_existing_ones(tmp_path, default_umask):
    tmp_path.chmod(0o755)
    made = private_dir(tmp_path / "home" / ".flops" / "default" / "demo")
    assert made == tmp_path / "home" / ".flops" / "default" / "demo"
    for level in (made, *list(made.parents)[:3]):
        assert mode(level) == 0o700, level
    assert mode(tmp_path) == 0o755
    assert private_dir(made) == made  # idempotent


def test_private_root_tightens_a_root_left_by_an_earlier_version(tmp_path, default_umask):
    root = tmp_path / "state"
    root.mkdir(mode=0o755)
    private_root(root)
    assert mode(root) == 0o700


def test_open_private_creates_0600(tmp_path, default_umask):
    os.close(open_private(tmp_path / "f", os.O_WRONLY | os.O_CREAT))
    assert mode(tmp_path / "f") == 0o600


async def test_a_service_and_its_log_create_only_private_files(tmp_path, default_umask):
    # The child creates a file, a directory and a file in it with Python's defaults (0666/0777 & ~umask).
    code = "import os; open('data.db', 'w').write('x'); os.makedirs('artifacts/run'); open('artifacts/run/m', 'w')"
    launch = Launch(argv=[sys.executable, "-c", code], env={"PATH": "/usr/bin:/bin"}, cwd=tmp_path,
                    log_path=tmp_path / "logs" / "svc.log", one_shot=True)
    proc = ManagedProcess(launch)
    proc.start()
    assert await proc.wait_for(ServiceState.completed, ServiceState.failed) is ServiceState.completed, proc.message
    await proc.stop()
    made = {p.relative_to(tmp_path).as_posix(): mode(p) for p in tmp_path.rglob("*")}
    assert made == {"logs": 0o700, "logs/svc.log": 0o600, "data.db": 0o600, "artifacts": 0o700,
                    "artifacts/run": 0o700, "artifacts/run/m": 0o600}
