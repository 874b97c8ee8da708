"""Where one project's local state lives: one directory per project, one subdirectory per service."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ...models import ProjectRef

from .process import MARKER_ENV  # noqa: F401  (re-exported: the marker's value is laid out here)


FTP_ROOT = "ftp-root"
"""The FTP user's root directory inside the artifact store's workdir."""


def default_state_dir(project: ProjectRef, base: Path | None = None) -> Path:
    """~/.flops/<namespace>/<name>/ unless told otherwise."""
    return (base or Path.home() / ".flops") / project.namespace / project.name


@dataclass(frozen=True)
class StateLayout:
    root: Path

    def workdir(self, service: str) -> Path:
        """The service's {{workdir}}: its data (SQLite file, FTP root, MariaDB datadir) stays here."""
        return self.root / "services" / service

    def log(self, service: str) -> Path:
        return self.root / "logs" / f"{service}.log"

    def tmpdir(self, service: str) -> Path:
        """The child's TMPDIR, removed with the service: nothing of a run is left in /tmp."""
        return self.root / "tmp" / service

    @property
    def credentials(self) -> Path:
        return self.root / "credentials.json"

    @property
    def sqlite_database(self) -> Path:
        # plan/desired.py puts the SQLite backend store at {{workdir}}/mlflow.db of the tracking server.
        return self.workdir("tracking-server") / "mlflow.db"

    @property
    def ftp_artifacts(self) -> Path:
        # The FTP user's root is the artifact store's ftp-root; the plan's URI path is /artifacts.
        return self.workdir("artifact-store") / FTP_ROOT / "artifacts"

    @property
    def local_artifacts(self) -> Path:
        return self.workdir("tracking-server") / "artifacts"

    @property
    def mariadb_datadir(self) -> Path:
        return self.workdir("backend-store") / "data"

    def marker(self, service: str) -> str:
        return f"{self.root}::{service}"
