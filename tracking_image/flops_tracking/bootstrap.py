"""Users and permissions of one project's tracking server, set up before the server starts.

Idempotent and run at every start (a restarted container, a replaced local process): users are created or
get the password the environment gives (the project's Secret stays the truth), the project's experiment and
registered model are created if missing, and the grants are upserted. The user store is SQLite in the
workdir; a lost workdir is rebuilt from the environment on the next start.

Who may do what (`default_permission` NO_PERMISSIONS: nothing that is not granted here):

    user              experiment   registered model   what for
    admin             (admin)      (admin)            people who manage the server; MLflow's own admin
    flops-aggregator  EDIT         EDIT               logs runs, models, registers and moves the alias
    flops-reader      READ         READ               people (UI), the operator's progress reads, the model server

MLflow lets any authenticated user create experiments and registered models of its own (without
workspaces there is no create permission); the aggregator uses the ones made here.
"""

from __future__ import annotations

import configparser
import io
import logging
from dataclasses import dataclass
from pathlib import Path

from .contract import ADMIN_USER, AGGREGATOR_USER, READER_USER, TrackingEnv

log = logging.getLogger("flops_tracking")

DEFAULT_PERMISSION = "NO_PERMISSIONS"
AUTH_DB = "basic_auth.db"
AUTH_INI = "basic_auth.ini"
# `mlflow server --serve-artifacts` without --default-artifact-root: experiments keep their artifacts
# behind the server's proxy (mlflow.utils.server_cli_utils.resolve_default_artifact_root).
SERVED_ARTIFACTS_ROOT = "mlflow-artifacts:/"
AUTH_CACHE_SECONDS = 600


@dataclass(frozen=True)
class Grant:
    username: str
    resource_type: str
    """experiment | registered_model"""
    permission: str


GRANTS = (
    Grant(AGGREGATOR_USER, "experiment", "EDIT"),
    Grant(AGGREGATOR_USER, "registered_model", "EDIT"),
    Grant(READER_USER, "experiment", "READ"),
    Grant(READER_USER, "registered_model", "READ"),
)


def auth_ini(database_uri: str) -> str:
    """The basic-auth app's config (MLFLOW_AUTH_CONFIG_PATH). No password: the admin's comes from
    MLFLOW_AUTH_ADMIN_PASSWORD."""
    config = configparser.ConfigParser()
    config["mlflow"] = {
        "default_permission": DEFAULT_PERMISSION,
        "database_uri": database_uri,
        "admin_username": ADMIN_USER,
        "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth",
        "grant_default_workspace_access": "false",
        # A verified login is remembered this long: without it every request pays a scrypt check (0.27 s of CPU
        # here), several per round for the aggregator and two per look for the operator. One worker (the plan
        # runs --workers 1) and passwords that change only with a restart (new process): nothing goes stale.
        "auth_cache_ttl_seconds": str(AUTH_CACHE_SECONDS),
        "auth_cache_max_size": "100",
    }
    out = io.StringIO()
    config.write(out)
    return out.getvalue()


def users(env: TrackingEnv) -> list[tuple[str, str, bool]]:
    """(username, password, is_admin) of every user the server must have."""
    return [(ADMIN_USER, env.admin_password, True), (AGGREGATOR_USER, env.aggregator_password, False),
            (READER_USER, env.reader_password, False)]


def config_path(workdir: Path) -> Path:
    return workdir / AUTH_INI


def write_config(workdir: Path) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    path = config_path(workdir)
    path.write_text(auth_ini(f"sqlite:///{workdir / AUTH_DB}"))
    return path


def prepare(env: TrackingEnv, backend_store_uri: str) -> Path:
    """Set the server up (idempotently) and return the auth ini's path."""
    from mlflow.exceptions import MlflowException
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore
    from mlflow.server.handlers import _get_model_registry_store, _get_tracking_store

    workdir = Path(env.workdir)
    ini = write_config(workdir)
    auth = SqlAlchemyStore()
    auth.init_db(f"sqlite:///{workdir / AUTH_DB}")
    for username, password, is_admin in users(env):
        if auth.has_user(username):
            auth.update_user(username, password=password, is_admin=is_admin)
        else:
            auth.create_user(username, password, is_admin=is_admin)

    tracking = _get_tracking_store(backend_store_uri, SERVED_ARTIFACTS_ROOT)
    experiment = tracking.get_experiment_by_name(env.experiment)
    experiment_id = experiment.experiment_id if experiment else tracking.create_experiment(env.experiment)
    registry = _get_model_registry_store(backend_store_uri)
    try:
        registry.get_registered_model(env.model)
    except MlflowException:
        registry.create_registered_model(env.model)

    ids = {"experiment": str(experiment_id), "registered_model": env.model}
    for grant in GRANTS:
        auth.grant_user_permission(grant.username, grant.resource_type, ids[grant.resource_type], grant.permission)
    log.info("tracking server: users %s; experiment %s and registered model %r granted",
             ", ".join(u for u, _, _ in users(env)), experiment_id, env.model)
    return ini


def main() -> None:
    """`python -m flops_tracking.bootstrap`: prepare() from the environment the supervising entrypoint checked,
    in a process of its own (the entrypoint then does not keep MLflow's stores resident beside the server)."""
    import os

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    prepare(TrackingEnv.from_env(dict(os.environ)), os.environ["MLFLOW_BACKEND_STORE_URI"])


if __name__ == "__main__":
    main()
