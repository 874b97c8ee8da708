"""The MySQL backend store on one machine: a private mariadbd with its own datadir and port.

The container image creates the database and user from MARIADB_* env on first start; locally
the same env becomes an --init-file the server runs at every start (so a regenerated password
is applied to an existing datadir too).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ...private_state import UMASK, private_dir
from ..base import PermanentPlatformError

# Debian keeps server binaries in sbin, which is not on every user's PATH.
_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin", "/sbin"])
MISSING = ("{binary} not found: the MySQL backend store runs a private MariaDB server on this machine; "
           "install the Debian package mariadb-server (apt-get install mariadb-server) or use "
           "tracking.backendStore.type: sqlite")
# mariadbd sets its own umask from these (default: files 0660), whatever it inherits: its datadir, logs and pid
# file are private like the rest of the project's state (private_state). Its unix socket is still made 0777
# (mariadbd binds it under umask 0, so that any local user may connect); it lies in the 0700 state tree.
PRIVATE_ENV = {"UMASK": "0600", "UMASK_DIR": "0700"}
# A unix socket path longer than this is refused by the kernel (sun_path is 108 bytes).
_MAX_SOCKET_PATH = 100


def find_binary(name: str) -> str:
    found = shutil.which(name, path=_SEARCH_PATH)
    if found is None:
        raise PermanentPlatformError(MISSING.format(binary=name))
    return found


def _sql_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _sql_name(value: str) -> str:
    return "`" + value.replace("`", "``") + "`"


def init_sql(database: str, user: str, password: str) -> str:
    """Idempotent first-start SQL: the database and the application user with this password."""
    db, who, pw = _sql_name(database), f"{_sql_string(user)}@'%'", _sql_string(password)
    return "\n".join([
        f"CREATE DATABASE IF NOT EXISTS {db};",
        f"CREATE USER IF NOT EXISTS {who} IDENTIFIED BY {pw};",
        f"ALTER USER {who} IDENTIFIED BY {pw};",
        f"GRANT ALL PRIVILEGES ON {db}.* TO {who};",
        "",
    ])


@dataclass(frozen=True)
class MariaDB:
    """Files and command line of one project's private server."""

    workdir: Path
    port: int
    database: str
    user: str
    password: str = field(repr=False)
    bind: str = "127.0.0.1"

    @property
    def datadir(self) -> Path:
        return self.workdir / "data"

    @property
    def init_file(self) -> Path:
        return self.workdir / "init.sql"

    @property
    def socket(self) -> Path:
        path = self.workdir / "mysqld.sock"
        if len(str(path)) <= _MAX_SOCKET_PATH:
            return path
        digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"flops-mysqld-{digest}.sock"

    def argv(self) -> list[str]:
        argv = [
            find_binary("mariadbd"), "--no-defaults",
            f"--datadir={self.datadir}", f"--socket={self.socket}", f"--pid-file={self.workdir / 'mysqld.pid'}",
            f"--port={self.port}", f"--bind-address={self.bind}", f"--init-file={self.init_file}",
            "--skip-name-resolve", "--innodb-buffer-pool-size=64M", "--max-connections=200",
            "--character-set-server=utf8mb4", "--collation-server=utf8mb4_bin",
        ]
        if os.geteuid() == 0:
            # mariadbd refuses to run as root unless told which user to stay.
            argv.append("--user=root")
        return argv

    async def prepare(self) -> None:
        """Create the datadir once (mariadb-install-db) and write this start's init SQL (0600)."""
        private_dir(self.workdir)
        if not (self.datadir / "mysql").is_dir():
            install = find_binary("mariadb-install-db")
            command = [install, "--no-defaults", f"--datadir={self.datadir}", "--skip-test-db",
                       "--auth-root-authentication-method=socket"]
            if os.geteuid() == 0:
                command.append("--user=root")
            proc = await asyncio.create_subprocess_exec(
                *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=self.workdir,
                env={**os.environ, **PRIVATE_ENV}, umask=UMASK)
            output, _ = await proc.communicate()
            if proc.returncode != 0:
                shutil.rmtree(self.datadir, ignore_errors=True)
                last = output.decode(errors="replace").strip().splitlines()[-3:]
                raise RuntimeError(f"mariadb-install-db failed ({proc.returncode}): {' | '.join(last)}")
        fd = os.open(self.init_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(init_sql(self.database, self.user, self.password))
