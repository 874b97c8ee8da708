"""THE table: how each service role of the plan runs as a local process.

The plan (plan/desired.py) describes container services; this table is the one place that says
what each of them becomes on one machine, so the same desired services run in both worlds:

    role            plan asks for            runs locally as                          ready when
    backend-store   the image's entrypoint   private mariadbd: own datadir, port and  app user can log in
                    (MARIADB_* env)          password (init SQL from MARIADB_*)
    artifact-store  the image's entrypoint   pyftpdlib server (ftp_server.py) with    FTP port answers
                    (FTP_*, PASV_* env)      its own root directory
    tracking-server flops-tracking-server    the same entrypoint from this Python env GET /health is 200
                    (mlflow server, basic-auth)
    aggregator      flops-aggregator         the same entrypoint from this env       SuperLink port answers
    learner         flops-learner            the same entrypoint from this env       process started
    model-server    mlflow models serve      the same command from this Python env   GET /ping is 200
    builder         flops-builder (images)   flops_builder.local: the source on the   (one-shot: its last
                                             path, requirements in a cached env       line is its result)

SQLite needs no service: the plan puts the database file into the tracking server's workdir.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable

from flops_tracking import allowed_hosts
from flops_tracking.contract import ENV_ALLOWED_HOSTS_TAG

from ...plan.services import Role, ServiceSpec
from ..base import PermanentPlatformError
from .layout import FTP_ROOT
from .mariadb import PRIVATE_ENV, MariaDB
from .ports import LOOPBACK
from .probes import HttpProbe, MysqlProbe, Probe, TcpProbe

FTP_MODULE = "flops_operator.platforms.local.ftp_server"


@dataclass(frozen=True)
class LocalContext:
    """Where and with what one service runs on this machine."""

    ports: dict[str, int]
    """This service's allocated loopback port per plan port name."""
    workdir: Path
    bin_dir: Path
    """Directory of this Python environment's console scripts (mlflow, flops-aggregator, ...)."""
    python: str
    host: str = LOOPBACK


@dataclass(frozen=True)
class LocalCommand:
    argv: list[str]
    env: dict[str, str] = field(repr=False)
    """Service-specific env (the platform adds the inherited environment)."""
    probe: Probe | None = field(default=None, repr=False)
    prepare: Callable[[], Awaitable[None]] | None = field(default=None, repr=False)
    leftovers: tuple[Path, ...] = ()
    """Files removed once the process is stopped (they hold secrets or live outside the state dir)."""


Builder = Callable[[ServiceSpec, list[str], dict[str, str], LocalContext], LocalCommand]


@dataclass(frozen=True)
class Recipe:
    program: str | None
    """What the plan's command starts with (None: the image's own entrypoint, no command)."""
    build: Builder


def script(ctx: LocalContext, name: str) -> str:
    """A console script of this same Python environment (the venv's bin, then PATH)."""
    candidate = ctx.bin_dir / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise PermanentPlatformError(f"{name} not found in {ctx.bin_dir} nor on PATH: install this project "
                                     "into the Python environment that runs flops (pip install -e .)")
    return found


def _backend_store(service: ServiceSpec, argv: list[str], env: dict[str, str], ctx: LocalContext) -> LocalCommand:
    db = MariaDB(workdir=ctx.workdir, port=ctx.ports["mysql"], database=env["MARIADB_DATABASE"],
                 user=env["MARIADB_USER"], password=env["MARIADB_PASSWORD"], bind=ctx.host)
    probe = MysqlProbe(ctx.host, db.port, db.user, db.password, db.database)
    # The MARIADB_* env is the container image's first-start contract; locally it became init SQL.
    return LocalCommand(argv=db.argv(), env=dict(PRIVATE_ENV), probe=probe, prepare=db.prepare,
                        leftovers=(db.init_file, db.socket))


def _artifact_store(service: ServiceSpec, argv: list[str], env: dict[str, str], ctx: LocalContext) -> LocalCommand:
    port = ctx.ports["ftp"]
    return LocalCommand(
        argv=[ctx.python, "-m", FTP_MODULE, "--host", ctx.host, "--port", str(port),
              "--root", str(ctx.workdir / FTP_ROOT), "--user", env["FTP_USER"]],
        env={"FTP_PASS": env["FTP_PASS"]},
        probe=TcpProbe(ctx.host, port),
    )


def _tracking_server(service: ServiceSpec, argv: list[str], env: dict[str, str], ctx: LocalContext) -> LocalCommand:
    port = ctx.ports["http"]
    # MLflow 3 answers only to Host headers it knows; locally those are exactly the loopback names.
    hosts = f"{ctx.host}:{port},localhost:{port},{ctx.host},localhost"
    argv = allowed_hosts.with_option([script(ctx, "flops-tracking-server"), *argv[1:]], allowed_hosts.OPTION, hosts)
    # Those are all the addresses it is reached at: nothing to learn later (and no tag to watch).
    env = {k: v for k, v in env.items() if k != ENV_ALLOWED_HOSTS_TAG}
    return LocalCommand(argv=argv, env=env, probe=HttpProbe(f"http://{ctx.host}:{port}/health"))


def _aggregator(service: ServiceSpec, argv: list[str], env: dict[str, str], ctx: LocalContext) -> LocalCommand:
    return LocalCommand(argv=[script(ctx, "flops-aggregator"), *argv[1:]], env=env,
                        probe=TcpProbe(ctx.host, ctx.ports["superlink"]))


def _learner(service: ServiceSpec, argv: list[str], env: dict[str, str], ctx: LocalContext) -> LocalCommand:
    return LocalCommand(argv=[script(ctx, "flops-learner"), *argv[1:]], env=env)


def _model_server(service: ServiceSpec, argv: list[str], env: dict[str, str], ctx: LocalContext) -> LocalCommand:
    port = ctx.ports["http"]
    # `mlflow models serve` starts uvicorn by name: this environment's scripts first on PATH.
    path = os.pathsep.join([str(ctx.bin_dir), os.environ.get("PATH", "")])
    return LocalCommand(argv=[script(ctx, "mlflow"), *argv[1:]], env={**env, "PATH": path},
                        probe=HttpProbe(f"http://{ctx.host}:{port}/ping"))


def _builder(service: ServiceSpec, argv: list[str], env: dict[str, str], ctx: LocalContext) -> LocalCommand:
    # No image here: the source goes on the path, its requirements into a cached environment (flops_builder.local).
    return LocalCommand(argv=[ctx.python, "-m", "flops_builder.local"], env=env)


LOCAL_COMMANDS: dict[Role, Recipe] = {
    Role.backend_store: Recipe(None, _backend_store),
    Role.artifact_store: Recipe(None, _artifact_store),
    Role.tracking_server: Recipe("flops-tracking-server", _tracking_server),
    Role.aggregator: Recipe("flops-aggregator", _aggregator),
    Role.learner: Recipe("flops-learner", _learner),
    Role.model_server: Recipe("mlflow", _model_server),
    Role.builder: Recipe("flops-builder", _builder),
}


def local_command(service: ServiceSpec, argv: list[str], env: dict[str, str], ctx: LocalContext) -> LocalCommand:
    """The local process for one rendered service; refuses what the table does not know."""
    recipe = LOCAL_COMMANDS.get(service.role)
    if recipe is None:
        raise PermanentPlatformError(f"the local platform has no command for role {service.role.value}")
    found = argv[0] if argv else None
    if found != recipe.program:
        raise PermanentPlatformError(
            f"{service.name}: the plan runs {found!r} but the local table expects {recipe.program!r} for role "
            f"{service.role.value}")
    return recipe.build(service, argv, env, ctx)
