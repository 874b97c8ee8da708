"""A project's state on this machine is its user's alone: directories 0700, files 0600.

The state (`flops run`'s ~/.flops/<namespace>/<name>) holds MLflow's databases (its auth database has the users'
password hashes), the artifacts, the logs (they quote requests) and the generated credentials, so no other local
user may read any of it. What this process creates is created with these modes explicitly (it may run under any
umask and must not change its own: it is global to the process); every service the local platform starts runs
under UMASK, so what the service and its descendants create is private too.

Outside the operator's slim dependencies on purpose (no psutil): FileCredentials uses it as well.
"""

from __future__ import annotations

import os
from pathlib import Path

UMASK = 0o077
DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """`mkdir -p` where every directory it creates is 0700 (pathlib's parents=True makes the parents 0777 &
    ~umask). Directories that exist already are left as they are (see private_root)."""
    missing, level = [], path
    while not level.exists() and level.parent != level:
        missing.append(level)
        level = level.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=DIR_MODE)
        except FileExistsError:  # made by a concurrent caller meanwhile
            pass
    return path


def private_root(path: Path) -> Path:
    """The state root: created as private_dir does, and made 0700 if it exists already, so that a tree left by an
    earlier version (created under the default umask) is out of other users' reach too: nothing below a 0700
    directory can be opened by them, whatever its own mode."""
    private_dir(path)
    os.chmod(path, DIR_MODE)
    return path


def open_private(path: Path, flags: int) -> int:
    """os.open creating the file 0600 (the mode applies only when the file is created)."""
    return os.open(path, flags, FILE_MODE)
